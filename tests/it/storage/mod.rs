//! The storage conformance suite: the same assertions against both backends' implementations
//! of each storage trait.

use std::sync::Arc;

use parley::{
    service::secrets,
    storage::{CreateUserOutcome, NewUser, RegistrationToken, Storage, StreamAllocator},
};
use ruma::{OwnedUserId, owned_device_id};
use serde_json::value::to_raw_value;

use crate::harness::{Backend, TestDb, both_backends};

mod areas;
mod e2ee;

both_backends!(
    users_are_created_once_under_concurrency,
    registration_tokens_are_never_overused,
    account_data_positions_and_ranges,
    devices_tokens_and_deactivation,
);

pub(super) async fn open(backend: Backend) -> Option<(TestDb, Storage)> {
    let db = TestDb::create(backend).await?;
    let storage = Storage::connect(&db.url, 8).await.expect("connect");
    Some((db, storage))
}

pub(super) async fn close(db: TestDb, storage: Storage) {
    storage.close().await;
    db.drop_db().await;
}

pub(super) fn user(id: &str, token: Option<&str>) -> NewUser {
    NewUser {
        user_id: OwnedUserId::try_from(id).expect("user id"),
        password_hash: None,
        is_admin: false,
        profile: vec![("displayname".into(), serde_json::json!("x"))],
        registration_token_hash: token.map(secrets::sha256),
        now_ms: 1,
    }
}

async fn users_are_created_once_under_concurrency(backend: Backend) {
    let Some((db, storage)) = open(backend).await else { return };
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let storage = storage.clone();
            tokio::spawn(async move { storage.users.create(user("@same:test", None)).await.expect("create") })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        match task.await.expect("join") {
            CreateUserOutcome::Created => created += 1,
            CreateUserOutcome::UserIdTaken => {}
            CreateUserOutcome::TokenUnusable => panic!("no token involved"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(storage.users.count().await.expect("count"), 1);
    close(db, storage).await;
}

async fn registration_tokens_are_never_overused(backend: Backend) {
    let Some((db, storage)) = open(backend).await else { return };
    let token = "twice";
    let entry =
        RegistrationToken { prefix: "twi".into(), uses_allowed: Some(2), completed: 0, expiry_ts: None, created_at: 0 };
    storage.registration.create_token(&secrets::sha256(token), entry).await.expect("token");
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let storage = storage.clone();
            tokio::spawn(async move {
                storage.users.create(user(&format!("@u{i}:test"), Some(token))).await.expect("create")
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("join"));
    }
    assert_eq!(outcomes.iter().filter(|o| **o == CreateUserOutcome::Created).count(), 2, "{outcomes:?}");
    assert_eq!(storage.users.count().await.expect("count"), 2, "refused registrations left nothing behind");
    let stored = storage.registration.get_token(&secrets::sha256(token)).await.expect("get").expect("exists");
    assert_eq!(stored.completed, 2);
    assert!(!stored.is_usable(0));
    // An expired token is refused as well.
    let expired = RegistrationToken {
        prefix: "exp".into(),
        uses_allowed: None,
        completed: 0,
        expiry_ts: Some(10),
        created_at: 0,
    };
    storage.registration.create_token(&secrets::sha256("expired"), expired).await.expect("token");
    let mut late = user("@late:test", Some("expired"));
    late.now_ms = 11;
    assert_eq!(storage.users.create(late).await.expect("create"), CreateUserOutcome::TokenUnusable);
    close(db, storage).await;
}

async fn account_data_positions_and_ranges(backend: Backend) {
    let Some((db, storage)) = open(backend).await else { return };
    let alice: OwnedUserId = "@alice:test".try_into().expect("id");
    let stream = StreamAllocator::new(storage.max_stream_pos().await.expect("max"));
    assert_eq!(stream.watermark(), 0);
    let mut positions = Vec::new();
    for i in 0..5 {
        let pos = stream.allocate();
        let content = to_raw_value(&serde_json::json!({"i": i})).expect("raw");
        storage.account_data.set(&alice, None, &format!("t{}", i % 3), &content, &pos).await.expect("set");
        positions.push(pos.get());
    }
    assert_eq!(positions, vec![1, 2, 3, 4, 5]);
    // t0 and t1 were overwritten at positions 4 and 5: only the latest write of each type remains.
    let changed = storage.account_data.changed_since(&alice, 0, 5).await.expect("changed");
    let seen: Vec<(String, i64)> = changed.iter().map(|e| (e.data_type.clone(), e.stream_pos)).collect();
    assert_eq!(seen, vec![("t2".into(), 3), ("t0".into(), 4), ("t1".into(), 5)]);
    let window = storage.account_data.changed_since(&alice, 3, 4).await.expect("changed");
    assert_eq!(window.len(), 1);
    assert_eq!(window[0].content.get(), r#"{"i":3}"#);
    assert!(storage.account_data.changed_since(&alice, 5, 9).await.expect("changed").is_empty());
    // A restarted allocator continues after what is stored.
    assert_eq!(storage.max_stream_pos().await.expect("max"), 5);
    drop(stream);
    let stream = Arc::new(StreamAllocator::new(storage.max_stream_pos().await.expect("max")));
    assert_eq!(stream.allocate().get(), 6);
    close(db, storage).await;
}

async fn devices_tokens_and_deactivation(backend: Backend) {
    let Some((db, storage)) = open(backend).await else { return };
    let alice: OwnedUserId = "@alice:test".try_into().expect("id");
    storage.users.create(user(alice.as_str(), None)).await.expect("create");
    let dev = owned_device_id!("DEV");
    storage.devices.upsert_with_token(&alice, &dev, Some("Phone"), b"hash-1", 10).await.expect("device");
    assert_eq!(storage.devices.find_token(b"hash-1").await.expect("find").map(|o| o.device_id), Some(dev.clone()));
    // A new token for the same device replaces the old one and keeps the name.
    storage.devices.upsert_with_token(&alice, &dev, Some("Other"), b"hash-2", 20).await.expect("device");
    assert!(storage.devices.find_token(b"hash-1").await.expect("find").is_none());
    assert!(storage.devices.find_token(b"hash-2").await.expect("find").is_some());
    let device = storage.devices.get(&alice, &dev).await.expect("get").expect("exists");
    assert_eq!(device.display_name.as_deref(), Some("Phone"));
    assert_eq!(storage.devices.list(&alice).await.expect("list").len(), 1);

    let pos = parley::storage::StreamAllocator::new(0).allocate();
    assert_eq!(storage.users.deactivate(&alice, &pos).await.expect("deactivate"), parley::storage::RowWrite::Written);
    assert!(storage.devices.find_token(b"hash-2").await.expect("find").is_none());
    assert!(storage.devices.list(&alice).await.expect("list").is_empty());
    assert!(storage.users.profile(&alice).await.expect("profile").is_none());
    let stored = storage.users.get(&alice).await.expect("get").expect("kept");
    assert!(stored.deactivated);
    assert_eq!(storage.users.create(user(alice.as_str(), None)).await.expect("create"), CreateUserOutcome::UserIdTaken);
    close(db, storage).await;
}
