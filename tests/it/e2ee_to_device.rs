//! To-device messages: delivered once to the addressed device (or every device for `*`),
//! idempotent per transaction ID, kept until the device acknowledges them with its next
//! sync and deleted then, delivered in batches without loss, waking a waiting sync.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use ruma::{DeviceId, UserId};
use serde_json::{Value, json};

use crate::{
    e2ee_util::token,
    harness::{Backend, TestServer, TestUser, assert_error, both_backends},
    sync::sync,
};

both_backends!(
    delivered_exactly_once_and_deleted_after_acknowledgement,
    all_devices_and_transaction_ids,
    large_backlogs_arrive_in_batches,
    a_waiting_sync_wakes_for_a_message,
    a_sync_sees_every_acknowledged_send,
);

async fn send(s: &TestServer, from: &TestUser, txn: &str, messages: Value) -> (StatusCode, Value) {
    s.put(&format!("/_matrix/client/v3/sendToDevice/m.test/{txn}"), Some(&from.token), json!({"messages": messages}))
        .await
}

fn events(resp: &Value) -> Vec<Value> {
    resp["to_device"]["events"].as_array().cloned().unwrap_or_default()
}

/// Messages still stored for the device.
async fn stored(s: &TestServer, user: &TestUser) -> usize {
    let user_id = <&UserId>::try_from(user.user_id.as_str()).expect("user ID");
    let device_id: &DeviceId = user.device_id.as_str().into();
    s.services().storage.to_device.pending(user_id, device_id, 0, i64::MAX, 1000).await.expect("pending").len()
}

async fn delivered_exactly_once_and_deleted_after_acknowledgement(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let bob_phone = s.login("bob").await;
    let since = token(&s, &bob).await;
    let phone_since = token(&s, &bob_phone).await;

    let message = json!({ &bob.user_id: { &bob.device_id: {"n": 1, "secret": "ciphertext"} } });
    assert_eq!(send(&s, &alice, "txn1", message.clone()).await.0, StatusCode::OK);
    // A retry of the same transaction is accepted and not delivered again.
    assert_eq!(send(&s, &alice, "txn1", message).await.0, StatusCode::OK);

    let first = sync(&s, &bob, &format!("since={since}&timeout=0")).await;
    let got = events(&first);
    assert_eq!(got.len(), 1, "{first}");
    assert_eq!(got[0]["sender"], alice.user_id);
    assert_eq!(got[0]["type"], "m.test");
    assert_eq!(got[0]["content"], json!({"n": 1, "secret": "ciphertext"}));
    // The other device of the same user gets nothing.
    assert!(events(&sync(&s, &bob_phone, &format!("since={phone_since}&timeout=0")).await).is_empty());

    // Until acknowledged, a retried sync (same since) gets the message again.
    let retry = sync(&s, &bob, &format!("since={since}&timeout=0")).await;
    assert_eq!(events(&retry).len(), 1, "{retry}");
    assert_eq!(stored(&s, &bob).await, 1);
    // Syncing with the next token acknowledges it: it is not delivered again, and it is gone.
    let next = first["next_batch"].as_str().expect("next_batch");
    let after = sync(&s, &bob, &format!("since={next}&timeout=0")).await;
    assert!(events(&after).is_empty(), "{after}");
    assert_eq!(stored(&s, &bob).await, 0, "deleted after the acknowledging sync");

    // Messages for a device that is then deleted go with it.
    let phone_msg = json!({ &bob.user_id: { &bob_phone.device_id: {"n": 2} } });
    assert_eq!(send(&s, &alice, "txn2", phone_msg).await.0, StatusCode::OK);
    assert_eq!(stored(&s, &bob_phone).await, 1);
    assert_eq!(s.post("/_matrix/client/v3/logout", Some(&bob_phone.token), json!({})).await.0, StatusCode::OK);
    assert_eq!(stored(&s, &bob_phone).await, 0);
    s.finish().await;
}

