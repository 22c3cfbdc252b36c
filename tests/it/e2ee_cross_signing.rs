//! Cross-signing: uploading master, self-signing and user-signing keys (UIA only when keys
//! are replaced), who sees which key, and signatures uploaded afterwards: verified before
//! they are stored, and a user-signing key's signatures shown to the signer only.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    e2ee_util::{Signer, cross_signing_key, device_keys, query, upload},
    harness::{Backend, TestServer, TestUser, assert_error, both_backends},
};

both_backends!(cross_signing_upload_with_and_without_uia, signatures_upload_is_verified_and_scoped);

const UPLOAD: &str = "/_matrix/client/v3/keys/device_signing/upload";
const SIGNATURES: &str = "/_matrix/client/v3/keys/signatures/upload";

/// A user's three cross-signing keys.
struct CrossSigning {
    master: Signer,
    self_signing: Signer,
    user_signing: Signer,
}

impl CrossSigning {
    fn new() -> Self {
        Self {
            master: Signer::cross_signing(),
            self_signing: Signer::cross_signing(),
            user_signing: Signer::cross_signing(),
        }
    }

    fn body(&self, user: &TestUser) -> Value {
        json!({
            "master_key": cross_signing_key(&user.user_id, "master", &self.master, None),
            "self_signing_key": cross_signing_key(&user.user_id, "self_signing", &self.self_signing, Some(&self.master)),
            "user_signing_key": cross_signing_key(&user.user_id, "user_signing", &self.user_signing, Some(&self.master)),
        })
    }
}

fn password_auth(user: &TestUser, session: &Value) -> Value {
    json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id},
        "password": user.password, "session": session})
}

