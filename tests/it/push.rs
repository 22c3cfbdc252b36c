//! Push: rules, counts and pushers, against a real local HTTP push gateway.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, http::StatusCode as AxumStatus, routing::post};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    harness::{Backend, TestServer, TestUser, assert_error, both_backends, enc},
    sync::{create_room, join, send, sync},
};

both_backends!(
    pushers_api_and_url_checks,
    push_rules_api,
    message_reaches_gateway_with_the_spec_body,
    muted_rooms_and_master_rule_send_nothing,
    mentions_highlight_and_counts_reset_on_receipt,
    gateway_outage_survives_restart_exactly_once,
    rejected_pushkeys_remove_their_pusher,
    notifications_list,
    push_caches_are_bounded,
);

/// A push gateway on loopback that records what it receives.
#[derive(Clone, Default)]
struct Gateway {
    received: Arc<Mutex<Vec<Value>>>,
    /// Answer 500 while set.
    failing: Arc<Mutex<bool>>,
    /// Pushkeys to report as rejected.
    reject: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    async fn start() -> (Self, String) {
        let gateway = Self::default();
        let app = Router::new().route("/_matrix/push/v1/notify", post(notify)).with_state(gateway.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/_matrix/push/v1/notify", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (gateway, url)
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().expect("lock").clone()
    }

    /// Waits (polling, with a deadline) until a notification matching `pred` arrives.
    async fn wait_for(&self, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = self.received().into_iter().find(|n| pred(n)) {
                return found;
            }
            assert!(Instant::now() < deadline, "no matching notification within {within:?}: {:?}", self.received());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn notify(State(gateway): State<Gateway>, Json(body): Json<Value>) -> (AxumStatus, Json<Value>) {
    if *gateway.failing.lock().expect("lock") {
        return (AxumStatus::INTERNAL_SERVER_ERROR, Json(json!({})));
    }
    gateway.received.lock().expect("lock").push(body["notification"].clone());
    let reject = gateway.reject.lock().expect("lock").clone();
    (AxumStatus::OK, Json(json!({ "rejected": reject })))
}

async fn spawn(backend: Backend) -> Option<TestServer> {
    TestServer::spawn_with(backend, |c| c.push.ip_range_allowlist = vec!["127.0.0.1/32".parse().expect("net")]).await
}

async fn add_pusher(s: &TestServer, user: &TestUser, url: &str, pushkey: &str, extra: Value) -> (StatusCode, Value) {
    let mut data = json!({"url": url});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            data[k] = v;
        }
    }
    s.post(
        "/_matrix/client/v3/pushers/set",
        Some(&user.token),
        json!({"kind": "http", "app_id": "org.example.app", "pushkey": pushkey, "app_display_name": "App",
               "device_display_name": "Phone", "lang": "en", "data": data}),
    )
    .await
}

fn event_ids(notifications: &[Value]) -> Vec<String> {
    notifications.iter().filter_map(|n| n["event_id"].as_str().map(str::to_owned)).collect()
}

async fn pushers_api_and_url_checks(backend: Backend) {
    let Some(s) = spawn(backend).await else { return };
    let (_gateway, url) = Gateway::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    for bad in ["http://127.0.0.1:1/wrong/path", "not a url", "ftp://127.0.0.1/_matrix/push/v1/notify"] {
        assert_error(&add_pusher(&s, &alice, bad, "k1", json!({})).await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    // Not on the allowlist: private ranges are refused.
    assert_error(
        &add_pusher(&s, &alice, "http://10.0.0.5/_matrix/push/v1/notify", "k1", json!({})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_eq!(add_pusher(&s, &alice, &url, "k1", json!({"format": "event_id_only"})).await.0, StatusCode::OK);
    let (_, list) = s.get("/_matrix/client/v3/pushers", Some(&alice.token)).await;
    let pushers = list["pushers"].as_array().expect("pushers");
    assert_eq!(pushers.len(), 1);
    assert_eq!(
        (pushers[0]["pushkey"].as_str(), pushers[0]["data"]["format"].as_str()),
        (Some("k1"), Some("event_id_only"))
    );
    // The same pushkey registered by another user without append takes it over.
    assert_eq!(add_pusher(&s, &bob, &url, "k1", json!({})).await.0, StatusCode::OK);
    let (_, list) = s.get("/_matrix/client/v3/pushers", Some(&alice.token)).await;
    assert_eq!(list["pushers"].as_array().map(Vec::len), Some(0), "{list}");
    // Removal with kind null.
    let (status, _) = s
        .post(
            "/_matrix/client/v3/pushers/set",
            Some(&bob.token),
            json!({"kind": null, "app_id": "org.example.app", "pushkey": "k1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = s.get("/_matrix/client/v3/pushers", Some(&bob.token)).await;
    assert_eq!(list["pushers"].as_array().map(Vec::len), Some(0));
    s.finish().await;
}

async fn push_rules_api(backend: Backend) {
    let Some(s) = spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let (status, all) = s.get("/_matrix/client/v3/pushrules/", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    let ids = |kind: &str| -> Vec<String> {
        all["global"][kind]
            .as_array()
            .expect("kind")
            .iter()
            .filter_map(|r| r["rule_id"].as_str().map(str::to_owned))
            .collect()
    };
    for (kind, rule) in [
        ("override", ".m.rule.master"),
        ("override", ".m.rule.suppress_notices"),
        ("override", ".m.rule.invite_for_me"),
        ("override", ".m.rule.member_event"),
        ("override", ".m.rule.is_user_mention"),
        ("override", ".m.rule.is_room_mention"),
        ("override", ".m.rule.tombstone"),
        ("underride", ".m.rule.room_one_to_one"),
        ("underride", ".m.rule.encrypted_room_one_to_one"),
        ("underride", ".m.rule.message"),
        ("underride", ".m.rule.encrypted"),
    ] {
        assert!(ids(kind).contains(&rule.to_owned()), "{rule} in {kind}");
    }
    let base = "/_matrix/client/v3/pushrules/global";
    let (_, master) = s.get(&format!("{base}/override/.m.rule.master"), Some(&alice.token)).await;
    assert_eq!(master["enabled"], false);
    // A user rule, placed before another.
    let rule = json!({"actions": ["notify"], "pattern": "cake"});
    assert_eq!(s.put(&format!("{base}/content/cake"), Some(&alice.token), rule).await.0, StatusCode::OK);
    let rule = json!({"actions": [], "pattern": "pie"});
    assert_eq!(s.put(&format!("{base}/content/pie?before=cake"), Some(&alice.token), rule).await.0, StatusCode::OK);
    let (_, content) = s.get("/_matrix/client/v3/pushrules/", Some(&alice.token)).await;
    let order: Vec<&str> = content["global"]["content"]
        .as_array()
        .expect("content")
        .iter()
        .filter_map(|r| r["rule_id"].as_str())
        .collect();
    let (pie, cake) = (order.iter().position(|r| *r == "pie"), order.iter().position(|r| *r == "cake"));
    assert!(pie < cake, "{order:?}");
    // enabled and actions.
    assert_eq!(
        s.put(&format!("{base}/content/cake/enabled"), Some(&alice.token), json!({"enabled": false})).await.0,
        StatusCode::OK
    );
    assert_eq!(s.get(&format!("{base}/content/cake/enabled"), Some(&alice.token)).await.1["enabled"], false);
    let actions = json!({"actions": ["notify", {"set_tweak": "highlight"}]});
    assert_eq!(s.put(&format!("{base}/content/cake/actions"), Some(&alice.token), actions).await.0, StatusCode::OK);
    assert_eq!(
        s.get(&format!("{base}/content/cake/actions"), Some(&alice.token)).await.1["actions"],
        json!(["notify", {"set_tweak": "highlight"}])
    );
    // Delete; unknown rules and anchors are 404; server defaults cannot be deleted.
    assert_eq!(
        s.call(reqwest::Method::DELETE, &format!("{base}/content/cake"), Some(&alice.token), None).await.0,
        StatusCode::OK
    );
    assert_error(
        &s.get(&format!("{base}/content/cake"), Some(&alice.token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let orphan = s
        .put(&format!("{base}/content/x?after=nothere"), Some(&alice.token), json!({"actions": [], "pattern": "x"}))
        .await;
    assert_error(&orphan, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let default =
        s.call(reqwest::Method::DELETE, &format!("{base}/override/.m.rule.master"), Some(&alice.token), None).await;
    assert_eq!(default.0, StatusCode::BAD_REQUEST, "{}", default.1);
    // The rules reach the client through sync's account data.
    let initial = sync(&s, &alice, "").await;
    let rules = initial["account_data"]["events"]
        .as_array()
        .expect("account data")
        .iter()
        .find(|e| e["type"] == "m.push_rules");
    assert!(rules.is_some_and(|r| {
        r["content"]["global"]["content"].as_array().is_some_and(|c| c.iter().any(|r| r["rule_id"] == "pie"))
    }));
    s.finish().await;
}

async fn message_reaches_gateway_with_the_spec_body(backend: Backend) {
    let Some(s) = spawn(backend).await else { return };
    let (gateway, url) = Gateway::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room =
        create_room(&s, &alice, json!({"preset": "private_chat", "name": "Plans", "invite": [bob.user_id]})).await;
    join(&s, &bob, &room).await;
    assert_eq!(add_pusher(&s, &bob, &url, "bobkey", json!({"custom": "x"})).await.0, StatusCode::OK);
    // Bob is offline: nothing syncing. The message still reaches his gateway within a second.
    let started = Instant::now();
    let event = send(&s, &alice, &room, "hello bob").await;
    let n = gateway.wait_for(Duration::from_secs(5), |n| n["event_id"] == event.as_str()).await;
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(n["type"], "m.room.message");
    assert_eq!(n["sender"], alice.user_id.as_str());
    assert_eq!(n["sender_display_name"], "alice");
    assert_eq!(n["room_name"], "Plans");
    assert_eq!(n["content"]["body"], "hello bob");
    assert_eq!(n["counts"]["unread"], 1);
    // A 1:1 room's message rings (sound tweak): high priority, which is the default and may be
    // omitted.
    assert_eq!(n["prio"].as_str().unwrap_or("high"), "high", "{n}");
    let device = &n["devices"][0];
    assert_eq!((device["app_id"].as_str(), device["pushkey"].as_str()), (Some("org.example.app"), Some("bobkey")));
    assert_eq!(device["data"]["custom"], "x");
    assert!(device["data"].get("url").is_none(), "the gateway URL is not echoed: {device}");
    // Alice's own message never notifies her.
    assert!(gateway.received().iter().all(|n| n["devices"][0]["pushkey"] == "bobkey"));
    s.finish().await;
}

async fn muted_rooms_and_master_rule_send_nothing(backend: Backend) {
    let Some(s) = spawn(backend).await else { return };
    let (gateway, url) = Gateway::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let muted = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let open = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &muted).await;
    join(&s, &bob, &open).await;
    assert_eq!(add_pusher(&s, &bob, &url, "bobkey", json!({})).await.0, StatusCode::OK);
    let base = "/_matrix/client/v3/pushrules/global";
    assert_eq!(
        s.put(&format!("{base}/room/{}", enc(&muted)), Some(&bob.token), json!({"actions": []})).await.0,
        StatusCode::OK
    );
    let silent = send(&s, &alice, &muted, "shh").await;
    let marker = send(&s, &alice, &open, "loud").await;
    gateway.wait_for(Duration::from_secs(5), |n| n["event_id"] == marker.as_str()).await;
    assert!(!event_ids(&gateway.received()).contains(&silent), "muted room notified");

    // The master rule silences everything.
    assert_eq!(
        s.put(&format!("{base}/override/.m.rule.master/enabled"), Some(&bob.token), json!({"enabled": true})).await.0,
        StatusCode::OK
    );
    let hushed = send(&s, &alice, &open, "hushed").await;
    assert_eq!(
        s.put(&format!("{base}/override/.m.rule.master/enabled"), Some(&bob.token), json!({"enabled": false})).await.0,
        StatusCode::OK
    );
    let marker = send(&s, &alice, &open, "after").await;
    gateway.wait_for(Duration::from_secs(5), |n| n["event_id"] == marker.as_str()).await;
    assert!(!event_ids(&gateway.received()).contains(&hushed), "master rule did not silence");
    s.finish().await;
}

fn unread(resp: &Value, room: &str) -> (u64, u64) {
    let counts = &resp["rooms"]["join"][room]["unread_notifications"];
    (counts["notification_count"].as_u64().unwrap_or(0), counts["highlight_count"].as_u64().unwrap_or(0))
}

async fn mentions_highlight_and_counts_reset_on_receipt(backend: Backend) {
    let Some(s) = spawn(backend).await else { return };
    let (gateway, url) = Gateway::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    assert_eq!(add_pusher(&s, &bob, &url, "bobkey", json!({})).await.0, StatusCode::OK);
    assert_eq!(unread(&sync(&s, &bob, "").await, &room), (0, 0));
    send(&s, &alice, &room, "one").await;
    send(&s, &alice, &room, "two").await;
    assert_eq!(unread(&sync(&s, &bob, "").await, &room), (2, 0));

    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/mention1", enc(&room));
    let (status, body) = s
        .put(
            &path,
            Some(&alice.token),
            json!({"msgtype": "m.text", "body": "bob, look", "m.mentions": {"user_ids": [bob.user_id]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mention = body["event_id"].as_str().expect("event_id").to_owned();
    assert_eq!(unread(&sync(&s, &bob, "").await, &room), (3, 1));
    let n = gateway.wait_for(Duration::from_secs(5), |n| n["event_id"] == mention.as_str()).await;
    // `prio` defaults to high and may be omitted.
    assert_eq!(n["prio"].as_str().unwrap_or("high"), "high", "{n}");
    let tweaks = &n["devices"][0]["tweaks"];
    assert_eq!(tweaks["highlight"], true, "{n}");

    // Bob's read receipt on the latest event resets both counts.
    let receipt = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&mention));
    assert_eq!(s.post(&receipt, Some(&bob.token), json!({})).await.0, StatusCode::OK);
    assert_eq!(unread(&sync(&s, &bob, "").await, &room), (0, 0));
    send(&s, &alice, &room, "three").await;
    assert_eq!(unread(&sync(&s, &bob, "").await, &room), (1, 0));
    s.finish().await;
}

async fn gateway_outage_survives_restart_exactly_once(backend: Backend) {
    let Some(s) = spawn(backend).await else { return };
    let (gateway, url) = Gateway::start().await;
    *gateway.failing.lock().expect("lock") = true;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    assert_eq!(add_pusher(&s, &bob, &url, "bobkey", json!({})).await.0, StatusCode::OK);
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(send(&s, &alice, &room, &format!("during the outage {i}")).await);
    }
    let db = s.stop().await;
    // The gateway recovers while the server is down; the restarted server delivers the backlog.
    *gateway.failing.lock().expect("lock") = false;
    let s = TestServer::start_on(db, |c| c.push.ip_range_allowlist = vec!["127.0.0.1/32".parse().expect("net")]).await;
    for event in &sent {
        gateway.wait_for(Duration::from_secs(30), |n| n["event_id"] == event.as_str()).await;
    }
    // One more notification, then check nothing was delivered twice.
    let marker = send(&s, &alice, &room, "after the restart").await;
    gateway.wait_for(Duration::from_secs(10), |n| n["event_id"] == marker.as_str()).await;
    let ids = event_ids(&gateway.received());
    for event in sent.iter().chain([&marker]) {
        assert_eq!(ids.iter().filter(|id| *id == event).count(), 1, "{event} in {ids:?}");
    }
    s.finish().await;
}

async fn rejected_pushkeys_remove_their_pusher(backend: Backend) {
    let Some(s) = spawn(backend).await else { return };
    let (gateway, url) = Gateway::start().await;
    gateway.reject.lock().expect("lock").push("stale".to_owned());
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    assert_eq!(add_pusher(&s, &bob, &url, "stale", json!({})).await.0, StatusCode::OK);
    let event = send(&s, &alice, &room, "ping").await;
    gateway.wait_for(Duration::from_secs(5), |n| n["event_id"] == event.as_str()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, list) = s.get("/_matrix/client/v3/pushers", Some(&bob.token)).await;
        if list["pushers"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(Instant::now() < deadline, "rejected pusher still there: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.finish().await;
}

async fn notifications_list(backend: Backend) {
    let Some(s) = spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let plain = send(&s, &alice, &room, "plain").await;
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/mention1", enc(&room));
    let (_, body) = s
        .put(
            &path,
            Some(&alice.token),
            json!({"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": [bob.user_id]}}),
        )
        .await;
    let mention = body["event_id"].as_str().expect("event_id").to_owned();
    let (status, all) = s.get("/_matrix/client/v3/notifications", Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let ids: Vec<&str> =
        all["notifications"].as_array().expect("list").iter().filter_map(|n| n["event"]["event_id"].as_str()).collect();
    assert_eq!(ids, vec![mention.as_str(), plain.as_str()], "newest first");
    assert_eq!(all["notifications"][0]["read"], false);
    let (_, high) = s.get("/_matrix/client/v3/notifications?only=highlight", Some(&bob.token)).await;
    let ids: Vec<&str> = high["notifications"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|n| n["event"]["event_id"].as_str())
        .collect();
    assert_eq!(ids, vec![mention.as_str()]);
    let (_, page) = s.get("/_matrix/client/v3/notifications?limit=1", Some(&bob.token)).await;
    let next = page["next_token"].as_str().expect("next_token");
    let (_, rest) = s.get(&format!("/_matrix/client/v3/notifications?limit=1&from={next}"), Some(&bob.token)).await;
    assert_eq!(rest["notifications"][0]["event"]["event_id"], plain.as_str());
    let receipt = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&mention));
    assert_eq!(s.post(&receipt, Some(&bob.token), json!({})).await.0, StatusCode::OK);
    let (_, all) = s.get("/_matrix/client/v3/notifications", Some(&bob.token)).await;
    assert!(all["notifications"].as_array().expect("list").iter().all(|n| n["read"] == true));
    s.finish().await;
}

/// Rule sets and pushers are cached for `push.cached_users` users at most, and evaluation
/// stays right for the users that fell out of the cache.
async fn push_caches_are_bounded(backend: Backend) {
    let Some(s) = TestServer::spawn_with(backend, |c| {
        c.push.ip_range_allowlist = vec!["127.0.0.1/32".parse().expect("net")];
        c.push.cached_users = 2;
    })
    .await
    else {
        return;
    };
    let (gateway, url) = Gateway::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let mut members = Vec::new();
    for n in 0..5 {
        let member = s.register(&format!("m{n}")).await;
        join(&s, &member, &room).await;
        members.push(member);
    }
    assert_eq!(add_pusher(&s, &members[0], &url, "first", json!({})).await.0, StatusCode::OK);
    for n in 0..3 {
        let event = send(&s, &alice, &room, &format!("hello {n}")).await;
        gateway.wait_for(Duration::from_secs(10), |n| n["event_id"] == event.as_str()).await;
        let (rulesets, pushers) = s.services().push.cached_users();
        assert!(rulesets <= 2 && pushers <= 2, "cached for {rulesets} and {pushers} users");
    }
    s.finish().await;
}
