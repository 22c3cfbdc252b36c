//! Interop with a real Synapse: the two servers fetch each other's keys, accept each other's
//! X-Matrix-signed requests, and carry profiles, room aliases, notary answers, device and
//! cross-signing keys, key claims and to-device messages both ways; users join rooms on the
//! other server and share messages, typing, receipts and device lists there; each server
//! also serves as the other's trusted key server for a third server.
//!
//! The first test to need Synapse installs the pinned release from PyPI into a virtualenv
//! under the target directory, through `tests/synapse/install.sh` (once per run; a later run
//! reuses the venv). Each test then starts its own Synapse (SQLite, one HTTPS listener with a
//! self-signed certificate, server name `127.0.0.1:<port>`) next to a Parley whose server name
//! is `127.0.0.1:<federation port>`: IP literals, so that each finds the other with no DNS, no
//! SNI and no override map.
//!
//! `TEST_SKIP_SYNAPSE=1` skips these tests with a visible "skipped:" line;
//! `TEST_REQUIRE_SYNAPSE=1` (as CI sets) forbids skipping. A failed install always fails.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use parley::config::FederationConfig;
use reqwest::{Method, StatusCode};
use ruma::serde::{Base64, base64::Standard};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::OnceCell};

use crate::{
    e2ee_util::{Signer, cross_signing_key, device_keys, fallback_key, one_time_keys, query, upload_device_keys},
    harness::{Backend, PASSWORD, TestDb, TestServer, TestUser, enc, skipped},
    room_util::{bodies, create_room, room_path, send_text, timeline},
    sync::sync,
};

