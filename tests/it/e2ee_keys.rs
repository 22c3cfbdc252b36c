//! Device keys and one-time keys: upload, query, claim (exactly once, under concurrency),
//! fallback keys, key counts in sync, the error paths, and that deleting a device deletes
//! its keys.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    e2ee_util::{Signer, claim, device_keys, fallback_key, one_time_keys, query, token, upload, upload_device_keys},
    harness::{Backend, TestServer, assert_error, both_backends},
    sync::sync,
};

both_backends!(
    upload_query_claim_and_fallback,
    upload_and_query_errors,
    one_time_keys_are_claimed_once_under_concurrency,
    deleting_a_device_deletes_its_keys,
);

fn counts(body: &Value) -> i64 {
    body["one_time_key_counts"]["signed_curve25519"].as_i64().expect("count")
}

async fn upload_query_claim_and_fallback(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let signer = Signer::device(&alice.device_id);

    let body = json!({
        "device_keys": device_keys(&alice, &signer),
        "one_time_keys": one_time_keys(&alice, &signer, "A", 3),
        "fallback_keys": fallback_key(&alice, &signer, "F1"),
    });
    let (status, resp) = upload(&s, &alice, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(counts(&resp), 3, "{resp}");
    // A retried upload (same keys) is harmless and counts the same.
    let (status, resp) = upload(&s, &alice, body).await;
    assert_eq!((status, counts(&resp)), (StatusCode::OK, 3), "{resp}");
    // The same key ID with other content is refused, and nothing of that upload is stored.
    let mut clash = one_time_keys(&alice, &signer, "A", 1);
    clash["signed_curve25519:B0"] = one_time_keys(&alice, &signer, "B", 1)["signed_curve25519:B0"].clone();
    assert_error(
        &upload(&s, &alice, json!({"one_time_keys": clash})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_eq!(counts(&upload(&s, &alice, json!({})).await.1), 3);

    // Bob sees Alice's device keys as uploaded, with the device's display name.
    let path = format!("/_matrix/client/v3/devices/{}", alice.device_id);
    assert_eq!(s.put(&path, Some(&alice.token), json!({"display_name": "Phone"})).await.0, StatusCode::OK);
    let keys = query(&s, &bob, &[&alice.user_id]).await;
    let device = &keys["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(device["keys"][format!("ed25519:{}", alice.device_id)], signer.public, "{keys}");
    assert!(device["signatures"][&alice.user_id][signer.key_id()].is_string(), "{keys}");
    assert_eq!(device["unsigned"]["device_display_name"], "Phone", "{keys}");

    // Sync shows the counts and the unused fallback key.
    let first = sync(&s, &alice, "timeout=0").await;
    assert_eq!(first["device_one_time_keys_count"]["signed_curve25519"], 3, "{first}");
    assert_eq!(first["device_unused_fallback_key_types"], json!(["signed_curve25519"]), "{first}");

    // Three claims get the three one-time keys, each once; then the fallback key, which is
    // handed out again (it is never deleted) and shown as used.
    let mut claimed = HashSet::new();
    for _ in 0..3 {
        let (id, key) = claim(&s, &bob, &alice).await.expect("a key");
        assert!(id.starts_with("signed_curve25519:A"), "{id}");
        assert!(key["signatures"].is_object());
        assert!(claimed.insert(id));
    }
    let (fallback, key) = claim(&s, &bob, &alice).await.expect("the fallback key");
    assert_eq!(fallback, "signed_curve25519:F1");
    assert_eq!(key["fallback"], true);
    assert_eq!(claim(&s, &bob, &alice).await.expect("again").0, "signed_curve25519:F1");
    let later = sync(&s, &alice, "timeout=0").await;
    assert_eq!(later["device_one_time_keys_count"]["signed_curve25519"], 0, "{later}");
    assert_eq!(later["device_unused_fallback_key_types"], json!([]), "{later}");
    // A new fallback key is unused again.
    upload(&s, &alice, json!({"fallback_keys": fallback_key(&alice, &signer, "F2")})).await;
    let again = sync(&s, &alice, "timeout=0").await;
    assert_eq!(again["device_unused_fallback_key_types"], json!(["signed_curve25519"]), "{again}");
    s.finish().await;
}

async fn upload_and_query_errors(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let signer = Signer::device(&alice.device_id);

    // Device keys must be the uploading device's own.
    let mut other_user = device_keys(&alice, &signer);
    other_user["user_id"] = json!(bob.user_id);
    assert_error(
        &upload(&s, &alice, json!({"device_keys": other_user})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let mut other_device = device_keys(&alice, &signer);
    other_device["device_id"] = json!("SOMEONEELSE");
    let body = json!({"device_keys": other_device, "one_time_keys": one_time_keys(&alice, &signer, "A", 2)});
    assert_error(&upload(&s, &alice, body).await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // Keys of the wrong shape.
    let bad_key = json!({"one_time_keys": {"signed_curve25519:X": 42}});
    assert_error(&upload(&s, &alice, bad_key).await, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let bad_id = json!({"one_time_keys": {"no-algorithm": {"key": "abc"}}});
    assert_eq!(upload(&s, &alice, bad_id).await.0, StatusCode::BAD_REQUEST);
    // None of the refused uploads stored anything.
    assert_eq!(counts(&upload(&s, &alice, json!({})).await.1), 0);
    let keys = query(&s, &bob, &[&alice.user_id]).await;
    assert_eq!(keys["device_keys"][&alice.user_id], json!({}), "{keys}");
    assert!(claim(&s, &bob, &alice).await.is_none());

    // No token: 401.
    assert_error(
        &s.post("/_matrix/client/v3/keys/upload", None, json!({})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    // Unknown users and devices are simply absent; another server is a failure.
    let (status, resp) = s
        .post(
            "/_matrix/client/v3/keys/query",
            Some(&bob.token),
            json!({"device_keys": {"@nobody:localhost": [], "@someone:elsewhere.example": []}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["device_keys"]["@nobody:localhost"], json!({}), "{resp}");
    assert!(resp["failures"]["elsewhere.example"].is_object(), "{resp}");
    let (status, resp) = s
        .post(
            "/_matrix/client/v3/keys/claim",
            Some(&bob.token),
            json!({"one_time_keys": {&alice.user_id: {"NOSUCHDEVICE": "signed_curve25519"}}}),
        )
        .await;
    assert_eq!((status, &resp["one_time_keys"]), (StatusCode::OK, &json!({})), "{resp}");
    assert_eq!(s.post("/_matrix/client/v3/keys/claim", Some(&bob.token), json!({})).await.0, StatusCode::BAD_REQUEST);

    // /keys/changes takes sync tokens.
    let from = token(&s, &bob).await;
    for bad in [format!("from=nonsense&to={from}"), format!("from={from}"), "from=s1&to=s-1".to_owned()] {
        let (status, _) = s.get(&format!("/_matrix/client/v3/keys/changes?{bad}"), Some(&bob.token)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let (status, resp) =
        s.get(&format!("/_matrix/client/v3/keys/changes?from={from}&to={from}"), Some(&bob.token)).await;
    assert_eq!((status, &resp["changed"]), (StatusCode::OK, &json!([])), "{resp}");
    s.finish().await;
}

async fn one_time_keys_are_claimed_once_under_concurrency(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let signer = upload_device_keys(&s, &alice).await;
    let body = json!({
        "one_time_keys": one_time_keys(&alice, &signer, "K", 10),
        "fallback_keys": fallback_key(&alice, &signer, "FB"),
    });
    assert_eq!(counts(&upload(&s, &alice, body).await.1), 10);

    // 20 claims at once, from two users, for 10 keys.
    let claims = (0..20).map(|i| {
        let (s, claimer, alice) = (&s, if i % 2 == 0 { &bob } else { &carol }, &alice);
        async move { claim(s, claimer, alice).await }
    });
    let results: Vec<String> =
        futures::future::join_all(claims).await.into_iter().map(|r| r.expect("every claim gets a key").0).collect();
    let one_time: Vec<&String> = results.iter().filter(|id| id.starts_with("signed_curve25519:K")).collect();
    let distinct: HashSet<&&String> = one_time.iter().collect();
    assert_eq!(one_time.len(), 10, "each one-time key once: {results:?}");
    assert_eq!(distinct.len(), 10, "no key twice: {results:?}");
    assert_eq!(results.iter().filter(|id| *id == "signed_curve25519:FB").count(), 10, "{results:?}");
    assert_eq!(counts(&upload(&s, &alice, json!({})).await.1), 0);
    s.finish().await;
}

async fn deleting_a_device_deletes_its_keys(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let phone = s.login("alice").await;
    let laptop = s.login("alice").await;
    let bob = s.register("bob").await;
    for device in [&alice, &phone, &laptop] {
        let signer = upload_device_keys(&s, device).await;
        upload(&s, device, json!({"one_time_keys": one_time_keys(device, &signer, "K", 2)})).await;
    }
    let devices = |keys: &Value| -> Vec<String> {
        let mut ids: Vec<String> =
            keys["device_keys"][&alice.user_id].as_object().expect("devices").keys().cloned().collect();
        ids.sort();
        ids
    };
    assert_eq!(devices(&query(&s, &bob, &[&alice.user_id]).await).len(), 3);

    // Logout.
    let (status, _) = s.post("/_matrix/client/v3/logout", Some(&phone.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    // DELETE /devices/{id}, with UIA.
    let path = format!("/_matrix/client/v3/devices/{}", laptop.device_id);
    let (status, challenge) = s.call(reqwest::Method::DELETE, &path, Some(&alice.token), Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let auth = json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
        "password": alice.password, "session": challenge["session"]}});
    let (status, resp) = s.call(reqwest::Method::DELETE, &path, Some(&alice.token), Some(auth)).await;
    assert_eq!(status, StatusCode::OK, "{resp}");

    assert_eq!(devices(&query(&s, &bob, &[&alice.user_id]).await), vec![alice.device_id.clone()]);
    assert!(claim(&s, &bob, &phone).await.is_none(), "the logged-out device's one-time keys are gone");
    assert!(claim(&s, &bob, &laptop).await.is_none(), "the deleted device's one-time keys are gone");
    assert!(claim(&s, &bob, &alice).await.is_some());

    // Deactivation takes the rest.
    let (status, challenge) = s.post("/_matrix/client/v3/account/deactivate", Some(&alice.token), json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let auth = json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
        "password": alice.password, "session": challenge["session"]}});
    let (status, resp) = s.post("/_matrix/client/v3/account/deactivate", Some(&alice.token), auth).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(query(&s, &bob, &[&alice.user_id]).await["device_keys"][&alice.user_id], json!({}));
    assert!(claim(&s, &bob, &alice).await.is_none());
    s.finish().await;
}
