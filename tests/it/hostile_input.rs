//! Input an attacker would send: JSON nested deep enough to break other users' clients,
//! bodies that trip ruma's parsers, bad query parameters. Each is refused with the spec's
//! error, and none leaves a mark on anyone else.

use std::sync::{
    OnceLock,
    atomic::{AtomicUsize, Ordering},
};

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::{
    e2ee_util::token,
    harness::{Backend, TestServer, assert_error, both_backends, enc},
    sync::sync,
};

both_backends!(
    deeply_nested_json_is_refused_everywhere,
    login_without_type_is_refused_without_a_panic,
    bad_inline_filters_and_presence_are_refused,
    slow_headers_are_cut_off,
    silent_clients_are_cut_off,
    connections_beyond_the_limit_wait,
);

/// `levels` nested objects around a number: `{"a":{"a":...1...}}`.
fn nested(levels: usize) -> Value {
    serde_json::from_str(&nested_text(levels)).expect("nested JSON")
}

/// The same as raw text, for depths serde_json will not build a `Value` of.
fn nested_text(levels: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels))
}

async fn put_raw(s: &TestServer, path: &str, token: &str, body: String) -> (StatusCode, Value) {
    let response = s
        .http
        .put(s.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("sent");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn deeply_nested_json_is_refused_everywhere(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let since = token(&s, &bob).await;

    // To-device: the attack on another user's sync.
    let to_device = |txn: &str| format!("/_matrix/client/v3/sendToDevice/m.test/{txn}");
    let deep = format!(r#"{{"messages":{{"{}":{{"{}":{}}}}}}}"#, bob.user_id, bob.device_id, nested_text(10_000));
    assert_error(&put_raw(&s, &to_device("deep"), &alice.token, deep).await, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    // Just past the limit of 64 levels for the whole body (the content sits 3 levels down).
    let over = json!({"messages": {&bob.user_id: {&bob.device_id: nested(62)}}});
    assert_error(&s.put(&to_device("over"), Some(&alice.token), over).await, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let at_limit = json!({"messages": {&bob.user_id: {&bob.device_id: nested(61)}}});
    assert_eq!(s.put(&to_device("ok"), Some(&alice.token), at_limit).await.0, StatusCode::OK);
    // Bob's sync carries the message at the limit and parses with serde_json's defaults.
    let resp = sync(&s, &bob, &format!("since={since}&timeout=0")).await;
    let events = resp["to_device"]["events"].as_array().expect("to-device events");
    assert_eq!(events.len(), 1, "only the message within the limit: {resp}");

    // Account data, global and per room, and filters and pushers: stored and served back.
    let user = enc(&alice.user_id);
    for path in [
        format!("/_matrix/client/v3/user/{user}/account_data/m.deep"),
        format!("/_matrix/client/v3/user/{user}/rooms/{}/account_data/m.deep", enc("!r:localhost")),
    ] {
        let result = put_raw(&s, &path, &alice.token, nested_text(65)).await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    }
    let filter = json!({"room": {"timeline": {"not_types": ["x"]}}, "deep": nested(70)});
    let result = s.post(&format!("/_matrix/client/v3/user/{user}/filter"), Some(&alice.token), filter).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let pusher = json!({
        "kind": "http", "app_id": "a", "pushkey": "k", "app_display_name": "a", "device_display_name": "d",
        "lang": "en", "data": {"url": "https://push.example.org/_matrix/push/v1/notify", "deep": nested(70)},
    });
    let result = s.post("/_matrix/client/v3/pushers/set", Some(&alice.token), pusher).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    s.finish().await;
}

/// Counts panics raised inside ruma's client-API crate, in this whole test process.
fn ruma_panics() -> usize {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.location().is_some_and(|l| l.file().contains("ruma-client-api")) {
                COUNT.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
    COUNT.load(Ordering::SeqCst)
}

async fn login_without_type_is_refused_without_a_panic(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    s.register("alice").await;
    let before = ruma_panics();
    for body in [json!({}), json!({"identifier": {"type": "m.id.user", "user": "alice"}, "password": "x"})] {
        let result = s.post("/_matrix/client/v3/login", None, body).await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    }
    assert_eq!(ruma_panics(), before, "ruma's login parser panicked");
    s.finish().await;
}

async fn bad_inline_filters_and_presence_are_refused(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let get = |query: String| {
        let path = format!("/_matrix/client/v3/sync?timeout=0&{query}");
        let token = alice.token.clone();
        let s = &s;
        async move { s.get(&path, Some(&token)).await }
    };
    // A filter starting with `{` is JSON (spec: "detected by whether the first character is
    // a `{`"): one that does not parse is a bad request, not an unknown filter ID.
    let wrong_shape = enc(r#"{"room": {"timeline": {"limit": "ten"}}}"#);
    assert_error(&get(format!("filter={wrong_shape}")).await, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let not_json = enc(r#"{"room": "#);
    assert_error(&get(format!("filter={not_json}")).await, StatusCode::BAD_REQUEST, "M_NOT_JSON");
    assert_error(&get("filter=nosuchid".to_owned()).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let good = enc(r#"{"room": {"timeline": {"limit": 10}}}"#);
    assert_eq!(get(format!("filter={good}")).await.0, StatusCode::OK);

    assert_error(&get("set_presence=bogus".to_owned()).await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    for presence in ["online", "offline", "unavailable"] {
        assert_eq!(get(format!("set_presence={presence}")).await.0, StatusCode::OK, "{presence}");
    }
    s.finish().await;
}

/// A client that starts a request and never finishes its headers is disconnected after
/// `http.header_read_timeout_secs`.
async fn slow_headers_are_cut_off(backend: Backend) {
    let Some(s) = TestServer::spawn_with(backend, |c| c.http.header_read_timeout_secs = 1).await else { return };
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut slow = TcpStream::connect(&addr).await.expect("connect");
    slow.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n").await.expect("partial headers");
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection was still open after {:?}", started.elapsed());
    // Whatever hyper answered (a 408, or nothing), the connection is closed, and others work.
    assert_eq!(s.get("/_matrix/client/versions", None).await.0, StatusCode::OK);
    s.finish().await;
}

/// A client that connects and sends nothing at all is disconnected too (hyper's own
/// timeout starts only after the first bytes).
async fn silent_clients_are_cut_off(backend: Backend) {
    let Some(s) = TestServer::spawn_with(backend, |c| c.http.header_read_timeout_secs = 1).await else { return };
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), silent.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a silent connection was still open");
    assert_eq!(s.get("/_matrix/client/versions", None).await.0, StatusCode::OK);
    s.finish().await;
}

/// At `http.max_connections`, a further client is not served until a connection closes.
async fn connections_beyond_the_limit_wait(backend: Backend) {
    let Some(s) = TestServer::spawn_with(backend, |c| c.http.max_connections = 2).await else { return };
    let addr = s.base.trim_start_matches("http://").to_owned();
    let first = TcpStream::connect(&addr).await.expect("connect");
    let _second = TcpStream::connect(&addr).await.expect("connect");
    let fresh = || reqwest::Client::builder().timeout(Duration::from_millis(1500)).build().expect("client");
    let url = s.url("/_matrix/client/versions");
    // The third connection is never picked up while both slots are held ...
    let refused = fresh().get(&url).send().await;
    assert!(refused.is_err_and(|e| e.is_timeout()), "served beyond the limit");
    // ... and is as soon as one of them closes.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match fresh().get(&url).send().await {
            Ok(response) => {
                assert_eq!(response.status(), StatusCode::OK);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "never served after a slot freed: {e}"),
        }
    }
    s.finish().await;
}