/// Each server fetches the other's keys and verifies its signed requests (profile queries,
/// found and not found), and relays the other's keys as a notary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_and_parley_fetch_keys_and_verify_requests_both_ways() {
    let Some(pair) = Pair::start().await else { return };
    let (synapse, parley) = (&pair.synapse, &pair.parley);
    let alice = parley.register("alice").await;
    let bob = synapse.register("bob").await;
    set_displayname(parley, &alice, "Alice on Parley").await;
    set_displayname(synapse, &bob, "Bob on Synapse").await;

    // a. Synapse asks Parley for alice's profile with a signed request; Parley verifies it,
    // which means it fetched Synapse's key (and stored it).
    let (status, body) = synapse.get(&format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id)), &bob.token).await;
    assert_eq!(status, StatusCode::OK, "Synapse reads alice's profile from Parley: {body}{}", synapse.log_tail());
    assert_eq!(body["displayname"], "Alice on Parley", "{body}");
    let synapse_keys = synapse.own_keys().await;
    let synapse_name: ruma::OwnedServerName = synapse.server_name.parse().expect("server name");
    let stored = parley.services().storage.server_keys.remote_keys(&synapse_name).await.expect("stored keys");
    for (key_id, key) in synapse_keys["verify_keys"].as_object().expect("verify_keys") {
        let found = stored.iter().find(|k| &k.key_id == key_id);
        assert_eq!(
            found.map(|k| k.public_key.as_str()),
            key["key"].as_str(),
            "Parley stored Synapse's key {key_id}: {stored:?}"
        );
    }

    // b. Parley asks Synapse for bob's profile: Synapse verifies Parley's signature, having
    // fetched Parley's keys.
    let (status, body) =
        parley.get(&format!("/_matrix/client/v3/profile/{}", enc(&bob.user_id)), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "Parley reads bob's profile from Synapse: {body}{}", synapse.log_tail());
    assert_eq!(body["displayname"], "Bob on Synapse", "{body}");
    // An unknown user is a 404 that Synapse sends and Parley passes on.
    let nobody = format!("@nobody:{}", synapse.server_name);
    let (status, body) = parley.get(&format!("/_matrix/client/v3/profile/{}", enc(&nobody)), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_NOT_FOUND", "{body}");
    // And the other way.
    let nobody = format!("@nobody:{}", parley.server_name);
    let (status, body) = synapse.get(&format!("/_matrix/client/v3/profile/{}", enc(&nobody)), &bob.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_NOT_FOUND", "{body}");

    // c. Each is the other's notary: it relays the other's keys, signed by both.
    let parley_keys = parley.get("/_matrix/key/v2/server", None).await.1;
    let (status, body) = parley.get(&format!("/_matrix/key/v2/query/{}", enc(&synapse.server_name)), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_relayed(&body, &synapse_keys, &synapse.server_name, &parley.server_name);
    let (status, body) = synapse.get(&format!("/_matrix/key/v2/query/{}", enc(&parley.server_name)), "").await;
    assert_eq!(status, StatusCode::OK, "{body}{}", synapse.log_tail());
    assert_relayed(&body, &parley_keys, &parley.server_name, &synapse.server_name);
    pair.finish().await;
}

/// Room aliases of each server resolve on the other through directory queries; an unknown
/// one is a 404 on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_and_parley_resolve_each_others_room_aliases() {
    let Some(pair) = Pair::start().await else { return };
    let (synapse, parley) = (&pair.synapse, &pair.parley);
    let alice = parley.register("alice").await;
    let bob = synapse.register("bob").await;
    let on_parley = create_room(parley, &alice, json!({"room_alias_name": "lobby"})).await;
    let (status, body) =
        synapse.post("/_matrix/client/v3/createRoom", &bob.token, json!({"room_alias_name": "hall"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let on_synapse = body["room_id"].as_str().expect("room_id").to_owned();
    let directory = |alias: &str| format!("/_matrix/client/v3/directory/room/{}", enc(alias));

    let (status, body) = synapse.get(&directory(&format!("#lobby:{}", parley.server_name)), &bob.token).await;
    assert_eq!(status, StatusCode::OK, "Synapse resolves a Parley alias: {body}{}", synapse.log_tail());
    assert_eq!(body["room_id"], on_parley, "{body}");
    assert!(body["servers"].as_array().is_some_and(|s| s.contains(&json!(parley.server_name))), "{body}");
    let (status, body) = parley.get(&directory(&format!("#hall:{}", synapse.server_name)), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "Parley resolves a Synapse alias: {body}{}", synapse.log_tail());
    assert_eq!(body["room_id"], on_synapse, "{body}");
    assert!(body["servers"].as_array().is_some_and(|s| s.contains(&json!(synapse.server_name))), "{body}");

    let (status, body) = synapse.get(&directory(&format!("#nowhere:{}", parley.server_name)), &bob.token).await;
    assert_eq!((status, &body["errcode"]), (StatusCode::NOT_FOUND, &json!("M_NOT_FOUND")), "{body}");
    let (status, body) = parley.get(&directory(&format!("#nowhere:{}", synapse.server_name)), Some(&alice.token)).await;
    assert_eq!((status, &body["errcode"]), (StatusCode::NOT_FOUND, &json!("M_NOT_FOUND")), "{body}");
    pair.finish().await;
}

/// Device keys (with cross-signing keys) are queried and one-time and fallback keys claimed
/// across the two servers, and to-device messages cross in `/send` transactions, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_and_parley_exchange_device_keys_and_to_device_messages() {
    let Some(pair) = Pair::start().await else { return };
    let (synapse, parley) = (&pair.synapse, &pair.parley);
    let alice = parley.register("alice").await;
    let bob = synapse.register("bob").await;

    // Device keys, one-time and fallback keys on both sides, each queried and claimed from the
    // other.
    let alice_signer = upload_device_keys(parley, &alice).await;
    let body = json!({
        "one_time_keys": one_time_keys(&alice, &alice_signer, "A", 1),
        "fallback_keys": fallback_key(&alice, &alice_signer, "AF"),
    });
    assert_eq!(parley.post("/_matrix/client/v3/keys/upload", Some(&alice.token), body).await.0, StatusCode::OK);
    let bob_signer = Signer::device(&bob.device_id);
    let body = json!({
        "device_keys": device_keys(&bob, &bob_signer),
        "one_time_keys": one_time_keys(&bob, &bob_signer, "B", 1),
        "fallback_keys": fallback_key(&bob, &bob_signer, "BF"),
    });
    let (status, body) = synapse.post("/_matrix/client/v3/keys/upload", &bob.token, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Cross-signing keys (master, self-signing, user-signing), first upload: no UIA on either.
    let cross_signing = |user: &TestUser| {
        let (master, self_signing, user_signing) =
            (Signer::cross_signing(), Signer::cross_signing(), Signer::cross_signing());
        let body = json!({
            "master_key": cross_signing_key(&user.user_id, "master", &master, None),
            "self_signing_key": cross_signing_key(&user.user_id, "self_signing", &self_signing, Some(&master)),
            "user_signing_key": cross_signing_key(&user.user_id, "user_signing", &user_signing, Some(&master)),
        });
        (body, master, self_signing)
    };
    const SIGNING_UPLOAD: &str = "/_matrix/client/v3/keys/device_signing/upload";
    let (body, alice_master, alice_self_signing) = cross_signing(&alice);
    let (status, body) = parley.post(SIGNING_UPLOAD, Some(&alice.token), body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (body, bob_master, bob_self_signing) = cross_signing(&bob);
    let (status, body) = synapse.post(SIGNING_UPLOAD, &bob.token, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let query = |user: &str| json!({"device_keys": {user: []}});
    let (status, answer) = synapse.post("/_matrix/client/v3/keys/query", &bob.token, query(&alice.user_id)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let keys = &answer["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(
        keys["keys"][format!("ed25519:{}", alice.device_id)],
        alice_signer.public,
        "Synapse queries alice's keys on Parley: {answer}{}",
        synapse.log_tail()
    );
    assert_cross_signing(&answer, &alice.user_id, &alice_master, &alice_self_signing);
    let (status, answer) = parley.post("/_matrix/client/v3/keys/query", Some(&alice.token), query(&bob.user_id)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let keys = &answer["device_keys"][&bob.user_id][&bob.device_id];
    assert_eq!(
        keys["keys"][format!("ed25519:{}", bob.device_id)],
        bob_signer.public,
        "Parley queries bob's keys on Synapse: {answer}{}",
        synapse.log_tail()
    );
    assert_cross_signing(&answer, &bob.user_id, &bob_master, &bob_self_signing);

    // The one-time key first, then the fallback key, which is not used up.
    let claim = |user: &TestUser| json!({"one_time_keys": {&user.user_id: {&user.device_id: "signed_curve25519"}}});
    for expected in ["signed_curve25519:A0", "signed_curve25519:AF", "signed_curve25519:AF"] {
        let (status, answer) = synapse.post("/_matrix/client/v3/keys/claim", &bob.token, claim(&alice)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let claimed = &answer["one_time_keys"][&alice.user_id][&alice.device_id];
        assert!(claimed.get(expected).is_some(), "Synapse claims alice's {expected}: {answer}");
    }
    for expected in ["signed_curve25519:B0", "signed_curve25519:BF", "signed_curve25519:BF"] {
        let (status, answer) = parley.post("/_matrix/client/v3/keys/claim", Some(&alice.token), claim(&bob)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let claimed = &answer["one_time_keys"][&bob.user_id][&bob.device_id];
        assert!(claimed.get(expected).is_some(), "Parley claims bob's {expected}: {answer}");
    }

    // To-device messages, each in a /send transaction signed by its sender's server: one to a
    // named device and one to every device ("*"), in two transactions each way.
    let since = sync(parley, &alice, "timeout=0").await["next_batch"].as_str().expect("next_batch").to_owned();
    for (txn, device) in [("s1", alice.device_id.as_str()), ("s2", "*")] {
        let send = json!({"messages": {&alice.user_id: {device: {"to": device}}}});
        let (status, body) =
            synapse.put(&format!("/_matrix/client/v3/sendToDevice/m.test/{txn}"), &bob.token, send).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let events = to_device_on_parley(parley, &alice, since, 2, 60).await;
    assert_to_device(&events, &bob.user_id, &[alice.device_id.as_str(), "*"]);

    let since = synapse.sync(&bob, None).await["next_batch"].as_str().expect("next_batch").to_owned();
    for (txn, device) in [("p1", bob.device_id.as_str()), ("p2", "*")] {
        let send = json!({"messages": {&bob.user_id: {device: {"to": device}}}});
        let (status, body) =
            parley.put(&format!("/_matrix/client/v3/sendToDevice/m.test/{txn}"), Some(&alice.token), send).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let events = synapse.to_device_of(&bob, since, 2, 60).await;
    assert_to_device(&events, &alice.user_id, &[bob.device_id.as_str(), "*"]);
    pair.finish().await;
}

/// A Synapse user joins a public room on Parley, and a Parley user one on Synapse (make_join
/// and send_join, by alias); in each room messages cross both ways, and both servers agree
/// on the members and on the order of the messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_and_parley_join_each_others_rooms() {
    let Some(pair) = Pair::start().await else { return };
    let (synapse, parley) = (&pair.synapse, &pair.parley);
    let alice = parley.register("alice").await;
    let bob = synapse.register("bob").await;
    let public = |alias: &str| json!({"preset": "public_chat", "room_alias_name": alias});

    // A room on Parley, joined from Synapse.
    let on_parley = create_room(parley, &alice, public("lobby")).await;
    let alias = format!("#lobby:{}", parley.server_name);
    let (status, body) = synapse.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), &bob.token, json!({})).await;
    assert_eq!(status, StatusCode::OK, "bob on Synapse joins {alias}: {body}{}", synapse.log_tail());
    assert_eq!(body["room_id"], on_parley, "{body}");
    // A room on Synapse, joined from Parley.
    let (status, body) = synapse.post("/_matrix/client/v3/createRoom", &bob.token, public("hall")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let on_synapse = body["room_id"].as_str().expect("room_id").to_owned();
    let alias = format!("#hall:{}", synapse.server_name);
    let (status, body) =
        parley.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), Some(&alice.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "alice on Parley joins {alias}: {body}{}", synapse.log_tail());
    assert_eq!(body["room_id"], on_synapse, "{body}");

    for room_id in [&on_parley, &on_synapse] {
        for (who, members) in [
            ("Parley", parley.get(&room_path(room_id, "joined_members"), Some(&alice.token)).await),
            ("Synapse", synapse.get(&room_path(room_id, "joined_members"), &bob.token).await),
        ] {
            let (status, members) = members;
            assert_eq!(status, StatusCode::OK, "{members}");
            for user in [&alice.user_id, &bob.user_id] {
                assert!(members["joined"][user].is_object(), "{who} has {user} in {room_id}: {members}");
            }
        }

        // Messages both ways, each after the other arrived: both servers keep them in order.
        let parley_says = format!("from Parley in {room_id}");
        let synapse_says = format!("from Synapse in {room_id}");
        send_text(parley, &alice, room_id, &parley_says).await;
        synapse.wait_for_bodies(&bob, room_id, &[&parley_says]).await;
        let (status, body) = synapse
            .put(
                &room_path(room_id, "send/m.room.message/s1"),
                &bob.token,
                json!({"msgtype": "m.text", "body": synapse_says}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let want = [parley_says.as_str(), synapse_says.as_str()];
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = bodies(&timeline(parley, &alice, room_id).await);
            if got == want {
                break;
            }
            assert!(Instant::now() < deadline, "Parley's timeline of {room_id}: {got:?}{}", synapse.log_tail());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        synapse.wait_for_bodies(&bob, room_id, &want).await;
    }
    pair.finish().await;
}

/// In a room on Parley that a Synapse user joined, typing notifications, read receipts and
/// device list changes cross both ways, and each server's key query then finds the other's
/// new device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_and_parley_share_typing_receipts_and_device_lists() {
    let Some(pair) = Pair::start().await else { return };
    let (synapse, parley) = (&pair.synapse, &pair.parley);
    let alice = parley.register("alice").await;
    let bob = synapse.register("bob").await;
    let room_id = create_room(parley, &alice, json!({"preset": "public_chat", "room_alias_name": "lobby"})).await;
    let alias = format!("#lobby:{}", parley.server_name);
    let (status, body) = synapse.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), &bob.token, json!({})).await;
    assert_eq!(status, StatusCode::OK, "bob on Synapse joins {alias}: {body}{}", synapse.log_tail());
    let from_alice = send_text(parley, &alice, &room_id, "from alice").await;
    synapse.wait_for_bodies(&bob, &room_id, &["from alice"]).await;
    let (status, body) = synapse
        .put(
            &room_path(&room_id, "send/m.room.message/s1"),
            &bob.token,
            json!({"msgtype": "m.text", "body": "from bob"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let from_bob = body["event_id"].as_str().expect("event_id").to_owned();
    parley_sync_until(parley, &alice, None, "bob's message on Parley", |resp| {
        let events = resp["rooms"]["join"][&room_id]["timeline"]["events"].as_array()?;
        events.iter().any(|e| e["event_id"] == from_bob).then_some(())
    })
    .await;
    let ephemeral = |resp: &Value, kind: &str| -> Vec<Value> {
        let events = resp["rooms"]["join"][&room_id]["ephemeral"]["events"].as_array().cloned().unwrap_or_default();
        events.into_iter().filter(|e| e["type"] == kind).collect()
    };
    let typing = |user: &TestUser| format!("typing/{}", enc(&user.user_id));

    // Typing, both ways.
    let (status, body) =
        synapse.put(&room_path(&room_id, &typing(&bob)), &bob.token, json!({"typing": true, "timeout": 30000})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    parley_sync_until(parley, &alice, None, "bob typing on Parley", |resp| {
        ephemeral(resp, "m.typing").iter().any(|e| e["content"]["user_ids"] == json!([bob.user_id])).then_some(())
    })
    .await;
    let (status, body) = parley
        .put(&room_path(&room_id, &typing(&alice)), Some(&alice.token), json!({"typing": true, "timeout": 30000}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    synapse
        .sync_until(&bob, None, "alice typing on Synapse", |resp| {
            let typing = ephemeral(resp, "m.typing");
            let listed =
                |e: &Value| e["content"]["user_ids"].as_array().is_some_and(|u| u.contains(&json!(alice.user_id)));
            typing.iter().any(listed).then_some(())
        })
        .await;

    // Read receipts, both ways: each reads the other's message.
    let receipt = |event_id: &str| room_path(&room_id, &format!("receipt/m.read/{}", enc(event_id)));
    let (status, body) = synapse.post(&receipt(&from_alice), &bob.token, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    parley_sync_until(parley, &alice, None, "bob's receipt on Parley", |resp| {
        let receipts = ephemeral(resp, "m.receipt");
        receipts.iter().any(|e| e["content"][&from_alice]["m.read"][&bob.user_id].is_object()).then_some(())
    })
    .await;
    let (status, body) = parley.post(&receipt(&from_bob), Some(&alice.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    synapse
        .sync_until(&bob, None, "alice's receipt on Synapse", |resp| {
            let receipts = ephemeral(resp, "m.receipt");
            receipts.iter().any(|e| e["content"][&from_bob]["m.read"][&alice.user_id].is_object()).then_some(())
        })
        .await;

    // Device lists, both ways: a new device with keys is announced, and then found by a key
    // query (which may now be answered from the querying server's copy of the list).
    let changed = |resp: &Value, user: &str| {
        resp["device_lists"]["changed"].as_array().is_some_and(|c| c.contains(&json!(user))).then_some(())
    };
    let since = sync(parley, &alice, "timeout=0").await["next_batch"].as_str().expect("next_batch").to_owned();
    let bob2 = synapse.login("bob").await;
    let bob2_signer = Signer::device(&bob2.device_id);
    let (status, body) = synapse
        .post("/_matrix/client/v3/keys/upload", &bob2.token, json!({"device_keys": device_keys(&bob2, &bob2_signer)}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    parley_sync_until(parley, &alice, Some(since), "bob's new device announced on Parley", |resp| {
        changed(resp, &bob.user_id)
    })
    .await;
    let answer = query(parley, &alice, &[&bob.user_id]).await;
    let keys = &answer["device_keys"][&bob.user_id][&bob2.device_id];
    assert_eq!(keys["keys"][format!("ed25519:{}", bob2.device_id)], bob2_signer.public, "{answer}");

    let since = synapse.sync(&bob, None).await["next_batch"].as_str().expect("next_batch").to_owned();
    let alice2 = parley.login("alice").await;
    let alice2_signer = upload_device_keys(parley, &alice2).await;
    synapse
        .sync_until(&bob, Some(since), "alice's new device announced on Synapse", |resp| changed(resp, &alice.user_id))
        .await;
    let (status, answer) =
        synapse.post("/_matrix/client/v3/keys/query", &bob.token, json!({"device_keys": {&alice.user_id: []}})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let keys = &answer["device_keys"][&alice.user_id][&alice2.device_id];
    assert_eq!(
        keys["keys"][format!("ed25519:{}", alice2.device_id)],
        alice2_signer.public,
        "Synapse finds alice's new device: {answer}{}",
        synapse.log_tail()
    );
    assert!(answer["device_keys"][&alice.user_id][&alice.device_id].is_null(), "alice's first device has no keys");
    pair.finish().await;
}

/// Syncs `user` on Parley (from `since`, else initially each time) until `found` picks
/// something out of a response, for up to 60 seconds.
async fn parley_sync_until<T>(
    parley: &TestServer,
    user: &TestUser,
    mut since: Option<String>,
    what: &str,
    found: impl Fn(&Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let query = since.as_ref().map_or_else(|| "timeout=0".to_owned(), |s| format!("since={}&timeout=1000", enc(s)));
        let resp = sync(parley, user, &query).await;
        if let Some(value) = found(&resp) {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: last sync {resp}");
        if since.is_some() {
            since = resp["next_batch"].as_str().map(str::to_owned);
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Synapse trusts a Parley as its notary (`trusted_key_servers`, with the notary's key): it
/// verifies a request from a second Parley that it may not reach itself (on 127.0.0.2, which
/// its federation blocks) with the keys the notary relays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_gets_keys_through_a_parley_notary() {
    let Some(python) = synapse_python().await else { return };
    let notary = start_parley("127.0.0.1", |_| {}).await;
    let hidden = start_parley("127.0.0.2", |_| {}).await;
    let (status, notary_keys) = notary.get("/_matrix/key/v2/server", None).await;
    assert_eq!(status, StatusCode::OK, "{notary_keys}");
    let options = SynapseOptions {
        trusted_key_server: Some((notary.server_name.clone(), notary_keys["verify_keys"].clone())),
        blocked: vec!["127.0.0.2/32"],
    };
    let synapse = Synapse::start(&python, options).await;
    let bob = synapse.register("bob").await;
    set_displayname(&synapse, &bob, "Bob on Synapse").await;
    let carol = hidden.register("carol").await;

    // Synapse cannot reach the hidden server: what follows cannot be a direct key fetch.
    let (status, body) = synapse.get(&format!("/_matrix/client/v3/profile/{}", enc(&carol.user_id)), &bob.token).await;
    assert_ne!(status, StatusCode::OK, "Synapse was to be kept from {}: {body}", hidden.server_name);

    let (status, body) =
        hidden.get(&format!("/_matrix/client/v3/profile/{}", enc(&bob.user_id)), Some(&carol.token)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "Synapse verifies {}'s request with keys relayed by {}: {body}{}",
        hidden.server_name,
        notary.server_name,
        synapse.log_tail()
    );
    assert_eq!(body["displayname"], "Bob on Synapse", "{body}");
    drop(synapse);
    notary.finish().await;
    hidden.finish().await;
}

/// A Parley trusts Synapse as its notary (`trusted_key_servers`): it verifies a request from
/// a second Parley that it may not reach itself (on 127.0.0.2, outside its allowlist) with the
/// keys Synapse relays, and keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parley_gets_keys_through_a_synapse_notary() {
    let Some(python) = synapse_python().await else { return };
    let synapse = Synapse::start(&python, SynapseOptions::default()).await;
    let parley = start_parley("127.0.0.1", |federation| {
        federation.trusted_key_servers = vec![synapse.server_name.parse().expect("server name")];
        federation.ip_range_allowlist = vec!["127.0.0.1/32".parse().expect("net")];
    })
    .await;
    let hidden = start_parley("127.0.0.2", |_| {}).await;
    let alice = parley.register("alice").await;
    set_displayname(&parley, &alice, "Alice on Parley").await;
    let carol = hidden.register("carol").await;

    // Parley cannot reach the hidden server: what follows cannot be a direct key fetch.
    let (status, body) =
        parley.get(&format!("/_matrix/client/v3/profile/{}", enc(&carol.user_id)), Some(&alice.token)).await;
    assert_ne!(status, StatusCode::OK, "Parley was to be kept from {}: {body}", hidden.server_name);

    let (status, body) =
        hidden.get(&format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id)), Some(&carol.token)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "Parley verifies {}'s request with keys relayed by Synapse: {body}{}",
        hidden.server_name,
        synapse.log_tail()
    );
    assert_eq!(body["displayname"], "Alice on Parley", "{body}");
    let hidden_name: ruma::OwnedServerName = hidden.server_name.parse().expect("server name");
    let stored = parley.services().storage.server_keys.remote_keys(&hidden_name).await.expect("stored keys");
    let (_, hidden_keys) = hidden.get("/_matrix/key/v2/server", None).await;
    for (key_id, key) in hidden_keys["verify_keys"].as_object().expect("verify_keys") {
        let found = stored.iter().find(|k| &k.key_id == key_id).map(|k| k.public_key.as_str());
        assert_eq!(found, key["key"].as_str(), "Parley stored {key_id} of {hidden_name}: {stored:?}");
    }
    drop(synapse);
    parley.finish().await;
    hidden.finish().await;
}

/// Sets `user`'s display name on whichever server it is.
async fn set_displayname(server: &impl ClientApi, user: &TestUser, name: &str) {
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&user.user_id));
    let (status, body) = server.put_json(&path, &user.token, json!({"displayname": name})).await;
    assert_eq!(status, StatusCode::OK, "set {}'s display name: {body}", user.user_id);
}

/// A PUT to either server's client API.
trait ClientApi {
    async fn put_json(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value);
}

impl ClientApi for TestServer {
    async fn put_json(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.put(path, Some(token), body).await
    }
}

impl ClientApi for Synapse {
    async fn put_json(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.put(path, token, body).await
    }
}

/// The to-device messages `user` receives on Parley after `since`, waiting up to `secs`
/// seconds for at least `n` to arrive.
async fn to_device_on_parley(
    parley: &TestServer,
    user: &TestUser,
    mut since: String,
    n: usize,
    secs: u64,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut events = Vec::new();
    loop {
        let resp = sync(parley, user, &format!("since={}&timeout=1000", enc(&since))).await;
        events.extend(resp["to_device"]["events"].as_array().cloned().unwrap_or_default());
        if events.len() >= n {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} to-device messages for {} on Parley: {events:?}",
            events.len(),
            user.user_id
        );
        since = resp["next_batch"].as_str().expect("next_batch").to_owned();
    }
}

/// `events` are exactly the `m.test` to-device messages from `sender` whose content names
/// each of `to` (in any order).
#[track_caller]
fn assert_to_device(events: &[Value], sender: &str, to: &[&str]) {
    let mut got: Vec<&str> = events.iter().filter_map(|e| e["content"]["to"].as_str()).collect();
    got.sort_unstable();
    let mut expected = to.to_vec();
    expected.sort_unstable();
    assert_eq!(got, expected, "each message once: {events:?}");
    for event in events {
        assert_eq!(event["sender"], sender, "{event}");
        assert_eq!(event["type"], "m.test", "{event}");
    }
}

/// A key query's answer holds `user_id`'s master and self-signing keys, and not the
/// user-signing key, which only its owner sees.
#[track_caller]
fn assert_cross_signing(answer: &Value, user_id: &str, master: &Signer, self_signing: &Signer) {
    assert_eq!(answer["master_keys"][user_id]["keys"][master.key_id()], master.public, "master key: {answer}");
    assert_eq!(
        answer["self_signing_keys"][user_id]["keys"][self_signing.key_id()],
        self_signing.public,
        "self-signing key: {answer}"
    );
    assert!(answer["user_signing_keys"].get(user_id).is_none(), "user-signing key: {answer}");
}

/// `relayed` (a notary's answer) holds `keys` of `server`, signed by it and by `notary`.
#[track_caller]
fn assert_relayed(relayed: &Value, keys: &Value, server: &str, notary: &str) {
    let answer = relayed["server_keys"]
        .as_array()
        .and_then(|all| all.iter().find(|k| k["server_name"] == server))
        .unwrap_or_else(|| panic!("{notary} relays no keys of {server}: {relayed}"));
    let verify_keys = keys["verify_keys"].as_object().filter(|k| !k.is_empty()).expect("own verify keys");
    for (key_id, key) in verify_keys {
        assert_eq!(answer["verify_keys"][key_id], *key, "{notary} relays {server}'s {key_id}: {answer}");
    }
    assert!(answer["signatures"][server].is_object(), "signed by {server}: {answer}");
    assert!(answer["signatures"][notary].is_object(), "signed by the notary {notary}: {answer}");
}

/// A Synapse and a Parley that federate.
struct Pair {
    synapse: Synapse,
    parley: TestServer,
}

impl Pair {
    /// Both servers, or `None` when Synapse tests are skipped.
    async fn start() -> Option<Self> {
        let python = synapse_python().await?;
        let synapse = Synapse::start(&python, SynapseOptions::default()).await;
        let parley = start_parley("127.0.0.1", |_| {}).await;
        Some(Self { synapse, parley })
    }

    async fn finish(self) {
        self.parley.finish().await;
        drop(self.synapse);
    }
}

/// A Parley (SQLite) whose federation listener is on `ip` (a loopback address), named by it:
/// `<ip>:<port>`. It reaches other servers on loopback and does not check their (self-signed)
/// certificates; `adjust` changes the rest of its federation config.
async fn start_parley(ip: &str, adjust: impl FnOnce(&mut FederationConfig)) -> TestServer {
    let federation = TcpListener::bind((ip, 0)).await.expect("bind federation");
    let name = federation.local_addr().expect("addr").to_string();
    let db = TestDb::create(Backend::Sqlite).await.expect("SQLite database");
    TestServer::start_federated_on(db, Some(federation), |config| {
        config.server_name = name.parse().expect("server name");
        let federation = &mut config.federation;
        federation.ip_range_allowlist = vec!["127.0.0.0/8".parse().expect("net")];
        federation.verify_certificates = false;
        federation.request_timeout_secs = 30;
        adjust(federation);
    })
    .await
}

/// The venv's Python with Synapse installed, installing it on first use; `None` when the
/// Synapse tests are skipped.
async fn synapse_python() -> Option<PathBuf> {
    let flag = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
    if flag("TEST_SKIP_SYNAPSE") {
        assert!(!flag("TEST_REQUIRE_SYNAPSE"), "TEST_SKIP_SYNAPSE=1 and TEST_REQUIRE_SYNAPSE=1 contradict each other");
        skipped("TEST_SKIP_SYNAPSE=1");
        return None;
    }
    static PYTHON: OnceCell<Result<PathBuf, String>> = OnceCell::const_new();
    let python = PYTHON.get_or_init(install).await;
    match python {
        Ok(python) => Some(python.clone()),
        Err(e) => panic!("installing Synapse failed (set TEST_SKIP_SYNAPSE=1 to skip these tests):\n{e}"),
    }
}

/// Runs `tests/synapse/install.sh` with a venv in the target directory, next to `tmp/`.
async fn install() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let venv = target_tmp.parent().unwrap_or(target_tmp).join("synapse-venv");
    let started = Instant::now();
    let output = tokio::process::Command::new("bash")
        .arg(root.join("tests/synapse/install.sh"))
        .arg(&venv)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("running install.sh: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("install.sh exited with {}:\n{stdout}\n{stderr}", output.status));
    }
    let python = stdout.lines().last().map(PathBuf::from).filter(|p| p.exists());
    let python = python.ok_or_else(|| format!("install.sh printed no Python path:\n{stdout}\n{stderr}"))?;
    {
        use std::io::Write as _;
        // Seen outside the capture, so a slow first run explains itself.
        let _ = writeln!(std::io::stderr(), "synapse: ready at {} in {:.1?}", python.display(), started.elapsed());
    }
    Ok(python)
}

/// How a test's Synapse differs from the plain one.
#[derive(Default)]
struct SynapseOptions {
    /// A notary to ask for other servers' keys (`trusted_key_servers`): its server name and
    /// its `verify_keys` object, as its `/_matrix/key/v2/server` lists them.
    trusted_key_server: Option<(String, Value)>,
    /// Address ranges (CIDR) that Synapse's federation may not reach, besides the private ones.
    blocked: Vec<&'static str>,
}

/// A running Synapse, killed on drop; its log is shown when the test fails.
struct Synapse {
    /// `127.0.0.1:<port>`.
    server_name: String,
    /// `https://127.0.0.1:<port>`: client, federation and key APIs on one listener.
    base: String,
    http: reqwest::Client,
    child: std::process::Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Synapse {
    async fn start(python: &Path, options: SynapseOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port().await;
        let server_name = format!("127.0.0.1:{port}");

        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, certified.cert.pem()).expect("write certificate");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
        // Synapse's signing key file: algorithm, version, and the seed in unpadded base64.
        let seed: [u8; 32] = rand::random();
        let signing_key = dir.path().join("signing.key");
        let seed = Base64::<Standard, _>::new(seed.to_vec()).encode();
        std::fs::write(&signing_key, format!("ed25519 a_test {seed}\n")).expect("write signing key");

        let generous = json!({"per_second": 1000, "burst_count": 1000});
        let mut blocked = vec![
            "10.0.0.0/8",
            "100.64.0.0/10",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "::1/128",
            "fc00::/7",
            "fe80::/10",
        ];
        blocked.extend(options.blocked);
        let trusted_key_servers: Vec<Value> = options
            .trusted_key_server
            .iter()
            .map(|(name, verify_keys)| {
                let keys: serde_json::Map<String, Value> = verify_keys
                    .as_object()
                    .expect("verify_keys")
                    .iter()
                    .map(|(id, key)| (id.clone(), key["key"].clone()))
                    .collect();
                json!({"server_name": name, "verify_keys": keys})
            })
            .collect();
        // JSON is YAML.
        let config = json!({
            "server_name": server_name,
            "pid_file": dir.path().join("homeserver.pid"),
            "report_stats": false,
            "signing_key_path": signing_key,
            "tls_certificate_path": cert,
            "tls_private_key_path": key,
            "listeners": [{
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": true,
                "x_forwarded": false,
                "resources": [{"names": ["client", "federation", "keys"], "compress": false}],
            }],
            "database": {"name": "sqlite3", "args": {"database": dir.path().join("homeserver.db")}},
            "media_store_path": dir.path().join("media"),
            "macaroon_secret_key": "parley interop test",
            "form_secret": "parley interop test",
            "enable_registration": true,
            "enable_registration_without_verification": true,
            // Parley is on loopback, with a self-signed certificate; nobody else is asked for
            // keys.
            "federation_verify_certificates": false,
            "ip_range_whitelist": ["127.0.0.0/8"],
            // Synapse checks an IP-literal server name against the federation blocklist alone
            // (the allowlist above is not consulted there), so loopback must be off that list.
            // The other private ranges stay blocked.
            "federation_ip_range_blacklist": blocked,
            "trusted_key_servers": trusted_key_servers,
            "suppress_key_server_warning": true,
            "use_presence": false,
            "enable_metrics": false,
            "url_preview_enabled": false,
            "rc_message": generous,
            "rc_registration": generous,
            "rc_login": {"address": generous, "account": generous, "failed_attempts": generous},
            "rc_key_requests": generous,
            "rc_profile": generous,
            // Polling tests must not be answered the same cached sync for two minutes.
            "caches": {"sync_response_cache_duration": 0},
            "rc_federation": {"window_size": 1000, "sleep_limit": 1000, "sleep_delay": 1, "reject_limit": 1000, "concurrent": 100},
        });
        let config_path = dir.path().join("homeserver.yaml");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).expect("config")).expect("write config");

        let log = dir.path().join("homeserver.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = std::process::Command::new(python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start Synapse");
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let mut synapse = Self { server_name, base: format!("https://127.0.0.1:{port}"), http, child, log, _dir: dir };
        synapse.wait_until_up().await;
        synapse
    }

    async fn wait_until_up(&mut self) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Synapse exited with {status} while starting{}", self.log_tail());
            }
            let answer = self.http.get(format!("{}/_matrix/client/versions", self.base)).send().await;
            if answer.is_ok_and(|a| a.status().is_success()) {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "Synapse did not come up{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The end of Synapse's log, to append to a failure message: its last lines but for the
    /// access lines of the syncs a test polls with, and where the whole log is kept.
    fn log_tail(&self) -> String {
        const LINES: usize = 80;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains("\"GET /_matrix/client/v3/sync?")).collect();
        let tail = lines[lines.len().saturating_sub(LINES)..].join("\n");
        let kept =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("synapse-{}.log", self.server_name.replace(':', "-")));
        let kept = match std::fs::write(&kept, &log) {
            Ok(()) => format!("whole log in {}", kept.display()),
            Err(e) => format!("the whole log could not be kept: {e}"),
        };
        format!("\n--- Synapse log (last {LINES} lines but syncs; {kept}) ---\n{tail}\n---")
    }

    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("request to Synapse: {e}{}", self.log_tail()));
        let status = response.status();
        let text = response.text().await.expect("body");
        let json =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, json)
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, token, Some(body)).await
    }

    /// A sync of `user`, from `since` (long-polling a second) or initial.
    async fn sync(&self, user: &TestUser, since: Option<&str>) -> Value {
        let path = match since {
            Some(since) => format!("/_matrix/client/v3/sync?timeout=1000&since={}", enc(since)),
            None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
        };
        let (status, body) = self.get(&path, &user.token).await;
        assert_eq!(status, StatusCode::OK, "sync of {}: {body}{}", user.user_id, self.log_tail());
        body
    }

    /// The to-device messages `user` receives after `since`, waiting up to `secs` seconds for
    /// at least `n` to arrive.
    async fn to_device_of(&self, user: &TestUser, mut since: String, n: usize, secs: u64) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut events = Vec::new();
        loop {
            let body = self.sync(user, Some(&since)).await;
            events.extend(body["to_device"]["events"].as_array().cloned().unwrap_or_default());
            if events.len() >= n {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} to-device messages for {} on Synapse: {events:?}{}",
                events.len(),
                user.user_id,
                self.log_tail()
            );
            since = body["next_batch"].as_str().expect("next_batch").to_owned();
        }
    }

    /// Syncs `user` (from `since`, else initially each time) until `found` picks something out
    /// of a response, for up to 60 seconds.
    async fn sync_until<T>(
        &self,
        user: &TestUser,
        mut since: Option<String>,
        what: &str,
        found: impl Fn(&Value) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let resp = self.sync(user, since.as_deref()).await;
            if let Some(value) = found(&resp) {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: last sync {resp}{}", self.log_tail());
            if since.is_some() {
                since = resp["next_batch"].as_str().map(str::to_owned);
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Waits until `user` sees exactly these message bodies in `room_id`, oldest first.
    async fn wait_for_bodies(&self, user: &TestUser, room_id: &str, want: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let path = format!("{}?dir=f&limit=100", room_path(room_id, "messages"));
            let (status, body) = self.get(&path, &user.token).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let got = bodies(body["chunk"].as_array().map_or(&[], Vec::as_slice));
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "Synapse's timeline of {room_id}: {got:?}{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Synapse's own `/_matrix/key/v2/server` answer.
    async fn own_keys(&self) -> Value {
        let (status, body) = self.get("/_matrix/key/v2/server", "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["server_name"], self.server_name.as_str(), "{body}");
        body
    }

    /// Logs in again as `localpart`, making a new device.
    async fn login(&self, localpart: &str) -> TestUser {
        let (status, body) = self
            .post(
                "/_matrix/client/v3/login",
                "",
                json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart}, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {localpart}: {body}{}", self.log_tail());
        TestUser {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
            token: body["access_token"].as_str().expect("access_token").to_owned(),
            password: PASSWORD.to_owned(),
        }
    }

    /// Registers `localpart` through user-interactive auth (a session, then `m.login.dummy`).
    async fn register(&self, localpart: &str) -> TestUser {
        let mut request = json!({"username": localpart, "password": PASSWORD});
        let (status, body) = self.post("/_matrix/client/v3/register", "", request.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "register {localpart}: {body}");
        request["auth"] = json!({"type": "m.login.dummy", "session": body["session"]});
        let (status, body) = self.post("/_matrix/client/v3/register", "", request).await;
        assert_eq!(status, StatusCode::OK, "register {localpart}: {body}{}", self.log_tail());
        TestUser {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
            token: body["access_token"].as_str().expect("access_token").to_owned(),
            password: PASSWORD.to_owned(),
        }
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Shown with the failed test's output.
            eprintln!("{}", self.log_tail());
        }
        // Killed and reaped before its directory goes.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on 127.0.0.1 a moment ago.
async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}
