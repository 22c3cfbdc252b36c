//! A real client's crypto stack end to end: matrix-js-sdk with its Rust crypto holds an
//! encrypted DM through Parley (see `tests/clients/js/e2ee_dm.mjs`), and both users set up
//! cross-signing, one of them while the other already tracks their devices. Then the database
//! is checked: the room holds only `m.room.encrypted` ciphertext for the messages, never the
//! plaintext, and /messages serves the same ciphertext.

use ruma::RoomId;
use serde_json::Value;

use crate::{
    harness::{Backend, TestServer, both_backends, enc},
    real_client::run_js,
};

both_backends!(js_sdk_encrypted_dm);

const PLAINTEXTS: [&str; 3] = ["secret for bob", "secret reply for alice", "second secret"];

/// Messages the SDK logs as errors that have nothing to do with the server: matrix-js-sdk's
/// call (MatrixRTC) manager complains when a state event arrives for a room it has not set
/// up yet, which happens with any server when a room is created and synced at once.
const CLIENT_NOISE: [&str; 1] = ["MatrixRTCSessionManager Got room state event for unknown room"];

async fn js_sdk_encrypted_dm(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let result = run_js("e2ee_dm.mjs", &[&s.base]).await;
    let room = result["room"].as_str().expect("room");

    let bodies = |who: &str| -> Vec<String> {
        result[who]["decrypted"]
            .as_array()
            .expect("decrypted")
            .iter()
            .filter_map(|m| m["body"].as_str().map(str::to_owned))
            .collect()
    };
    let (alice, bob) = (bodies("alice"), bodies("bob"));
    assert!(bob.contains(&PLAINTEXTS[0].to_owned()) && bob.contains(&PLAINTEXTS[2].to_owned()), "{result}");
    assert!(alice.contains(&PLAINTEXTS[1].to_owned()), "{result}");
    let failures: Vec<&Value> = ["alice", "bob"]
        .iter()
        .flat_map(|who| result[who]["decrypted"].as_array().into_iter().flatten())
        .filter(|m| m.get("failure").is_some())
        .collect();
    assert!(failures.is_empty(), "no decryption failures: {failures:?}");
    // Both clients uploaded their keys at login and ran their sessions without errors.
    let errors: Vec<&Value> = result["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter(|e| !CLIENT_NOISE.iter().any(|noise| e["message"].as_str().unwrap_or("").contains(noise)))
        .collect();
    assert!(errors.is_empty(), "the clients logged errors: {errors:?}");
    // Cross-signing signatures were accepted and relayed: each sees the other's device as
    // signed by its owner (the script waited for Alice's view of Bob's).
    assert_eq!(result["cross_signed"]["alice_device_seen_by_bob"], true, "{result}");

    // What the server stored: ciphertext only.
    let room_id = <&RoomId>::try_from(room).expect("room ID");
    let stored = s
        .services()
        .storage
        .events
        .room_events(room_id, 0, i64::MAX, parley::storage::Direction::Forward, 1000)
        .await
        .expect("room events");
    let mut encrypted = 0;
    for event in &stored {
        let json = event.json.get();
        for plaintext in PLAINTEXTS {
            assert!(!json.contains(plaintext), "plaintext stored in {json}");
        }
        let parsed: Value = serde_json::from_str(json).expect("event JSON");
        assert_ne!(parsed["type"], "m.room.message", "a message was stored unencrypted: {json}");
        if parsed["type"] == "m.room.encrypted" {
            assert_eq!(parsed["content"]["algorithm"], "m.megolm.v1.aes-sha2", "{json}");
            assert!(parsed["content"]["ciphertext"].is_string(), "{json}");
            encrypted += 1;
        }
    }
    assert_eq!(encrypted, PLAINTEXTS.len(), "one ciphertext per message");

    // And what a client fetching history gets: the same ciphertext.
    let token = result["bob"]["access_token"].as_str().expect("bob's token");
    let (status, messages) =
        s.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(room)), Some(token)).await;
    assert!(status.is_success(), "{messages}");
    let text = messages.to_string();
    for plaintext in PLAINTEXTS {
        assert!(!text.contains(plaintext), "plaintext served: {text}");
    }
    let served =
        messages["chunk"].as_array().expect("chunk").iter().filter(|e| e["type"] == "m.room.encrypted").count();
    assert_eq!(served, PLAINTEXTS.len(), "{messages}");
    s.finish().await;
}
