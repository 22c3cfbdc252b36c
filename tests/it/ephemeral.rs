//! Presence, typing, receipts and read markers: they reach exactly the right people through
//! sync, wake waiting syncs, and expire as specified.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    harness::{Backend, TestServer, TestUser, assert_error, both_backends, enc},
    sync::{create_room, join, send, sync},
};

both_backends!(
    typing_reaches_members_and_expires,
    receipts_public_and_private,
    read_markers_and_bad_receipts,
    presence_visibility_and_status,
    presence_goes_unavailable_and_offline,
    presence_flapping_is_coalesced,
    presence_can_be_disabled,
    an_abandoned_sync_stops_counting,
    typing_after_a_restart_reaches_old_tokens,
);

fn next(resp: &Value) -> String {
    resp["next_batch"].as_str().expect("next_batch").to_owned()
}

fn ephemeral<'a>(resp: &'a Value, room: &str, kind: &str) -> Option<&'a Value> {
    resp["rooms"]["join"][room]["ephemeral"]["events"].as_array()?.iter().find(|e| e["type"] == kind)
}

/// Syncs from `since` until `found` returns something, or fails after 10 seconds.
async fn sync_until<T>(
    s: &TestServer,
    user: &TestUser,
    since: &str,
    mut found: impl FnMut(&Value) -> Option<T>,
) -> (T, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut since = since.to_owned();
    loop {
        assert!(Instant::now() < deadline, "never arrived");
        let resp = sync(s, user, &format!("since={since}&timeout=2000")).await;
        if let Some(value) = found(&resp) {
            return (value, next(&resp));
        }
        since = next(&resp);
    }
}

fn presence_of(resp: &Value, user: &str) -> Option<Value> {
    resp["presence"]["events"].as_array()?.iter().rev().find(|e| e["sender"] == user).map(|e| e["content"].clone())
}

async fn typing_reaches_members_and_expires(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let bob_since = next(&sync(&s, &bob, "").await);
    let carol_since = next(&sync(&s, &carol, "").await);
    let typing_path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&alice.user_id));

    // A waiting sync wakes for the typing notification.
    let (status, _) = s.put(&typing_path, Some(&alice.token), json!({"typing": true, "timeout": 1500})).await;
    assert_eq!(status, StatusCode::OK);
    let (users, bob_since) = sync_until(&s, &bob, &bob_since, |r| ephemeral(r, &room, "m.typing").cloned()).await;
    assert_eq!(users["content"]["user_ids"], json!([alice.user_id]));
    let carol_view = sync(&s, &carol, &format!("since={carol_since}&timeout=300")).await;
    assert!(carol_view["rooms"]["join"].get(&room).is_none(), "not a member: {carol_view}");

    // It expires on the timeout, and the sync says so.
    let (users, bob_since) = sync_until(&s, &bob, &bob_since, |r| {
        ephemeral(r, &room, "m.typing").filter(|e| e["content"]["user_ids"] == json!([])).cloned()
    })
    .await;
    assert_eq!(users["content"]["user_ids"], json!([]));

    // Sending a message ends it.
    let (status, _) = s.put(&typing_path, Some(&alice.token), json!({"typing": true, "timeout": 30000})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, bob_since) = sync_until(&s, &bob, &bob_since, |r| {
        ephemeral(r, &room, "m.typing").filter(|e| e["content"]["user_ids"] == json!([alice.user_id])).cloned()
    })
    .await;
    send(&s, &alice, &room, "done typing").await;
    let (stopped, _) = sync_until(&s, &bob, &bob_since, |r| {
        ephemeral(r, &room, "m.typing").filter(|e| e["content"]["user_ids"] == json!([])).cloned()
    })
    .await;
    assert_eq!(stopped["content"]["user_ids"], json!([]));

    // Only for oneself, and only in rooms one is in.
    let other = s
        .put(
            &format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&bob.user_id)),
            Some(&alice.token),
            json!({"typing": true, "timeout": 1000}),
        )
        .await;
    assert_error(&other, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let outsider = s
        .put(
            &format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&carol.user_id)),
            Some(&carol.token),
            json!({"typing": true, "timeout": 1000}),
        )
        .await;
    assert_error(&outsider, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    s.finish().await;
}

