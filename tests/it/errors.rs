//! The error model and the HTTP layers: every failure is a Matrix error with the right
//! status, and every response carries CORS headers.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{Backend, TestServer, assert_error, both_backends};

both_backends!(error_table, body_size_limit, cors_everywhere, rate_limiting, corrupt_stored_json_is_an_error);

async fn error_table(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    assert_error(&s.get("/_matrix/client/v3/no/such/endpoint", None).await, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
    assert_error(&s.get("/nothing", None).await, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
    assert_error(
        &s.call(Method::DELETE, "/_matrix/client/v3/account/whoami", Some(&alice.token), None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "M_UNRECOGNIZED",
    );

    // Malformed JSON, and JSON of the wrong shape.
    let raw = |body: &'static str| {
        s.http.post(s.url("/_matrix/client/v3/login")).header("content-type", "application/json").body(body).send()
    };
    for body in ["{not json", "{\"type\": ", "\u{1}"] {
        let response = raw(body).await.expect("sent");
        let status = response.status();
        let json: serde_json::Value = response.json().await.expect("json error body");
        assert_error(&(status, json), StatusCode::BAD_REQUEST, "M_NOT_JSON");
    }
    for body in ["[]", "{\"type\": 5}", "{\"type\": \"m.login.password\", \"password\": 1}"] {
        let response = raw(body).await.expect("sent");
        let status = response.status();
        let json: serde_json::Value = response.json().await.expect("json error body");
        assert_error(&(status, json), StatusCode::BAD_REQUEST, "M_BAD_JSON");
    }
    // A bad path parameter.
    let bad_device = s.put("/_matrix/client/v3/user/not-a-user-id/account_data/x", Some(&alice.token), json!({})).await;
    assert_error(&bad_device, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // Tokens: missing and unknown.
    assert_error(&s.get("/_matrix/client/v3/devices", None).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let unknown = s.get("/_matrix/client/v3/devices", Some("nope")).await;
    assert_error(&unknown, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert_eq!(unknown.1["soft_logout"], false);
    // None of that broke the server.
    assert_eq!(s.get("/_matrix/client/v3/account/whoami", Some(&alice.token)).await.0, StatusCode::OK);
    s.finish().await;
}

async fn body_size_limit(backend: Backend) {
    let Some(s) = TestServer::spawn_with(backend, |c| c.http.max_request_body_bytes = 4096).await else { return };
    let alice = s.register("alice").await;
    let path = format!("/_matrix/client/v3/user/{}/account_data/big", crate::harness::enc(&alice.user_id));
    let big = json!({"data": "x".repeat(5000)});
    assert_error(&s.put(&path, Some(&alice.token), big).await, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    // A chunked body that declares no length is cut off too.
    let stream = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1000])));
    let sent = s.http.put(s.url(&path)).bearer_auth(&alice.token).body(reqwest::Body::wrap_stream(stream)).send().await;
    // The server answers 413 as soon as the limit is passed and closes the connection; a client
    // still sending may see the close before the answer. Either way nothing is stored.
    if let Ok(response) = sent {
        let status = response.status();
        let body: serde_json::Value = response.json().await.expect("json");
        assert_error(&(status, body), StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    }
    assert_error(&s.get(&path, Some(&alice.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_eq!(s.put(&path, Some(&alice.token), json!({"small": true})).await.0, StatusCode::OK);
    s.finish().await;
}

async fn cors_everywhere(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    for method in ["GET", "POST", "PUT", "DELETE"] {
        let response = s
            .http
            .request(Method::OPTIONS, s.url("/_matrix/client/v3/devices/ABC"))
            .header("origin", "https://app.example.org")
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "authorization, content-type, x-requested-with")
            .send()
            .await
            .expect("preflight");
        assert!(response.status().is_success(), "preflight for {method}: {}", response.status());
        let headers = response.headers();
        assert_eq!(headers["access-control-allow-origin"], "*");
        let methods = headers["access-control-allow-methods"].to_str().expect("ascii").to_ascii_uppercase();
        for m in ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"] {
            assert!(methods.contains(m), "{m} in {methods}");
        }
        let allowed = headers["access-control-allow-headers"].to_str().expect("ascii").to_ascii_lowercase();
        for h in ["x-requested-with", "content-type", "authorization"] {
            assert!(allowed.contains(h), "{h} named in {allowed}");
        }
    }
    // Successes, errors and /.well-known all carry the header.
    for (path, expected) in [
        ("/_matrix/client/versions", StatusCode::OK),
        ("/.well-known/matrix/client", StatusCode::OK),
        ("/_matrix/client/v3/account/whoami", StatusCode::UNAUTHORIZED),
        ("/_matrix/client/v3/nonexistent", StatusCode::NOT_FOUND),
    ] {
        let response = s.http.get(s.url(path)).header("origin", "https://app.example.org").send().await.expect("sent");
        assert_eq!(response.status(), expected, "{path}");
        assert_eq!(response.headers()["access-control-allow-origin"], "*", "{path}");
    }
    s.finish().await;
}

async fn rate_limiting(backend: Backend) {
    let Some(s) = TestServer::spawn_with(backend, |c| {
        c.rate_limits.per_second = 0.5;
        c.rate_limits.burst = 3;
    })
    .await
    else {
        return;
    };
    // Login is rate-limited by the spec's metadata; anonymous clients are keyed by IP.
    let login = json!({"type": "m.login.password", "user": "nobody", "password": "x"});
    for _ in 0..3 {
        assert_eq!(s.post("/_matrix/client/v3/login", None, login.clone()).await.0, StatusCode::FORBIDDEN);
    }
    let response = s.http.post(s.url("/_matrix/client/v3/login")).json(&login).send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0 && ms <= 2000), "{body}");
    // Endpoints not marked rate-limited are not affected.
    assert_eq!(s.get("/_matrix/client/versions", None).await.0, StatusCode::OK);
    s.finish().await;
}

/// Stored JSON that no longer parses is an internal error (logged, `500 M_UNKNOWN`), never
/// quietly replaced by a default: push rules are not reset, a profile is not emptied.
async fn corrupt_stored_json_is_an_error(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let rule = "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled";
    assert_eq!(s.put(rule, Some(&alice.token), json!({"enabled": true})).await.0, StatusCode::OK);
    let room = crate::sync::create_room(&s, &alice, json!({"preset": "public_chat"})).await;

    let db = s.stop().await;
    db.execute("UPDATE account_data SET content = '{\"global\": 5}' WHERE data_type = 'm.push_rules'").await;
    db.execute("UPDATE profiles SET value = 'not json' WHERE user_id = '@bob:localhost'").await;
    let s = TestServer::start_on(db, |_| {}).await;
    assert_error(
        &s.get("/_matrix/client/v3/pushrules/", Some(&alice.token)).await,
        StatusCode::INTERNAL_SERVER_ERROR,
        "M_UNKNOWN",
    );
    let join =
        s.post(&format!("/_matrix/client/v3/join/{}", crate::harness::enc(&room)), Some(&bob.token), json!({})).await;
    assert_error(&join, StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN");
    // Alice's broken rules do not stop her room: she is evaluated with the defaults.
    let send = s
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t1", crate::harness::enc(&room)),
            Some(&bob.token),
            json!({"msgtype": "m.text", "body": "hi"}),
        )
        .await;
    assert_eq!(send.0, StatusCode::FORBIDDEN, "bob never joined: {}", send.1);
    let mine = s
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t2", crate::harness::enc(&room)),
            Some(&alice.token),
            json!({"msgtype": "m.text", "body": "hi"}),
        )
        .await;
    assert_eq!(mine.0, StatusCode::OK, "{}", mine.1);
    s.finish().await;
}
