//! Helpers for the E2EE tests: real ed25519 keys and signatures (made with ruma), key
//! objects in the shapes clients upload, and the key endpoints.

#![allow(dead_code)]

use reqwest::StatusCode;
use ruma::{
    CanonicalJsonObject,
    serde::Base64,
    signatures::{Ed25519KeyPair, sign_json},
};
use serde_json::{Value, json};

use crate::{
    harness::{TestServer, TestUser},
    sync::sync,
};

/// An ed25519 key pair that signs JSON the way Matrix clients do.
pub struct Signer {
    pair: Ed25519KeyPair,
    pub public: String,
}

impl Signer {
    /// A key named by its public key, as cross-signing keys are (`ed25519:<public key>`).
    pub fn cross_signing() -> Self {
        let doc = Ed25519KeyPair::generate();
        let probe = Ed25519KeyPair::from_der(&doc, "probe".to_owned()).expect("key");
        let public = Base64::<ruma::serde::base64::Standard, _>::new(probe.public_key().to_vec()).encode();
        let pair = Ed25519KeyPair::from_der(&doc, public.clone()).expect("key");
        Self { pair, public }
    }

    /// A device's signing key, named `ed25519:<device ID>`.
    pub fn device(device_id: &str) -> Self {
        let doc = Ed25519KeyPair::generate();
        let pair = Ed25519KeyPair::from_der(&doc, device_id.to_owned()).expect("key");
        let public = Base64::<ruma::serde::base64::Standard, _>::new(pair.public_key().to_vec()).encode();
        Self { pair, public }
    }

    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.pair.version())
    }

    /// Adds this key's signature, as `user_id`'s, to `object`.
    pub fn sign(&self, user_id: &str, object: &mut Value) {
        let mut canonical: CanonicalJsonObject = serde_json::from_value(object.clone()).expect("canonical");
        sign_json(user_id, &self.pair, &mut canonical).expect("sign");
        *object = serde_json::to_value(canonical).expect("json");
    }
}

/// Random bytes as unpadded base64, shaped like a curve25519 key.
pub fn random_key() -> String {
    let bytes: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
    Base64::<ruma::serde::base64::Standard, _>::new(bytes).encode()
}

/// A device's identity keys, signed by the device.
pub fn device_keys(user: &TestUser, signer: &Signer) -> Value {
    let device = &user.device_id;
    let mut keys = json!({
        "user_id": user.user_id,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("ed25519:{device}"): signer.public,
            format!("curve25519:{device}"): random_key(),
        },
    });
    signer.sign(&user.user_id, &mut keys);
    keys
}

/// `n` signed one-time keys named `<prefix>0..n`.
pub fn one_time_keys(user: &TestUser, signer: &Signer, prefix: &str, n: usize) -> Value {
    let mut keys = serde_json::Map::new();
    for i in 0..n {
        let mut key = json!({"key": random_key()});
        signer.sign(&user.user_id, &mut key);
        keys.insert(format!("signed_curve25519:{prefix}{i}"), key);
    }
    Value::Object(keys)
}

/// A signed fallback key.
pub fn fallback_key(user: &TestUser, signer: &Signer, name: &str) -> Value {
    let mut key = json!({"key": random_key(), "fallback": true});
    signer.sign(&user.user_id, &mut key);
    json!({ format!("signed_curve25519:{name}"): key })
}

/// A cross-signing key of `usage` for `user_id`, signed by `signed_by` (for subkeys, the
/// master key).
pub fn cross_signing_key(user_id: &str, usage: &str, key: &Signer, signed_by: Option<&Signer>) -> Value {
    let mut object = json!({
        "user_id": user_id,
        "usage": [usage],
        "keys": { key.key_id(): key.public },
    });
    if let Some(signer) = signed_by {
        signer.sign(user_id, &mut object);
    }
    object
}

pub async fn upload(s: &TestServer, user: &TestUser, body: Value) -> (StatusCode, Value) {
    s.post("/_matrix/client/v3/keys/upload", Some(&user.token), body).await
}

/// Uploads fresh device keys for `user`'s device and returns the device's signer.
pub async fn upload_device_keys(s: &TestServer, user: &TestUser) -> Signer {
    let signer = Signer::device(&user.device_id);
    let (status, body) = upload(s, user, json!({"device_keys": device_keys(user, &signer)})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    signer
}

pub async fn query(s: &TestServer, user: &TestUser, users: &[&str]) -> Value {
    let wanted: serde_json::Map<String, Value> = users.iter().map(|u| ((*u).to_owned(), json!([]))).collect();
    let (status, body) =
        s.post("/_matrix/client/v3/keys/query", Some(&user.token), json!({"device_keys": wanted})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Claims one signed_curve25519 key of `target`'s device; returns `(key ID, key)` if any.
pub async fn claim(s: &TestServer, user: &TestUser, target: &TestUser) -> Option<(String, Value)> {
    let (status, body) = s
        .post(
            "/_matrix/client/v3/keys/claim",
            Some(&user.token),
            json!({"one_time_keys": {&target.user_id: {&target.device_id: "signed_curve25519"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let keys = body["one_time_keys"][&target.user_id][&target.device_id].as_object()?;
    keys.iter().next().map(|(id, key)| (id.clone(), key.clone()))
}

/// The user's current sync token.
pub async fn token(s: &TestServer, user: &TestUser) -> String {
    sync(s, user, "timeout=0").await["next_batch"].as_str().expect("next_batch").to_owned()
}

/// An incremental sync's `device_lists` as sorted `(changed, left)`.
pub async fn device_lists(s: &TestServer, user: &TestUser, since: &str) -> (Vec<String>, Vec<String>, String) {
    let resp = sync(s, user, &format!("since={since}&timeout=0")).await;
    let list = |field: &str| {
        let mut users: Vec<String> = resp["device_lists"][field]
            .as_array()
            .map(|a| a.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        users.sort();
        users
    };
    (list("changed"), list("left"), resp["next_batch"].as_str().expect("next_batch").to_owned())
}