async fn cross_signing_upload_with_and_without_uia(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let keys = CrossSigning::new();

    // Refused shapes, before anything is stored.
    let mut wrong_user = keys.body(&alice);
    wrong_user["master_key"]["user_id"] = json!(bob.user_id);
    assert_error(&s.post(UPLOAD, Some(&alice.token), wrong_user).await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let mut unsigned = keys.body(&alice);
    unsigned["self_signing_key"] = cross_signing_key(&alice.user_id, "self_signing", &keys.self_signing, None);
    assert_error(&s.post(UPLOAD, Some(&alice.token), unsigned).await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let mut wrong_usage = keys.body(&alice);
    wrong_usage["master_key"]["usage"] = json!(["self_signing"]);
    assert_eq!(s.post(UPLOAD, Some(&alice.token), wrong_usage).await.0, StatusCode::BAD_REQUEST);
    let orphan = json!({"self_signing_key": keys.body(&alice)["self_signing_key"]});
    assert_error(&s.post(UPLOAD, Some(&alice.token), orphan).await, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");

    // The first upload needs no UIA.
    let (status, resp) = s.post(UPLOAD, Some(&alice.token), keys.body(&alice)).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let own = query(&s, &alice, &[&alice.user_id]).await;
    assert_eq!(own["master_keys"][&alice.user_id]["keys"][keys.master.key_id()], keys.master.public, "{own}");
    assert!(own["self_signing_keys"][&alice.user_id].is_object(), "{own}");
    assert!(own["user_signing_keys"][&alice.user_id].is_object(), "alice sees her own user-signing key: {own}");
    let theirs = query(&s, &bob, &[&alice.user_id]).await;
    assert!(theirs["master_keys"][&alice.user_id].is_object(), "{theirs}");
    assert!(theirs["self_signing_keys"][&alice.user_id].is_object(), "{theirs}");
    assert!(theirs["user_signing_keys"].get(&alice.user_id).is_none(), "only alice sees it: {theirs}");

    // The same keys again (a retry) need no UIA either.
    let (status, resp) = s.post(UPLOAD, Some(&alice.token), keys.body(&alice)).await;
    assert_eq!(status, StatusCode::OK, "{resp}");

    // Replacing them does: 401 with the password flow, then success with the password.
    let new = CrossSigning::new();
    let (status, challenge) = s.post(UPLOAD, Some(&alice.token), new.body(&alice)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    assert_eq!(challenge["flows"][0]["stages"], json!(["m.login.password"]), "{challenge}");
    let after_challenge = query(&s, &alice, &[&alice.user_id]).await;
    assert_eq!(after_challenge["master_keys"], own["master_keys"], "nothing changed without UIA");
    let mut wrong_password = new.body(&alice);
    wrong_password["auth"] = password_auth(&alice, &challenge["session"]);
    wrong_password["auth"]["password"] = json!("not the password");
    assert_eq!(s.post(UPLOAD, Some(&alice.token), wrong_password).await.0, StatusCode::UNAUTHORIZED);
    let mut authed = new.body(&alice);
    authed["auth"] = password_auth(&alice, &challenge["session"]);
    let (status, resp) = s.post(UPLOAD, Some(&alice.token), authed).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let replaced = query(&s, &bob, &[&alice.user_id]).await;
    assert_eq!(replaced["master_keys"][&alice.user_id]["keys"][new.master.key_id()], new.master.public);
    s.finish().await;
}

/// Uploads `signed` (a key object with the new signature) for `target`'s key `key_id`.
async fn sign(s: &TestServer, signer: &TestUser, target: &str, key_id: &str, signed: Value) -> Value {
    let (status, resp) = s.post(SIGNATURES, Some(&signer.token), json!({ target: { key_id: signed } })).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp
}

async fn signatures_upload_is_verified_and_scoped(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let (alice_keys, bob_keys) = (CrossSigning::new(), CrossSigning::new());
    assert_eq!(s.post(UPLOAD, Some(&alice.token), alice_keys.body(&alice)).await.0, StatusCode::OK);
    assert_eq!(s.post(UPLOAD, Some(&bob.token), bob_keys.body(&bob)).await.0, StatusCode::OK);
    let device_signer = Signer::device(&alice.device_id);
    let device = device_keys(&alice, &device_signer);
    assert_eq!(upload(&s, &alice, json!({"device_keys": device})).await.0, StatusCode::OK);

    // Alice's self-signing key signs her device.
    let mut signed_device = device.clone();
    alice_keys.self_signing.sign(&alice.user_id, &mut signed_device);
    let resp = sign(&s, &alice, &alice.user_id, &alice.device_id, signed_device).await;
    assert!(resp["failures"].as_object().is_none_or(serde_json::Map::is_empty), "{resp}");
    let seen = query(&s, &bob, &[&alice.user_id]).await;
    let sigs = &seen["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id];
    assert!(sigs[alice_keys.self_signing.key_id()].is_string(), "bob sees the cross-signature: {seen}");
    assert!(sigs[device_signer.key_id()].is_string(), "and the device's own: {seen}");

    // Alice's device signs her master key.
    let mut signed_master = cross_signing_key(&alice.user_id, "master", &alice_keys.master, None);
    device_signer.sign(&alice.user_id, &mut signed_master);
    let resp = sign(&s, &alice, &alice.user_id, &alice_keys.master.public, signed_master).await;
    assert!(resp["failures"].as_object().is_none_or(serde_json::Map::is_empty), "{resp}");
    let seen = query(&s, &carol, &[&alice.user_id]).await;
    assert!(seen["master_keys"][&alice.user_id]["signatures"][&alice.user_id][device_signer.key_id()].is_string());

    // A bad signature is a failure and is not stored.
    let impostor = Signer::cross_signing();
    let mut forged = device.clone();
    forged["signatures"][&alice.user_id][alice_keys.self_signing.key_id()] =
        json!(signature_by(&impostor, &alice.user_id, &device));
    let resp = sign(&s, &alice, &alice.user_id, &alice.device_id, forged).await;
    assert_eq!(resp["failures"][&alice.user_id][&alice.device_id]["errcode"], "M_INVALID_SIGNATURE", "{resp}");
    // A signature over different content is refused too.
    let mut altered = device.clone();
    altered["algorithms"] = json!(["m.megolm.v1.aes-sha2"]);
    alice_keys.self_signing.sign(&alice.user_id, &mut altered);
    let resp = sign(&s, &alice, &alice.user_id, &alice.device_id, altered).await;
    assert_eq!(resp["failures"][&alice.user_id][&alice.device_id]["errcode"], "M_INVALID_SIGNATURE", "{resp}");
    // Unknown keys are failures, not errors.
    let resp = sign(&s, &alice, &alice.user_id, "NOSUCHDEVICE", json!({})).await;
    assert!(resp["failures"][&alice.user_id]["NOSUCHDEVICE"].is_object(), "{resp}");

    // Alice's user-signing key signs bob's master key: alice sees it, bob and carol do not.
    let mut bob_master = cross_signing_key(&bob.user_id, "master", &bob_keys.master, None);
    alice_keys.user_signing.sign(&alice.user_id, &mut bob_master);
    let resp = sign(&s, &alice, &bob.user_id, &bob_keys.master.public, bob_master).await;
    assert!(resp["failures"].as_object().is_none_or(serde_json::Map::is_empty), "{resp}");
    let by_alice = |resp: &Value| resp["master_keys"][&bob.user_id]["signatures"][&alice.user_id].is_object();
    assert!(by_alice(&query(&s, &alice, &[&bob.user_id]).await), "the signer sees her signature");
    assert!(!by_alice(&query(&s, &bob, &[&bob.user_id]).await), "bob does not");
    assert!(!by_alice(&query(&s, &carol, &[&bob.user_id]).await), "carol does not");
    s.finish().await;
}

/// `object`'s signature by `signer`, as `user_id`'s.
fn signature_by(signer: &Signer, user_id: &str, object: &Value) -> String {
    let mut copy = object.clone();
    copy.as_object_mut().expect("object").remove("signatures");
    signer.sign(user_id, &mut copy);
    copy["signatures"][user_id][signer.key_id()].as_str().expect("signature").to_owned()
}
