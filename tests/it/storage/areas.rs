//! The conformance suite for filters, receipts and presence, to-device messages, rooms
//! (aliases, the directory flag, the signing key) and pushers.

use parley::storage::{
    RowWrite, StreamAllocator,
    push::PusherRow,
    receipts::{PresenceRow, Receipt, ReceiptWrite},
    to_device::{NewToDevice, ToDeviceSender, ToDeviceWrite},
};
use ruma::{OwnedRoomId, OwnedUserId, device_id, room_alias_id, room_id, user_id};

use super::{close, open, user};
use crate::harness::{Backend, both_backends};

both_backends!(
    filters_belong_to_their_user,
    receipts_only_move_forward,
    presence_rows_are_replaced,
    to_device_once_per_transaction_and_deleted_on_ack,
    aliases_and_signing_keys,
    pushers_and_an_empty_queue,
    passwords_and_profiles,
    an_outbox_entry_committed_late_is_not_lost,
);

async fn filters_belong_to_their_user(backend: Backend) {
    let Some((db, storage)) = open(backend).await else { return };
    let (alice, bob) = (user_id!("@alice:test"), user_id!("@bob:test"));
    storage.filters.put(alice, "f1", r#"{"room":{}}"#).await.expect("put");
    assert_eq!(storage.filters.get(alice, "f1").await.expect("get").as_deref(), Some(r#"{"room":{}}"#));
    assert_eq!(storage.filters.get(bob, "f1").await.expect("get"), None, "another user's filter");
    assert_eq!(storage.filters.get(alice, "f2").await.expect("get"), None);
    close(db, storage).await;
}

fn receipt(room: &OwnedRoomId, user: &OwnedUserId, event_pos: i64) -> Receipt {
    Receipt {
        room_id: room.clone(),
        user_id: user.clone(),
        receipt_type: "m.read".into(),
        thread_id: String::new(),
        event_id: format!("$e{event_pos}"),
        event_pos,
        ts: 1,
        stream_pos: 0,
    }
}

async fn receipts_only_move_forward(backend: Backend) {
    let Some((db, storage)) = open(backend).await else { return };
    let stream = StreamAllocator::new(0);
    let (room, other_room) = (room_id!("!r:test").to_owned(), room_id!("!o:test").to_owned());
    let alice = user_id!("@alice:test").to_owned();
    let put = |r: Receipt| {
        let storage = storage.clone();
        let pos = stream.allocate();
        async move { storage.receipts.put(&r, &pos).await.expect("put") }
    };
    assert_eq!(put(receipt(&room, &alice, 5)).await, ReceiptWrite::Stored);
    assert_eq!(put(receipt(&room, &alice, 3)).await, ReceiptWrite::NotNewer, "an older event");
    assert_eq!(put(receipt(&room, &alice, 5)).await, ReceiptWrite::NotNewer, "the same event");
    assert_eq!(put(receipt(&room, &alice, 8)).await, ReceiptWrite::Stored);
    assert_eq!(put(receipt(&other_room, &alice, 1)).await, ReceiptWrite::Stored);
    assert_eq!(storage.receipts.read_up_to(&room, &alice).await.expect("read"), 8);
    let current = storage.receipts.room_receipts(&room).await.expect("room");
    assert_eq!(current.iter().map(|r| r.event_pos).collect::<Vec<_>>(), vec![8]);
    // Positions 1 and 4 stored (2 and 3 were refused); 5 is the other room.
    let changed = storage.receipts.changed_since(std::slice::from_ref(&room), 0, 10).await.expect("changed");
    assert_eq!(changed.iter().map(|r| r.stream_pos).collect::<Vec<_>>(), vec![4]);
    let both = storage.receipts.changed_since(&[room.clone(), other_room], 0, 10).await.expect("changed");
    assert_eq!(both.len(), 2);
    assert!(storage.receipts.changed_since(&[room], 4, 10).await.expect("changed").is_empty());
    assert_eq!(storage.receipts.max_stream_pos().await.expect("max"), 5);
    close(db, storage).await;
}

async fn presence_rows_are_replaced(backend: Backend) {
    let Some((db, storage)) = open(backend).await else { return };
    let stream = StreamAllocator::new(0);
    let alice = user_id!("@alice:test").to_owned();
    let row = |state: &str| PresenceRow {
        user_id: alice.clone(),
        state: state.into(),
        status_msg: Some("hi".into()),
        last_active_ts: 7,
        currently_active: true,
        stream_pos: 0,
    };
    storage.presence.put(&row("online"), &stream.allocate()).await.expect("put");
    storage.presence.put(&row("unavailable"), &stream.allocate()).await.expect("put");
    let stored = storage.presence.get(&alice).await.expect("get").expect("row");
    assert_eq!((stored.state.as_str(), stored.stream_pos), ("unavailable", 2));
    assert_eq!(storage.presence.changed_since(0, 10).await.expect("changed").len(), 1, "one row per user");
    assert!(storage.presence.changed_since(2, 10).await.expect("changed").is_empty());
    assert_eq!(storage.presence.get(user_id!("@bob:test")).await.expect("get"), None);
    assert_eq!(storage.presence.max_stream_pos().await.expect("max"), 2);
    close(db, storage).await;
}

async fn to_device_once_per_transaction_and_deleted_on_ack(backend: Backend) {
    let Some((db, storage)) = open(backend).await else { return };
    let stream = StreamAllocator::new(0);
    let (alice, bob) = (user_id!("@alice:test"), user_id!("@bob:test"));
    let sender = ToDeviceSender { user_id: alice, device_id: device_id!("A"), txn_id: "t1" };
    let messages = [
        NewToDevice { user_id: bob, device_id: device_id!("B1"), content: r#"{"n":1}"# },
        NewToDevice { user_id: bob, device_id: device_id!("B2"), content: r#"{"n":2}"# },
    ];
    let first = storage.to_device.send(sender, "m.test", &messages, &stream.allocate(), 1).await.expect("send");
    assert_eq!(first, ToDeviceWrite::Stored);
    let again = storage.to_device.send(sender, "m.test", &messages, &stream.allocate(), 1).await.expect("send");
    assert_eq!(again, ToDeviceWrite::RepeatedTransaction);
    let pending = storage.to_device.pending(bob, device_id!("B1"), 0, 10, 100).await.expect("pending");
    assert_eq!(pending.len(), 1, "stored once");
    assert_eq!((pending[0].content.as_str(), pending[0].sender.as_str()), (r#"{"n":1}"#, "@alice:test"));
    assert!(storage.to_device.pending(bob, device_id!("B1"), 1, 10, 100).await.expect("pending").is_empty());
    assert_eq!(storage.to_device.delete_up_to(bob, device_id!("B1"), 1).await.expect("delete"), 1);
    assert_eq!(storage.to_device.delete_up_to(bob, device_id!("B1"), 1).await.expect("delete"), 0);
    assert_eq!(storage.to_device.pending(bob, device_id!("B2"), 0, 10, 100).await.expect("pending").len(), 1);
    // The transaction keeps its position after its messages are gone.
    assert_eq!(storage.to_device.max_stream_pos().await.expect("max"), 1);
    close(db, storage).await;
}

async fn aliases_and_signing_keys(backend: Backend) {
    let Some((db, storage)) = open(backend).await else { return };
    let (alias, room, alice) = (room_alias_id!("#a:test"), room_id!("!r:test"), user_id!("@alice:test"));
    assert!(storage.rooms.create_alias(alias, room, alice, 1).await.expect("create"));
    assert!(!storage.rooms.create_alias(alias, room_id!("!other:test"), alice, 2).await.expect("create"), "taken");
    assert_eq!(storage.rooms.resolve_alias(alias).await.expect("resolve"), Some((room.to_owned(), alice.to_owned())));
    assert_eq!(storage.rooms.room_aliases(room).await.expect("aliases"), vec!["#a:test".to_owned()]);
    assert!(storage.rooms.delete_alias(alias).await.expect("delete"));
    assert!(!storage.rooms.delete_alias(alias).await.expect("delete"), "gone already");
    assert!(!storage.rooms.set_public(room, true).await.expect("public"), "no such room");
    assert_eq!(storage.rooms.get(room).await.expect("get").map(|r| r.room_id), None);
    // The first signing key wins; a second start reads it instead of making its own.
    assert_eq!(storage.rooms.current_signing_key().await.expect("key"), None);
    let first = storage.rooms.insert_signing_key("a_1", b"der-1", 1).await.expect("insert");
    assert_eq!(first, ("a_1".to_owned(), b"der-1".to_vec()));
    let second = storage.rooms.insert_signing_key("b_2", b"der-2", 2).await.expect("insert");
    assert_eq!(second, first);
    assert_eq!(storage.rooms.current_signing_key().await.expect("key"), Some(first));
    close(db, storage).await;
}

fn pusher(user: &str, pushkey: &str) -> PusherRow {
    PusherRow {
        user_id: user.try_into().expect("user"),
        app_id: "app".into(),
        pushkey: pushkey.into(),
        kind: "http".into(),
        app_display_name: "App".into(),
        device_display_name: "Phone".into(),
        profile_tag: None,
        lang: "en".into(),
        data: r#"{"url":"https://push.example.org/_matrix/push/v1/notify"}"#.into(),
        created_at: 1,
    }
}

async fn pushers_and_an_empty_queue(backend: Backend) {
    let Some((db, storage)) = open(backend).await else { return };
    let (alice, bob) = (user_id!("@alice:test"), user_id!("@bob:test"));
    storage.push.set_pusher(&pusher("@alice:test", "k1"), false).await.expect("set");
    storage.push.set_pusher(&pusher("@alice:test", "k2"), false).await.expect("set");
    assert_eq!(storage.push.pushers(alice).await.expect("list").len(), 2);
    assert_eq!(storage.push.pusher(alice, "app", "k1").await.expect("get"), Some(pusher("@alice:test", "k1")));
    // Without `append`, the same pushkey moves from alice to bob; with it, both keep it.
    storage.push.set_pusher(&pusher("@bob:test", "k1"), false).await.expect("set");
    assert_eq!(storage.push.pusher(alice, "app", "k1").await.expect("get"), None);
    storage.push.set_pusher(&pusher("@alice:test", "k2"), true).await.expect("set");
    storage.push.set_pusher(&pusher("@bob:test", "k2"), true).await.expect("set");
    assert_eq!(storage.push.pushers(bob).await.expect("list").len(), 2);
    assert_eq!(storage.push.delete_pusher(bob, "app", "k1").await.expect("delete"), RowWrite::Written);
    assert_eq!(storage.push.delete_pusher(bob, "app", "k1").await.expect("delete"), RowWrite::NotFound);
    assert_eq!(storage.push.delete_pushkey("app", "k2").await.expect("delete"), 2);
    assert!(storage.push.pushers(alice).await.expect("list").is_empty());
    // Nothing queued, nothing unread.
    assert!(storage.push.due(i64::MAX, 10).await.expect("due").is_empty());
    assert_eq!(storage.push.next_due().await.expect("next"), None);
    assert!(storage.push.unread(alice, room_id!("!r:test")).await.expect("unread").is_empty());
    assert_eq!(storage.push.total_unread(alice).await.expect("total"), 0);
    assert!(storage.push.notifications(alice, i64::MAX, 10, false).await.expect("list").is_empty());
    close(db, storage).await;
}

async fn passwords_and_profiles(backend: Backend) {
    let Some((db, storage)) = open(backend).await else { return };
    let alice = user_id!("@alice:test");
    storage.users.create(user(alice.as_str(), None)).await.expect("create");
    assert_eq!(storage.users.set_password_hash(alice, Some("$argon2id$x")).await.expect("set"), RowWrite::Written);
    let missing = storage.users.set_password_hash(user_id!("@nobody:test"), Some("x")).await.expect("set");
    assert_eq!(missing, RowWrite::NotFound);
    assert_eq!(
        storage.users.get(alice).await.expect("get").and_then(|u| u.password_hash).as_deref(),
        Some("$argon2id$x")
    );
    let name = serde_json::json!("Alice");
    storage.users.set_profile_field(alice, "displayname", Some(&name)).await.expect("set");
    storage.users.set_profile_field(alice, "m.tz", Some(&serde_json::json!("UTC"))).await.expect("set");
    storage.users.set_profile_field(alice, "m.tz", None).await.expect("remove");
    let profile = storage.users.profile(alice).await.expect("profile").expect("live");
    assert_eq!(profile, vec![("displayname".to_owned(), name)]);
    assert_eq!(storage.users.profile(user_id!("@nobody:test")).await.expect("profile"), None);
    assert_eq!(storage.users.count().await.expect("count"), 1);
    close(db, storage).await;
}

/// A transaction carries exactly the entries it was formed with: an entry whose ID falls
/// inside its range but that committed after it was formed (IDs are not given in commit
/// order on PostgreSQL) is neither sent with it nor deleted with it.
async fn an_outbox_entry_committed_late_is_not_lost(backend: Backend) {
    let Some((db, storage)) = open(backend).await else { return };
    let dest = ruma::server_name!("remote.test");
    let destinations = [dest.to_owned()];
    storage.federation.enqueue_edu(&destinations, r#"{"edu_type":"a","content":{}}"#, 1).await.expect("enqueue");
    storage.federation.enqueue_edu(&destinations, r#"{"edu_type":"c","content":{}}"#, 1).await.expect("enqueue");
    let txn = storage.federation.next_txn(dest, 50, 100).await.expect("next").expect("a transaction");
    assert_eq!(txn.entries.len(), 2);
    let (first, last) = (txn.entries[0].id, txn.entries[1].id);
    // The late entry: an ID between the two, written after the transaction was formed.
    let late = if last - first > 1 { first + 1 } else { first - 1 };
    db.execute(&format!(
        "INSERT INTO federation_outbox (id, destination, edu, created_at) VALUES ({late}, 'remote.test', '{{\"edu_type\":\"b\",\"content\":{{}}}}', 1)"
    ))
    .await;
    let again = storage.federation.next_txn(dest, 50, 100).await.expect("next").expect("the same transaction");
    assert_eq!(again.txn_id, txn.txn_id);
    assert_eq!(again.entries, txn.entries, "a retry carries what the first attempt carried");
    storage.federation.txn_sent(dest, &txn.txn_id, 2).await.expect("sent");
    assert_eq!(storage.federation.backlog(dest).await.expect("backlog"), 1, "the late entry waits for the next one");
    let next = storage.federation.next_txn(dest, 50, 100).await.expect("next").expect("a transaction");
    assert_eq!(next.entries.len(), 1);
    assert!(next.entries[0].edu.as_deref().is_some_and(|e| e.contains("\"b\"")));
    close(db, storage).await;
}
