//! Server-side key backups: versions (create, latest, by number, update, delete, never
//! reused), keys at the three levels, the rule for replacing a stored key, and the etag and
//! count semantics: the etag changes exactly when the keys change, the count is the number
//! of keys, and uploads go to the current version only.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    e2ee_util::random_key,
    harness::{Backend, TestServer, TestUser, assert_error, both_backends, enc},
};

both_backends!(backup_versions, backup_keys_etag_and_count);

const VERSION: &str = "/_matrix/client/v3/room_keys/version";

fn algorithm(public_key: &str) -> Value {
    json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
           "auth_data": {"public_key": public_key, "signatures": {}, "org.example.extra": 1}})
}

fn key_data(first_message_index: u32, forwarded_count: u32, is_verified: bool) -> Value {
    json!({"first_message_index": first_message_index, "forwarded_count": forwarded_count, "is_verified": is_verified,
           "session_data": {"ephemeral": random_key(), "ciphertext": random_key(), "mac": random_key()}})
}

async fn create(s: &TestServer, user: &TestUser) -> String {
    let (status, resp) = s.post(VERSION, Some(&user.token), algorithm(&random_key())).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp["version"].as_str().expect("version").to_owned()
}

async fn backup_versions(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    assert_error(&s.get(VERSION, Some(&alice.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    let public = random_key();
    let (status, resp) = s.post(VERSION, Some(&alice.token), algorithm(&public)).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let v1 = resp["version"].as_str().expect("version").to_owned();
    let (status, latest) = s.get(VERSION, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{latest}");
    assert_eq!(latest["version"], v1);
    assert_eq!(latest["algorithm"], "m.megolm_backup.v1.curve25519-aes-sha2");
    assert_eq!(latest["auth_data"]["public_key"], public);
    assert_eq!(latest["auth_data"]["org.example.extra"], 1, "auth data is kept as sent: {latest}");
    assert_eq!(latest["count"], 0);
    assert!(latest["etag"].is_string());
    // Backups are per user.
    assert_error(&s.get(VERSION, Some(&bob.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(&s.get(&format!("{VERSION}/{v1}"), Some(&bob.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    let v2 = create(&s, &alice).await;
    assert_ne!(v1, v2);
    assert_eq!(s.get(VERSION, Some(&alice.token)).await.1["version"], v2, "the newest is current");
    assert_eq!(s.get(&format!("{VERSION}/{v1}"), Some(&alice.token)).await.1["version"], v1);

    // Update: new auth data yes, another algorithm or another version in the body no.
    let new_public = random_key();
    let (status, resp) = s.put(&format!("{VERSION}/{v2}"), Some(&alice.token), algorithm(&new_public)).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(s.get(VERSION, Some(&alice.token)).await.1["auth_data"]["public_key"], new_public);
    let other = json!({"algorithm": "org.example.other", "auth_data": {}});
    assert_error(
        &s.put(&format!("{VERSION}/{v2}"), Some(&alice.token), other).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let mut mismatched = algorithm(&new_public);
    mismatched["version"] = json!(v1);
    assert_eq!(s.put(&format!("{VERSION}/{v2}"), Some(&alice.token), mismatched).await.0, StatusCode::BAD_REQUEST);
    assert_error(
        &s.put(&format!("{VERSION}/999"), Some(&alice.token), algorithm(&new_public)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.post(VERSION, Some(&alice.token), json!({"auth_data": {}})).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );

    // Delete: the previous version becomes current again; numbers are never reused.
    let (status, _) = s.call(Method::DELETE, &format!("{VERSION}/{v2}"), Some(&alice.token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(&s.get(&format!("{VERSION}/{v2}"), Some(&alice.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_eq!(s.get(VERSION, Some(&alice.token)).await.1["version"], v1);
    assert_error(
        &s.call(Method::DELETE, &format!("{VERSION}/{v2}"), Some(&alice.token), None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let v3 = create(&s, &alice).await;
    assert!(v3 != v1 && v3 != v2, "{v1} {v2} {v3}");
    assert_error(
        &s.get(&format!("{VERSION}/not-a-version"), Some(&alice.token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    s.finish().await;
}

async fn backup_keys_etag_and_count(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let old = create(&s, &alice).await;
    let version = create(&s, &alice).await;
    let etag0 = s.get(VERSION, Some(&alice.token)).await.1["etag"].clone();
    let (room1, room2) = ("!one:localhost", "!two:localhost");
    let session_path = |room: &str, session: &str, v: &str| {
        format!("/_matrix/client/v3/room_keys/keys/{}/{}?version={v}", enc(room), enc(session))
    };
    let room_path = |room: &str, v: &str| format!("/_matrix/client/v3/room_keys/keys/{}?version={v}", enc(room));
    let all_path = |v: &str| format!("/_matrix/client/v3/room_keys/keys?version={v}");

    // Session level.
    let first = key_data(5, 1, false);
    let (status, resp) = s.put(&session_path(room1, "s1", &version), Some(&alice.token), first.clone()).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["count"], 1);
    let etag1 = resp["etag"].clone();
    assert_ne!(etag1, etag0, "the etag moves when keys change");
    // The same key again, or a worse one, changes nothing: same etag.
    let (_, resp) = s.put(&session_path(room1, "s1", &version), Some(&alice.token), first.clone()).await;
    assert_eq!((resp["etag"].clone(), resp["count"].clone()), (etag1.clone(), json!(1)));
    let (_, resp) = s.put(&session_path(room1, "s1", &version), Some(&alice.token), key_data(9, 0, false)).await;
    assert_eq!(resp["etag"], etag1, "a higher first_message_index is worse");
    let (_, stored) = s.get(&session_path(room1, "s1", &version), Some(&alice.token)).await;
    assert_eq!(stored, first);
    // A better one replaces it: verified beats unverified, whatever the index.
    let better = key_data(7, 3, true);
    let (_, resp) = s.put(&session_path(room1, "s1", &version), Some(&alice.token), better.clone()).await;
    assert_ne!(resp["etag"], etag1);
    assert_eq!(resp["count"], 1);
    assert_eq!(s.get(&session_path(room1, "s1", &version), Some(&alice.token)).await.1, better);

    // Room level and all level.
    let sessions = json!({"sessions": {"s2": key_data(0, 0, false), "s3": key_data(0, 0, false)}});
    let (status, resp) = s.put(&room_path(room2, &version), Some(&alice.token), sessions).await;
    assert_eq!((status, resp["count"].clone()), (StatusCode::OK, json!(3)), "{resp}");
    let rooms = json!({"rooms": {room1: {"sessions": {"s4": key_data(0, 0, false)}}}});
    let (status, resp) = s.put(&all_path(&version), Some(&alice.token), rooms).await;
    assert_eq!((status, resp["count"].clone()), (StatusCode::OK, json!(4)), "{resp}");
    let latest_etag = resp["etag"].clone();
    let info = s.get(VERSION, Some(&alice.token)).await.1;
    assert_eq!((info["count"].clone(), info["etag"].clone()), (json!(4), latest_etag), "{info}");

    let (_, all) = s.get(&all_path(&version), Some(&alice.token)).await;
    let ids = |v: &Value| -> Vec<String> { v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default() };
    assert_eq!(ids(&all["rooms"][room1]["sessions"]), vec!["s1", "s4"], "{all}");
    assert_eq!(ids(&all["rooms"][room2]["sessions"]), vec!["s2", "s3"], "{all}");
    assert_eq!(ids(&s.get(&room_path(room2, &version), Some(&alice.token)).await.1["sessions"]), vec!["s2", "s3"]);
    assert_eq!(s.get(&room_path("!empty:localhost", &version), Some(&alice.token)).await.1["sessions"], json!({}));
    assert_error(
        &s.get(&session_path(room1, "nope", &version), Some(&alice.token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // Only the current version takes keys; the error names it.
    let wrong = s.put(&session_path(room1, "s9", &old), Some(&alice.token), key_data(0, 0, false)).await;
    assert_error(&wrong, StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(wrong.1["current_version"], version);
    let missing = s.put(&session_path(room1, "s9", "12345"), Some(&alice.token), key_data(0, 0, false)).await;
    assert_error(&missing, StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(s.get(&all_path(&old), Some(&alice.token)).await.1["rooms"], json!({}), "nothing went to {old}");
    assert_error(&s.get(&all_path("12345"), Some(&alice.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // Malformed key data is refused whole.
    let bad = json!({"sessions": {"s5": key_data(0, 0, false), "s6": {"first_message_index": "x"}}});
    assert_error(
        &s.put(&room_path(room2, &version), Some(&alice.token), bad).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_eq!(s.get(VERSION, Some(&alice.token)).await.1["count"], 4);

    // Deletes at each level; deleting nothing leaves the etag.
    let etag = s.get(VERSION, Some(&alice.token)).await.1["etag"].clone();
    let (_, resp) = s.call(Method::DELETE, &session_path(room1, "nope", &version), Some(&alice.token), None).await;
    assert_eq!((resp["count"].clone(), resp["etag"].clone()), (json!(4), etag.clone()), "{resp}");
    let (_, resp) = s.call(Method::DELETE, &session_path(room1, "s1", &version), Some(&alice.token), None).await;
    assert_eq!(resp["count"], 3);
    assert_ne!(resp["etag"], etag);
    let (_, resp) = s.call(Method::DELETE, &room_path(room2, &version), Some(&alice.token), None).await;
    assert_eq!(resp["count"], 1);
    let (_, resp) = s.call(Method::DELETE, &all_path(&version), Some(&alice.token), None).await;
    assert_eq!(resp["count"], 0);
    assert_eq!(s.get(&all_path(&version), Some(&alice.token)).await.1["rooms"], json!({}));
    // Deleting the version deletes its keys with it.
    s.put(&session_path(room1, "s1", &version), Some(&alice.token), key_data(0, 0, false)).await;
    s.call(Method::DELETE, &format!("{VERSION}/{version}"), Some(&alice.token), None).await;
    assert_error(&s.get(&all_path(&version), Some(&alice.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    s.finish().await;
}
