//! Federation between Parleys in one process: keys, signed requests (and forged ones
//! refused), profile and alias queries, remote key queries and claims, to-device messages,
//! and the outbound queue across restarts.

use std::sync::Arc;

use http::Method;
use parley_federation::keys::SigningKey;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    e2ee_util::{claim, one_time_keys, query, upload, upload_device_keys},
    fed_harness::{Peers, eventually},
    harness::{Backend, TestServer, TestUser, assert_error, both_backends, enc},
    room_util::create_room,
    sync::sync,
};

both_backends!(
    servers_serve_and_fetch_each_others_keys,
    signed_requests_are_accepted_and_forged_ones_refused,
    remote_profiles_and_aliases_resolve,
    remote_device_keys_are_queried_and_claimed,
    to_device_messages_cross_three_servers,
    the_queue_survives_restarts_of_sender_and_receiver,
    a_destination_that_calls_back_is_retried_at_once,
);

fn name(peers: &Peers, i: usize) -> String {
    peers.names[i].to_string()
}

/// hs1's keys, fetched by hs2 as a notary answer for hs1, and hs2's own: the two servers
/// trust each other's signing keys by fetching them over HTTPS.
async fn servers_serve_and_fetch_each_others_keys(backend: Backend) {
    let Some(peers) = Peers::spawn(backend, 2).await else { return };
    let (hs1, hs2) = (peers.get(0), peers.get(1));
    let (status, own) = hs1.get("/_matrix/key/v2/server", None).await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!(own["server_name"], name(&peers, 0));
    let key_id = own["verify_keys"].as_object().and_then(|k| k.keys().next().cloned()).expect("a verify key");

    // hs2, as a notary, fetches hs1's keys over federation and answers with them, signed by
    // hs1 and by itself.
    let (status, body) = hs2.get(&format!("/_matrix/key/v2/query/{}", name(&peers, 0)), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let keys = &body["server_keys"][0];
    assert_eq!(keys["server_name"], name(&peers, 0));
    assert_eq!(keys["verify_keys"][&key_id], own["verify_keys"][&key_id]);
    assert!(keys["signatures"][name(&peers, 0)].is_object(), "signed by hs1: {keys}");
    assert!(keys["signatures"][name(&peers, 1)].is_object(), "signed by the notary: {keys}");

    // The same through POST, asking for a key ID hs1 never had: no such key is invented.
    let (status, body) = hs2
        .post(
            "/_matrix/key/v2/query",
            None,
            json!({"server_keys": {name(&peers, 0): {"ed25519:nope": {"minimum_valid_until_ts": 0}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for answer in body["server_keys"].as_array().expect("server_keys") {
        assert!(answer["verify_keys"].get("ed25519:nope").is_none(), "{answer}");
    }
    peers.finish().await;
}

/// A request signed with hs2's real key is accepted by hs1. A forged signature (hs2's key ID,
/// another key), a request meant for another server, a request claiming to come from hs1
/// itself, and an unsigned one, all get 401 M_UNAUTHORIZED.
async fn signed_requests_are_accepted_and_forged_ones_refused(backend: Backend) {
    let Some(peers) = Peers::spawn(backend, 3).await else { return };
    let (hs1, hs2) = (peers.get(0), peers.get(1));
    let alice = hs1.register("alice").await;
    let path = format!("/_matrix/federation/v1/query/profile?user_id={}", enc(&alice.user_id));
    let hs1_name = peers.names[0].clone();

    let real_key = hs2.services().server_keys.signing_key_arc();
    let genuine = peers.client_as(&name(&peers, 1), Arc::clone(&real_key), None);
    let answer = genuine.send_raw(&hs1_name, Method::GET, &path, None).await.expect("sent");
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));

    // And the other way: hs1 signs, hs2 checks.
    let bob = hs2.register("bob").await;
    let (status, body) = hs1.get(&format!("/_matrix/client/v3/profile/{}", enc(&bob.user_id)), None).await;
    assert_eq!(status, StatusCode::OK, "hs1 asks hs2 for bob's profile: {body}");

    let unauthorized = |answer: parley_federation::client::RawResponse, what: &str| {
        let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(body["errcode"], "M_UNAUTHORIZED", "{what}: {body}");
    };
    let forged_key = Arc::new(SigningKey::generate(real_key.version()).expect("key"));
    let forger = peers.client_as(&name(&peers, 1), forged_key, None);
    unauthorized(forger.send_raw(&hs1_name, Method::GET, &path, None).await.expect("sent"), "forged signature");

    // hs2's genuine signature, but for hs3: hs1 must not accept a request meant for another.
    let misdirected = peers.client_as(&name(&peers, 1), Arc::clone(&real_key), Some(("hs3.test", 0)));
    let hs3_name = peers.names[2].clone();
    unauthorized(misdirected.send_raw(&hs3_name, Method::GET, &path, None).await.expect("sent"), "misdirected");

    // Claiming to be hs1 itself.
    let impostor = peers.client_as(&name(&peers, 0), Arc::clone(&real_key), None);
    unauthorized(impostor.send_raw(&hs1_name, Method::GET, &path, None).await.expect("sent"), "impostor");

    // Unsigned: plain HTTPS with no Authorization header.
    let https = reqwest::Client::builder().danger_accept_invalid_certs(true).build().expect("client");
    let answer = https.get(format!("https://{}{path}", peers.addrs[0])).send().await.expect("sent");
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let body: Value = answer.json().await.expect("json");
    assert_eq!(body["errcode"], "M_UNAUTHORIZED", "{body}");
    peers.finish().await;
}

/// Profiles and room aliases of another server resolve through federation queries; unknown
/// ones are 404 on both sides.
async fn remote_profiles_and_aliases_resolve(backend: Backend) {
    let Some(peers) = Peers::spawn(backend, 2).await else { return };
    let (hs1, hs2) = (peers.get(0), peers.get(1));
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let (status, body) = hs1
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice.user_id)),
            Some(&alice.token),
            json!({"displayname": "Alice of hs1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) =
        hs2.get(&format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id)), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["displayname"], "Alice of hs1");
    let (status, body) =
        hs2.get(&format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice.user_id)), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["displayname"], "Alice of hs1");
    let nobody = format!("@nobody:{}", name(&peers, 0));
    let result = hs2.get(&format!("/_matrix/client/v3/profile/{}", enc(&nobody)), Some(&bob.token)).await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    let room_id = create_room(hs1, &alice, json!({"room_alias_name": "lobby"})).await;
    let alias = format!("#lobby:{}", name(&peers, 0));
    let (status, body) = hs2.get(&format!("/_matrix/client/v3/directory/room/{}", enc(&alias)), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room_id);
    assert!(body["servers"].as_array().expect("servers").contains(&json!(name(&peers, 0))), "{body}");
    let missing = format!("#nowhere:{}", name(&peers, 0));
    let result = hs2.get(&format!("/_matrix/client/v3/directory/room/{}", enc(&missing)), Some(&bob.token)).await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    peers.finish().await;
}