async fn receipts_public_and_private(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let event = send(&s, &alice, &room, "read me").await;
    let alice_since = next(&sync(&s, &alice, "").await);
    let bob_since = next(&sync(&s, &bob, "").await);
    let carol_since = next(&sync(&s, &carol, "").await);

    let receipt = |kind: &str| format!("/_matrix/client/v3/rooms/{}/receipt/{kind}/{}", enc(&room), enc(&event));
    let (status, body) = s.post(&receipt("m.read.private"), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Bob sees his private receipt; alice never does.
    let (own, bob_since) = sync_until(&s, &bob, &bob_since, |r| ephemeral(r, &room, "m.receipt").cloned()).await;
    assert!(own["content"][&event]["m.read.private"][&bob.user_id]["ts"].is_u64(), "{own}");
    let quiet = sync(&s, &alice, &format!("since={alice_since}&timeout=500")).await;
    assert!(ephemeral(&quiet, &room, "m.receipt").is_none(), "private receipts stay private: {quiet}");

    let (status, _) = s.post(&receipt("m.read"), Some(&bob.token), json!({"thread_id": "main"})).await;
    assert_eq!(status, StatusCode::OK);
    let (public, _) = sync_until(&s, &alice, &alice_since, |r| ephemeral(r, &room, "m.receipt").cloned()).await;
    let entry = &public["content"][&event]["m.read"][&bob.user_id];
    assert_eq!(entry["thread_id"], "main", "{public}");
    assert!(public["content"][&event].get("m.read.private").is_none(), "{public}");
    let (mine, _) = sync_until(&s, &bob, &bob_since, |r| ephemeral(r, &room, "m.receipt").cloned()).await;
    assert!(mine["content"][&event]["m.read"][&bob.user_id].is_object());
    // Nothing reaches a non-member.
    let outsider = sync(&s, &carol, &format!("since={carol_since}&timeout=300")).await;
    assert!(outsider["rooms"]["join"].get(&room).is_none(), "{outsider}");
    // An initial sync carries the current receipts.
    let initial = sync(&s, &alice, "").await;
    assert!(
        ephemeral(&initial, &room, "m.receipt")
            .is_some_and(|r| r["content"][&event]["m.read"][&bob.user_id].is_object())
    );
    s.finish().await;
}

async fn read_markers_and_bad_receipts(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let other = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let first = send(&s, &alice, &room, "one").await;
    let second = send(&s, &alice, &room, "two").await;
    let foreign = send(&s, &alice, &other, "elsewhere").await;

    let markers = format!("/_matrix/client/v3/rooms/{}/read_markers", enc(&room));
    let (status, body) = s.post(&markers, Some(&alice.token), json!({"m.fully_read": second, "m.read": first})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fully_read =
        format!("/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read", enc(&alice.user_id), enc(&room));
    let (_, data) = s.get(&fully_read, Some(&alice.token)).await;
    assert_eq!(data["event_id"], second.as_str());
    let initial = sync(&s, &alice, "").await;
    let room_data = initial["rooms"]["join"][&room]["account_data"]["events"].as_array().expect("account data");
    assert!(room_data.iter().any(|e| e["type"] == "m.fully_read" && e["content"]["event_id"] == second.as_str()));
    assert!(
        ephemeral(&initial, &room, "m.receipt")
            .is_some_and(|r| r["content"][&first]["m.read"][&alice.user_id].is_object())
    );

    // Receipts only move forward: an older event is accepted and ignored.
    let receipt = |ev: &str| format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(ev));
    assert_eq!(s.post(&receipt(&second), Some(&alice.token), json!({})).await.0, StatusCode::OK);
    assert_eq!(s.post(&receipt(&first), Some(&alice.token), json!({})).await.0, StatusCode::OK);
    let initial = sync(&s, &alice, "").await;
    let receipts = ephemeral(&initial, &room, "m.receipt").expect("receipts");
    assert!(receipts["content"][&second]["m.read"][&alice.user_id].is_object(), "{receipts}");
    assert!(receipts["content"].get(&first).is_none(), "{receipts}");

    // Errors: an event of another room, an unknown receipt type, a non-member.
    assert_error(
        &s.post(&receipt(&foreign), Some(&alice.token), json!({})).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let odd = s
        .post(
            &format!("/_matrix/client/v3/rooms/{}/receipt/m.odd/{}", enc(&room), enc(&first)),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(odd.0, StatusCode::BAD_REQUEST, "{}", odd.1);
    assert_error(&s.post(&receipt(&first), Some(&carol.token), json!({})).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    s.finish().await;
}

async fn presence_visibility_and_status(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let bob_since = next(&sync(&s, &bob, "").await);
    let carol_since = next(&sync(&s, &carol, "").await);

    let status = format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id));
    let (code, _) = s.put(&status, Some(&alice.token), json!({"presence": "unavailable", "status_msg": "lunch"})).await;
    assert_eq!(code, StatusCode::OK);
    let (content, _) =
        sync_until(&s, &bob, &bob_since, |r| presence_of(r, &alice.user_id).filter(|c| c["presence"] == "unavailable"))
            .await;
    assert_eq!(content["status_msg"], "lunch");
    assert!(content["last_active_ago"].is_u64(), "{content}");
    let outsider = sync(&s, &carol, &format!("since={carol_since}&timeout=1500")).await;
    assert!(presence_of(&outsider, &alice.user_id).is_none(), "carol shares no room: {outsider}");

    let (code, body) = s.get(&status, Some(&bob.token)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!((body["presence"].as_str(), body["status_msg"].as_str()), (Some("unavailable"), Some("lunch")));
    assert_error(&s.get(&status, Some(&carol.token)).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let others = format!("/_matrix/client/v3/presence/{}/status", enc(&bob.user_id));
    assert_error(
        &s.put(&others, Some(&alice.token), json!({"presence": "online"})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let nobody = format!("/_matrix/client/v3/presence/{}/status", enc(&format!("@nobody:{}", s.server_name)));
    assert_error(&s.get(&nobody, Some(&alice.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // An initial sync carries the current presence of those who share a room.
    let initial = sync(&s, &bob, "").await;
    assert_eq!(presence_of(&initial, &alice.user_id).map(|c| c["presence"].clone()), Some(json!("unavailable")));
    s.finish().await;
}

async fn presence_goes_unavailable_and_offline(backend: Backend) {
    let Some(s) = TestServer::spawn_with(backend, |c| {
        c.presence.idle_timeout_secs = 1;
        c.presence.offline_after_secs = 2;
        c.presence.min_update_interval_secs = 0;
    })
    .await
    else {
        return;
    };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let bob_since = next(&sync(&s, &bob, "").await);
    // Alice syncs once (set_presence defaults to online), then stops.
    sync(&s, &alice, "").await;
    let (_, bob_since) =
        sync_until(&s, &bob, &bob_since, |r| presence_of(r, &alice.user_id).filter(|c| c["presence"] == "online"))
            .await;
    let (_, bob_since) =
        sync_until(&s, &bob, &bob_since, |r| presence_of(r, &alice.user_id).filter(|c| c["presence"] == "unavailable"))
            .await;
    let (content, _) =
        sync_until(&s, &bob, &bob_since, |r| presence_of(r, &alice.user_id).filter(|c| c["presence"] == "offline"))
            .await;
    assert_eq!(content["currently_active"], false);
    s.finish().await;
}

async fn presence_flapping_is_coalesced(backend: Backend) {
    let Some(s) = TestServer::spawn_with(backend, |c| c.presence.min_update_interval_secs = 3).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let since = next(&sync(&s, &bob, "").await);
    let status = format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id));
    for i in 0..10 {
        let state = if i % 2 == 0 { "unavailable" } else { "online" };
        assert_eq!(
            s.put(&status, Some(&alice.token), json!({"presence": state, "status_msg": format!("m{i}")})).await.0,
            StatusCode::OK
        );
    }
    // Within one interval at most one update goes out; the last state follows after it.
    let started = Instant::now();
    let mut updates = Vec::new();
    let mut since = since;
    while started.elapsed() < Duration::from_secs(5) {
        let resp = sync(&s, &bob, &format!("since={since}&timeout=1000")).await;
        if let Some(events) = resp["presence"]["events"].as_array() {
            updates.extend(
                events
                    .iter()
                    .filter(|e| e["sender"] == alice.user_id.as_str())
                    .map(|e| (started.elapsed(), e["content"].clone())),
            );
        }
        since = next(&resp);
    }
    assert!(updates.len() <= 2, "10 changes in a burst made {} updates: {updates:?}", updates.len());
    let last = updates.last().expect("the final state is published");
    assert_eq!(last.1["status_msg"], "m9", "{updates:?}");
    s.finish().await;
}

async fn presence_can_be_disabled(backend: Backend) {
    let Some(s) = TestServer::spawn_with(backend, |c| c.presence.enabled = false).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let status = format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id));
    assert_eq!(
        s.put(&status, Some(&alice.token), json!({"presence": "online", "status_msg": "hi"})).await.0,
        StatusCode::OK
    );
    let (_, body) = s.get(&status, Some(&bob.token)).await;
    assert_eq!(body["presence"], "offline");
    let resp = sync(&s, &bob, "").await;
    assert!(resp["presence"]["events"].as_array().is_none_or(Vec::is_empty), "{resp}");
    s.finish().await;
}

/// A sync whose client goes away mid-poll (the server drops the handler's future) no longer
/// counts as running: the user goes offline as if it had ended.
async fn an_abandoned_sync_stops_counting(backend: Backend) {
    let Some(s) = TestServer::spawn_with(backend, |c| {
        c.presence.offline_after_secs = 1;
        c.presence.min_update_interval_secs = 0;
    })
    .await
    else {
        return;
    };
    let alice = s.register("alice").await;
    let user_id = <&ruma::UserId>::try_from(alice.user_id.as_str()).expect("user ID");
    let since = next(&sync(&s, &alice, "").await);
    let polling = {
        let (http, url, token) = (
            s.http.clone(),
            s.url(&format!("/_matrix/client/v3/sync?since={since}&timeout=60000")),
            alice.token.clone(),
        );
        tokio::spawn(async move { http.get(url).bearer_auth(token).send().await })
    };
    s.wait_for_long_poll(&alice.user_id).await;
    assert_eq!(s.services().presence.syncing(user_id), 1);
    // The client gives up: its connection closes while the sync waits.
    polling.abort();
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.services().presence.syncing(user_id) != 0 {
        assert!(Instant::now() < deadline, "the abandoned sync still counts as running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Asked of the service: a request of alice's own would count as activity.
    loop {
        let view = s.services().presence.get(user_id).await.expect("presence");
        if view.state == "offline" {
            break;
        }
        assert!(Instant::now() < deadline, "never went offline: {view:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.finish().await;
}

/// Typing lives in memory, with serials that start over when the server does. A client still
/// holding a token from before the restart (with a higher serial) must see typing again at
/// once, and must be told that whatever it saw typing before is over.
async fn typing_after_a_restart_reaches_old_tokens(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let typing_path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&alice.user_id));
    let bob_since = next(&sync(&s, &bob, "").await);
    // Several changes, so that bob's token carries a serial well above a fresh server's.
    for typing in [true, false, true, false, true] {
        let (status, _) = s.put(&typing_path, Some(&alice.token), json!({"typing": typing, "timeout": 30000})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (_, bob_since) = sync_until(&s, &bob, &bob_since, |r| {
        ephemeral(r, &room, "m.typing").filter(|e| e["content"]["user_ids"] == json!([alice.user_id])).cloned()
    })
    .await;

    let db = s.stop().await;
    let s = TestServer::start_on(db, |_| {}).await;
    // Alice was typing before the restart; that is over now, and bob hears so.
    let (ended, bob_since) = sync_until(&s, &bob, &bob_since, |r| ephemeral(r, &room, "m.typing").cloned()).await;
    assert_eq!(ended["content"]["user_ids"], json!([]), "{ended}");
    // New typing reaches bob although the new serial is below his token's.
    let (status, _) = s.put(&typing_path, Some(&alice.token), json!({"typing": true, "timeout": 30000})).await;
    assert_eq!(status, StatusCode::OK);
    let (typing, _) = sync_until(&s, &bob, &bob_since, |r| ephemeral(r, &room, "m.typing").cloned()).await;
    assert_eq!(typing["content"]["user_ids"], json!([alice.user_id]), "{typing}");
    s.finish().await;
}