async fn all_devices_and_transaction_ids(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let alice_laptop = s.login("alice").await;
    let bob = s.register("bob").await;
    let bob_phone = s.login("bob").await;
    let tokens = [token(&s, &bob).await, token(&s, &bob_phone).await];

    // `*` reaches every device; an explicit entry for one device wins over `*` there.
    let messages = json!({ &bob.user_id: { "*": {"to": "all"}, &bob_phone.device_id: {"to": "phone"} } });
    assert_eq!(send(&s, &alice, "t1", messages).await.0, StatusCode::OK);
    // The same transaction ID from another device is another transaction.
    let messages = json!({ &bob.user_id: { &bob.device_id: {"to": "from laptop"} } });
    assert_eq!(send(&s, &alice_laptop, "t1", messages).await.0, StatusCode::OK);
    // Unknown devices and users are skipped; the request still succeeds.
    let messages = json!({ &bob.user_id: { "NOSUCHDEVICE": {"x": 1} }, "@nobody:localhost": { "*": {"x": 1} } });
    assert_eq!(send(&s, &alice, "t2", messages).await.0, StatusCode::OK);

    let contents = |resp: &Value| -> Vec<Value> { events(resp).iter().map(|e| e["content"].clone()).collect() };
    let main = sync(&s, &bob, &format!("since={}&timeout=0", tokens[0])).await;
    assert_eq!(contents(&main), vec![json!({"to": "all"}), json!({"to": "from laptop"})], "{main}");
    let phone = sync(&s, &bob_phone, &format!("since={}&timeout=0", tokens[1])).await;
    assert_eq!(contents(&phone), vec![json!({"to": "phone"})], "{phone}");

    // Contents must be objects; a bad body changes nothing.
    let bad = json!({ &bob.user_id: { &bob.device_id: "not an object" } });
    assert_error(&send(&s, &alice, "t3", bad).await, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let next = main["next_batch"].as_str().expect("next_batch");
    assert!(events(&sync(&s, &bob, &format!("since={next}&timeout=0")).await).is_empty());
    s.finish().await;
}

async fn large_backlogs_arrive_in_batches(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let mut since = token(&s, &bob).await;
    for n in 0..150 {
        let messages = json!({ &bob.user_id: { &bob.device_id: {"n": n} } });
        assert_eq!(send(&s, &alice, &format!("t{n}"), messages).await.0, StatusCode::OK);
    }
    let mut received = Vec::new();
    let mut batches = 0;
    loop {
        let resp = sync(&s, &bob, &format!("since={since}&timeout=0")).await;
        let got = events(&resp);
        if got.is_empty() {
            break;
        }
        assert!(got.len() <= 100, "batches of at most 100");
        batches += 1;
        received.extend(got.iter().map(|e| e["content"]["n"].as_i64().expect("n")));
        since = resp["next_batch"].as_str().expect("next_batch").to_owned();
    }
    assert_eq!(received, (0..150).collect::<Vec<_>>(), "every message once, in order");
    assert_eq!(batches, 2);
    s.finish().await;
}

async fn a_waiting_sync_wakes_for_a_message(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let since = token(&s, &bob).await;
    let started = Instant::now();
    let query = format!("since={since}&timeout=20000");
    let waiting = sync(&s, &bob, &query);
    let sending = async {
        s.wait_for_long_poll(&bob.user_id).await;
        let messages = json!({ &bob.user_id: { &bob.device_id: {"wake": true} } });
        assert_eq!(send(&s, &alice, "wake", messages).await.0, StatusCode::OK);
    };
    let (resp, ()) = tokio::join!(waiting, sending);
    assert!(started.elapsed() < Duration::from_secs(10), "woken: {:?}", started.elapsed());
    assert_eq!(events(&resp).len(), 1, "{resp}");
    s.finish().await;
}

/// A send that was acknowledged is in the next sync, even while a lower stream position is
/// still being written by someone else (which holds the watermark below the send). Without
/// this, `large_backlogs_arrive_in_batches` failed now and then in full parallel runs: a sync
/// came back short or empty while a presence update was being written.
async fn a_sync_sees_every_acknowledged_send(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let since = token(&s, &bob).await;
    // A write below alice's send that has not finished yet.
    let open = s.services().stream.allocate();
    let messages = json!({ &bob.user_id: { &bob.device_id: {"n": 1} } });
    assert_eq!(send(&s, &alice, "t1", messages).await.0, StatusCode::OK);
    let syncing = {
        let (http, url, token) =
            (s.http.clone(), s.url(&format!("/_matrix/client/v3/sync?since={since}&timeout=0")), bob.token.clone());
        tokio::spawn(async move {
            http.get(url).bearer_auth(token).send().await.expect("sync").json::<Value>().await.expect("json")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.services().stream.readers_waiting() == 0 && !syncing.is_finished() {
        assert!(Instant::now() < deadline, "the sync neither waited nor answered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(open);
    let resp = syncing.await.expect("join");
    assert_eq!(events(&resp).len(), 1, "the acknowledged send is in the sync: {resp}");
    s.finish().await;
}