/// bob on hs2 sees alice's device keys on hs1 and claims one of her one-time keys, each
/// exactly once.
async fn remote_device_keys_are_queried_and_claimed(backend: Backend) {
    let Some(peers) = Peers::spawn(backend, 2).await else { return };
    let (hs1, hs2) = (peers.get(0), peers.get(1));
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let signer = upload_device_keys(hs1, &alice).await;
    let (status, body) = upload(hs1, &alice, json!({"one_time_keys": one_time_keys(&alice, &signer, "A", 2)})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let answer = query(hs2, &bob, &[&alice.user_id]).await;
    let keys = &answer["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(keys["user_id"], alice.user_id.as_str(), "{answer}");
    assert_eq!(keys["keys"][format!("ed25519:{}", alice.device_id)], signer.public, "{answer}");
    assert!(answer["failures"].as_object().is_none_or(serde_json::Map::is_empty), "{answer}");

    let first = claim(hs2, &bob, &alice).await.expect("a one-time key");
    let second = claim(hs2, &bob, &alice).await.expect("another one-time key");
    assert_ne!(first.0, second.0, "each key is claimed once");
    assert_eq!(claim(hs2, &bob, &alice).await, None, "two keys were uploaded");
    peers.finish().await;
}

async fn send_to_device(s: &TestServer, from: &TestUser, txn: &str, messages: Value) {
    let (status, body) = s
        .put(&format!("/_matrix/client/v3/sendToDevice/m.test/{txn}"), Some(&from.token), json!({"messages": messages}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Waits until `user`'s sync holds to-device messages, returns them, and acknowledges them
/// (with a sync from the token that carried them), as a client does.
async fn to_device_of(s: &TestServer, user: &TestUser, secs: u64) -> Vec<Value> {
    let (events, next_batch) = eventually(secs, "to-device messages", || async {
        let resp = sync(s, user, "timeout=0").await;
        let events = resp["to_device"]["events"].as_array().cloned().unwrap_or_default();
        (!events.is_empty()).then(|| (events, resp["next_batch"].as_str().expect("next_batch").to_owned()))
    })
    .await;
    sync(s, user, &format!("since={next_batch}&timeout=0")).await;
    events
}

/// A to-device message from hs1 reaches users on hs2 and hs3 (every device, and one named
/// device), once, with its sender; the transaction ID makes a retry a no-op.
async fn to_device_messages_cross_three_servers(backend: Backend) {
    let Some(peers) = Peers::spawn(backend, 3).await else { return };
    let (hs1, hs2, hs3) = (peers.get(0), peers.get(1), peers.get(2));
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let bob2 = hs2.login("bob").await;
    let carol = hs3.register("carol").await;
    let messages = json!({
        &bob.user_id: {"*": {"hello": "bob"}},
        &carol.user_id: {&carol.device_id: {"hello": "carol"}},
    });
    send_to_device(hs1, &alice, "t1", messages.clone()).await;
    send_to_device(hs1, &alice, "t1", messages).await;

    for (server, user, hello) in [(hs2, &bob, "bob"), (hs2, &bob2, "bob"), (hs3, &carol, "carol")] {
        let events = to_device_of(server, user, 30).await;
        assert_eq!(events.len(), 1, "once: {events:?}");
        assert_eq!(events[0]["sender"], alice.user_id.as_str());
        assert_eq!(events[0]["type"], "m.test");
        assert_eq!(events[0]["content"]["hello"], hello);
    }
    peers.finish().await;
}

/// Two servers; alice on hs1 got a first message from bob on hs2 (so hs2 knows hs1 and its
/// keys), then hs1 stopped, bob sent `{"n": 1}` to alice, and hs2's delivery of it failed
/// at least once (its queue to hs1 is backing off). Returns hs1's database, to start it again.
async fn hs1_down_with_a_message_queued(
    backend: Backend,
) -> Option<(Peers, TestUser, TestUser, crate::harness::TestDb)> {
    let mut peers = Peers::spawn(backend, 2).await?;
    let alice = peers.get(0).register("alice").await;
    let bob = peers.get(1).register("bob").await;
    send_to_device(peers.get(1), &bob, "before", json!({&alice.user_id: {"*": {"n": 0}}})).await;
    assert_eq!(to_device_of(peers.get(0), &alice, 30).await.len(), 1);

    let hs1_db = peers.stop(0).await;
    send_to_device(peers.get(1), &bob, "while-down", json!({&alice.user_id: {"*": {"n": 1}}})).await;
    let hs2_storage = peers.get(1).services().storage.clone();
    let hs1_name = peers.names[0].clone();
    eventually(30, "a failed attempt", || {
        let storage = hs2_storage.clone();
        let name = hs1_name.clone();
        async move { (storage.federation.backoff(&name).await.expect("backoff").failures > 0).then_some(()) }
    })
    .await;
    Some((peers, alice, bob, hs1_db))
}

/// hs2 queues a message while hs1 is down, and is itself restarted before hs1 returns: the
/// message survives both and arrives once.
async fn the_queue_survives_restarts_of_sender_and_receiver(backend: Backend) {
    let Some((mut peers, alice, bob, hs1_db)) = hs1_down_with_a_message_queued(backend).await else { return };
    peers.restart(1).await;
    peers.start(0, hs1_db).await;

    let events = to_device_of(peers.get(0), &alice, 60).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["content"]["n"], 1);
    assert_eq!(events[0]["sender"], bob.user_id.as_str());
    peers.finish().await;
}

/// hs2's queue to hs1 is backing off (set to an hour here) when hs1 comes back; the first
/// signed request hs1 makes to hs2 shows it is up, and hs2 sends at once.
async fn a_destination_that_calls_back_is_retried_at_once(backend: Backend) {
    let Some((mut peers, alice, bob, hs1_db)) = hs1_down_with_a_message_queued(backend).await else { return };
    let in_an_hour =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_millis() + 3_600_000;
    let hs2_db = peers.get(1).db.as_ref().expect("db");
    hs2_db.execute(&format!("UPDATE federation_destinations SET next_attempt_at = {in_an_hour}")).await;
    peers.start(0, hs1_db).await;

    // hs1 speaks to hs2 (a to-device message of its own), and hs2 retries its queue.
    send_to_device(peers.get(0), &alice, "hello", json!({&bob.user_id: {"*": {"n": 2}}})).await;
    let events = to_device_of(peers.get(0), &alice, 30).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["content"]["n"], 1);
    peers.finish().await;
}
