//! The conformance suite for E2EE storage: device, one-time, fallback and cross-signing
//! keys, and key backup.

use parley::storage::{
    RowWrite, Storage, StreamAllocator,
    backup::{BackupKey, KeyScope, PutKeysOutcome},
    keys::{ClaimedKey, CrossSigningKeyRow, CrossSigningWrite, KeyUpload, MasterKeyCheck, NewKey, UploadOutcome},
};
use ruma::{DeviceId, UserId, device_id, room_id, user_id};

use super::{close, open, user};
use crate::harness::{Backend, both_backends};

both_backends!(one_time_keys_are_claimed_once, cross_signing_keys_check_the_master_key, backup_versions_and_keys);

async fn with_device(storage: &Storage, user_id: &UserId, device_id: &DeviceId) {
    storage.users.create(user(user_id.as_str(), None)).await.expect("user");
    storage.devices.upsert_with_token(user_id, device_id, None, device_id.as_bytes(), 1).await.expect("device");
}

async fn one_time_keys_are_claimed_once(backend: Backend) {
    let Some((db, storage)) = open(backend).await else { return };
    let stream = StreamAllocator::new(0);
    let (alice, dev) = (user_id!("@alice:test"), device_id!("DEV"));
    with_device(&storage, alice, dev).await;
    let ids: Vec<String> = (0..10).map(|i| format!("signed_curve25519:k{i}")).collect();
    let upload = KeyUpload {
        device_keys: Some(r#"{"keys":{}}"#),
        one_time_keys: ids.iter().map(|id| NewKey { algorithm: "signed_curve25519", key_id: id, json: "{}" }).collect(),
        fallback_keys: vec![NewKey { algorithm: "signed_curve25519", key_id: "signed_curve25519:fb", json: "{}" }],
    };
    let stored = storage.keys.upload(alice, dev, &upload, &stream.allocate()).await.expect("upload");
    assert_eq!(stored, UploadOutcome::Stored { device_keys_changed: true });
    // The same upload again is harmless; a key ID with other content is refused.
    let again = storage.keys.upload(alice, dev, &upload, &stream.allocate()).await.expect("upload");
    assert_eq!(again, UploadOutcome::Stored { device_keys_changed: false });
    let clash = KeyUpload {
        one_time_keys: vec![NewKey { algorithm: "signed_curve25519", key_id: &ids[0], json: r#"{"x":1}"# }],
        ..KeyUpload::default()
    };
    let refused = storage.keys.upload(alice, dev, &clash, &stream.allocate()).await.expect("upload");
    assert_eq!(refused, UploadOutcome::OneTimeKeyConflict(ids[0].clone()));
    let missing = storage.keys.upload(alice, device_id!("NONE"), &upload, &stream.allocate()).await.expect("upload");
    assert_eq!(missing, UploadOutcome::NoDevice);
    assert_eq!(
        storage.keys.one_time_key_counts(alice, dev).await.expect("counts"),
        vec![("signed_curve25519".into(), 10)]
    );

    // Twelve concurrent claims: ten distinct one-time keys, then the fallback key (kept).
    let claims: Vec<_> = (0..12)
        .map(|_| {
            let storage = storage.clone();
            tokio::spawn(async move {
                storage.keys.claim(alice, dev, "signed_curve25519").await.expect("claim").expect("a key")
            })
        })
        .collect();
    let mut claimed: Vec<ClaimedKey> = Vec::new();
    for claim in claims {
        claimed.push(claim.await.expect("join"));
    }
    let mut one_time: Vec<&str> =
        claimed.iter().map(|k| k.key_id.as_str()).filter(|id| *id != "signed_curve25519:fb").collect();
    one_time.sort_unstable();
    one_time.dedup();
    assert_eq!(one_time.len(), 10, "every one-time key once: {claimed:?}");
    assert_eq!(storage.keys.one_time_key_counts(alice, dev).await.expect("counts"), vec![]);
    assert!(storage.keys.unused_fallback_algorithms(alice, dev).await.expect("fallback").is_empty(), "used");
    let fallback = storage.keys.claim(alice, dev, "signed_curve25519").await.expect("claim");
    assert_eq!(fallback.map(|k| k.key_id), Some("signed_curve25519:fb".into()), "kept after use");
    assert_eq!(storage.keys.device_keys(alice).await.expect("keys").len(), 1);
    close(db, storage).await;
}

async fn cross_signing_keys_check_the_master_key(backend: Backend) {
    let Some((db, storage)) = open(backend).await else { return };
    let stream = StreamAllocator::new(0);
    let alice = user_id!("@alice:test");
    storage.users.create(user(alice.as_str(), None)).await.expect("user");
    let master =
        |key_id: &str| CrossSigningKeyRow { key_type: "master".into(), key_id: key_id.into(), json: "{}".into() };
    let put = |keys: Vec<CrossSigningKeyRow>, check: MasterKeyCheck<'static>| {
        let (storage, pos) = (storage.clone(), stream.allocate());
        async move { storage.keys.put_cross_signing_keys(alice, &keys, check, &pos).await.expect("put") }
    };
    assert_eq!(put(vec![master("ed25519:m1")], MasterKeyCheck::Is(None)).await, CrossSigningWrite::Stored);
    // Decided against "no master key", but one is there now: nothing is written.
    assert_eq!(put(vec![master("ed25519:m2")], MasterKeyCheck::Is(None)).await, CrossSigningWrite::MasterKeyChanged);
    assert_eq!(
        put(vec![master("ed25519:m2")], MasterKeyCheck::Is(Some("ed25519:m1"))).await,
        CrossSigningWrite::Stored
    );
    assert_eq!(put(vec![master("ed25519:m3")], MasterKeyCheck::Any).await, CrossSigningWrite::Stored);
    let stored = storage.keys.cross_signing_keys(alice).await.expect("keys");
    assert_eq!(stored, vec![master("ed25519:m3")]);
    // Each write recorded a device-list change; the user is told of their own.
    let changed = storage.keys.device_list_changed(alice, 0, 10).await.expect("changed");
    assert_eq!(changed, vec![alice.to_owned()]);
    close(db, storage).await;
}

fn backup_key(session: &str, index: i64, verified: bool) -> BackupKey {
    BackupKey {
        room_id: room_id!("!r:test").to_owned(),
        session_id: session.into(),
        first_message_index: index,
        forwarded_count: 0,
        is_verified: verified,
        json: format!(r#"{{"first_message_index":{index}}}"#),
    }
}

async fn backup_versions_and_keys(backend: Backend) {
    let Some((db, storage)) = open(backend).await else { return };
    let alice = user_id!("@alice:test");
    storage.users.create(user(alice.as_str(), None)).await.expect("user");
    let v1 = storage.backup.create_version(alice, r#"{"algorithm":"a"}"#).await.expect("create");
    let v2 = storage.backup.create_version(alice, r#"{"algorithm":"a"}"#).await.expect("create");
    assert_eq!((v1, v2), (1, 2));
    assert_eq!(storage.backup.version(alice, None).await.expect("current").map(|v| v.version), Some(2));
    let put = storage.backup.put_keys(alice, 1, &[backup_key("s", 5, false)]).await.expect("put");
    assert_eq!(put, PutKeysOutcome::NotCurrent { current: 2 });
    let put = storage.backup.put_keys(alice, 2, &[backup_key("s", 5, false)]).await.expect("put");
    let PutKeysOutcome::Stored { etag, count } = put else { panic!("{put:?}") };
    assert_eq!(count, 1);
    // Only a better key replaces a stored one: a worse one leaves the etag alone.
    let worse = storage.backup.put_keys(alice, 2, &[backup_key("s", 9, false)]).await.expect("put");
    assert_eq!(worse, PutKeysOutcome::Stored { etag, count: 1 });
    let better = storage.backup.put_keys(alice, 2, &[backup_key("s", 9, true)]).await.expect("put");
    assert!(matches!(better, PutKeysOutcome::Stored { etag: e, count: 1 } if e > etag), "{better:?}");
    let keys = storage.backup.keys(alice, 2, KeyScope::All).await.expect("keys").expect("version");
    assert_eq!((keys[0].first_message_index, keys[0].is_verified), (9, true));
    assert_eq!(
        storage.backup.update_version(alice, 2, r#"{"algorithm":"b"}"#).await.expect("update"),
        RowWrite::Written
    );
    assert_eq!(storage.backup.update_version(alice, 7, "{}").await.expect("update"), RowWrite::NotFound);
    let scope = KeyScope::Session(room_id!("!r:test"), "s");
    assert_eq!(storage.backup.delete_keys(alice, 2, scope).await.expect("delete").map(|(_, count)| count), Some(0));
    assert_eq!(storage.backup.delete_version(alice, 2).await.expect("delete"), RowWrite::Written);
    assert_eq!(storage.backup.delete_version(alice, 2).await.expect("delete"), RowWrite::NotFound);
    assert_eq!(storage.backup.version(alice, None).await.expect("current").map(|v| v.version), Some(1));
    // Versions are never reused.
    assert_eq!(storage.backup.create_version(alice, "{}").await.expect("create"), 3);
    close(db, storage).await;
}
