//! Device-list tracking: key changes reach the users who share a room with the changed user
//! (in sync and /keys/changes) and nobody else; users who begin sharing a room appear as
//! changed, users who stop sharing every room as left; a waiting sync wakes for a change.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    e2ee_util::{Signer, device_keys, device_lists, one_time_keys, token, upload, upload_device_keys},
    harness::{Backend, TestServer, both_backends, enc},
    sync::{create_room, join, sync},
};

both_backends!(device_list_changes_reach_room_mates_only, device_list_change_wakes_a_waiting_sync);

async fn device_list_changes_reach_room_mates_only(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    create_room(&s, &carol, json!({"preset": "public_chat"})).await;

    let (a0, b0, c0) = (token(&s, &alice).await, token(&s, &bob).await, token(&s, &carol).await);
    let signer = Signer::device(&bob.device_id);
    let bob_keys = json!({"device_keys": device_keys(&bob, &signer)});
    assert_eq!(upload(&s, &bob, bob_keys.clone()).await.0, StatusCode::OK);
    let (changed, left, a1) = device_lists(&s, &alice, &a0).await;
    assert_eq!((changed, left), (vec![bob.user_id.clone()], vec![]), "alice shares a room with bob");
    let (changed, _, b1) = device_lists(&s, &bob, &b0).await;
    assert_eq!(changed, vec![bob.user_id.clone()], "bob hears of his own change");
    let (changed, _, c1) = device_lists(&s, &carol, &c0).await;
    assert!(changed.is_empty(), "carol shares no room with bob: {changed:?}");

    // /keys/changes over the same range agrees.
    let changes = |user: &crate::harness::TestUser, from: &str, to: &str| {
        let path = format!("/_matrix/client/v3/keys/changes?from={from}&to={to}");
        let token = user.token.clone();
        let s = &s;
        async move {
            let (status, resp) = s.get(&path, Some(&token)).await;
            assert_eq!(status, StatusCode::OK, "{resp}");
            resp
        }
    };
    assert_eq!(changes(&alice, &a0, &a1).await["changed"], json!([bob.user_id]));
    assert_eq!(changes(&carol, &c0, &c1).await["changed"], json!([]));
    assert_eq!(changes(&alice, &a1, &a1).await["changed"], json!([]));

    // An upload that changes nothing (the same device keys again is not a change; one-time
    // keys never are) tells nobody.
    assert_eq!(upload(&s, &bob, bob_keys).await.0, StatusCode::OK);
    let otks = json!({"one_time_keys": one_time_keys(&bob, &signer, "K", 2)});
    assert_eq!(upload(&s, &bob, otks).await.0, StatusCode::OK);
    let (changed, _, a1) = device_lists(&s, &alice, &a1).await;
    assert!(changed.is_empty(), "{changed:?}");

    // Carol joins: she now shares a room with alice and bob, so both are "changed" for her,
    // and she is for them.
    join(&s, &carol, &room).await;
    let (changed, _, c2) = device_lists(&s, &carol, &c1).await;
    assert_eq!(changed, sorted(&[&alice.user_id, &bob.user_id]));
    let (changed, _, a2) = device_lists(&s, &alice, &a1).await;
    assert_eq!(changed, vec![carol.user_id.clone()]);

    // Bob leaves: alice and carol no longer share a room with him.
    let (status, _) =
        s.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, left, a3) = device_lists(&s, &alice, &a2).await;
    assert_eq!(left, vec![bob.user_id.clone()]);
    let (_, left, _) = device_lists(&s, &carol, &c2).await;
    assert_eq!(left, vec![bob.user_id.clone()]);
    let (_, left, b2) = device_lists(&s, &bob, &b1).await;
    assert_eq!(left, sorted(&[&alice.user_id, &carol.user_id]), "bob left the room they shared");

    // Now bob's changes reach nobody but bob.
    let phone = s.login("bob").await;
    upload_device_keys(&s, &phone).await;
    let (changed, _, a4) = device_lists(&s, &alice, &a3).await;
    assert!(changed.is_empty(), "{changed:?}");
    let (changed, _, _) = device_lists(&s, &bob, &b2).await;
    assert_eq!(changed, vec![bob.user_id.clone()]);

    // Deleting a device is a change too.
    let laptop = s.login("alice").await;
    upload_device_keys(&s, &laptop).await;
    let (_, _, c3) = device_lists(&s, &carol, &token(&s, &carol).await).await;
    let (status, _) = s.post("/_matrix/client/v3/logout", Some(&laptop.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (changed, _, _) = device_lists(&s, &carol, &c3).await;
    assert_eq!(changed, vec![alice.user_id.clone()]);
    let (changed, _, _) = device_lists(&s, &alice, &a4).await;
    assert!(changed.contains(&alice.user_id), "{changed:?}");

    // An initial sync carries no device_lists.
    let initial = sync(&s, &alice, "timeout=0").await;
    assert!(initial["device_lists"]["changed"].as_array().is_none_or(Vec::is_empty), "{initial}");
    s.finish().await;
}

async fn device_list_change_wakes_a_waiting_sync(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let since = token(&s, &alice).await;

    let started = Instant::now();
    let query = format!("since={since}&timeout=20000");
    let waiting = sync(&s, &alice, &query);
    let upload = async {
        s.wait_for_long_poll(&alice.user_id).await;
        upload_device_keys(&s, &bob).await;
    };
    let (mut resp, ()) = tokio::join!(waiting, upload);
    // The sync may also wake first for something else new (bob's presence, say): follow on
    // until the device-list change is there.
    for _ in 0..5 {
        if resp["device_lists"]["changed"].is_array() {
            break;
        }
        let next = resp["next_batch"].as_str().expect("next_batch").to_owned();
        resp = sync(&s, &alice, &format!("since={next}&timeout=20000")).await;
    }
    assert!(started.elapsed() < Duration::from_secs(10), "woken, not timed out: {:?}", started.elapsed());
    assert_eq!(resp["device_lists"]["changed"], json!([bob.user_id]), "{resp}");
    s.finish().await;
}

fn sorted(users: &[&String]) -> Vec<String> {
    let mut users: Vec<String> = users.iter().map(|u| (*u).clone()).collect();
    users.sort();
    users
}
