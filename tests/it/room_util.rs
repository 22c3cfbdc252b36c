//! Helpers shared by the room tests: creating rooms, sending events and reading timelines.

#![allow(dead_code)]

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestServer, TestUser, enc};

/// Creates a room with `body` and returns its ID.
pub async fn create_room(s: &TestServer, user: &TestUser, body: Value) -> String {
    let (status, resp) = s.post("/_matrix/client/v3/createRoom", Some(&user.token), body.clone()).await;
    assert_eq!(status, StatusCode::OK, "createRoom {body}: {resp}");
    resp["room_id"].as_str().expect("room_id").to_owned()
}

pub fn room_path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", enc(room_id))
}

/// Sends an `m.room.message` text event with a fresh transaction ID; returns the event ID.
pub async fn send_text(s: &TestServer, user: &TestUser, room_id: &str, body: &str) -> String {
    let txn = format!("t{}", rand_txn());
    send_event(s, user, room_id, "m.room.message", &txn, json!({"msgtype": "m.text", "body": body})).await
}

pub async fn send_event(
    s: &TestServer,
    user: &TestUser,
    room_id: &str,
    event_type: &str,
    txn: &str,
    content: Value,
) -> String {
    let path = room_path(room_id, &format!("send/{}/{}", enc(event_type), enc(txn)));
    let (status, resp) = s.put(&path, Some(&user.token), content).await;
    assert_eq!(status, StatusCode::OK, "send {event_type} as {}: {resp}", user.user_id);
    resp["event_id"].as_str().expect("event_id").to_owned()
}

/// Sends a state event and returns its event ID.
pub async fn put_state(
    s: &TestServer,
    user: &TestUser,
    room_id: &str,
    event_type: &str,
    state_key: &str,
    content: Value,
) -> String {
    let (status, resp) = put_state_raw(s, user, room_id, event_type, state_key, content).await;
    assert_eq!(status, StatusCode::OK, "state {event_type}/{state_key} as {}: {resp}", user.user_id);
    resp["event_id"].as_str().expect("event_id").to_owned()
}

pub async fn put_state_raw(
    s: &TestServer,
    user: &TestUser,
    room_id: &str,
    event_type: &str,
    state_key: &str,
    content: Value,
) -> (StatusCode, Value) {
    let path = room_path(room_id, &format!("state/{}/{}", enc(event_type), enc(state_key)));
    s.put(&path, Some(&user.token), content).await
}

pub async fn join(s: &TestServer, user: &TestUser, room_id: &str) {
    let (status, resp) = s.post(&room_path(room_id, "join"), Some(&user.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{} joins {room_id}: {resp}", user.user_id);
    assert_eq!(resp["room_id"], room_id);
}

pub async fn invite(s: &TestServer, by: &TestUser, room_id: &str, whom: &TestUser) {
    let (status, resp) = s.post(&room_path(room_id, "invite"), Some(&by.token), json!({"user_id": whom.user_id})).await;
    assert_eq!(status, StatusCode::OK, "{} invites {}: {resp}", by.user_id, whom.user_id);
}

pub async fn leave(s: &TestServer, user: &TestUser, room_id: &str) {
    let (status, resp) = s.post(&room_path(room_id, "leave"), Some(&user.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{} leaves: {resp}", user.user_id);
}

/// One `/messages` request; `query` is appended as is (e.g. `dir=b&limit=5`).
pub async fn messages(s: &TestServer, user: &TestUser, room_id: &str, query: &str) -> (StatusCode, Value) {
    s.get(&room_path(room_id, &format!("messages?{query}")), Some(&user.token)).await
}

/// Pages through `/messages` until there is no `end`; returns every event (in the order the
/// pages gave them) and the number of pages.
pub async fn paginate_all(
    s: &TestServer,
    user: &TestUser,
    room_id: &str,
    dir: &str,
    limit: u32,
    extra: &str,
) -> (Vec<Value>, usize) {
    let mut events = Vec::new();
    let mut from: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = format!("dir={dir}&limit={limit}{extra}");
        if let Some(from) = &from {
            query.push_str(&format!("&from={}", enc(from)));
        }
        let (status, page) = messages(s, user, room_id, &query).await;
        assert_eq!(status, StatusCode::OK, "{query}: {page}");
        pages += 1;
        assert!(pages < 1000, "pagination does not end");
        let chunk = page["chunk"].as_array().expect("chunk").clone();
        assert!(chunk.len() <= limit as usize, "page larger than limit {limit}: {}", chunk.len());
        if let Some(from) = &from {
            assert_eq!(page["start"], from.as_str(), "start echoes from");
        }
        events.extend(chunk);
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => return (events, pages),
        }
    }
}

/// The event IDs of `events`.
pub fn ids(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["event_id"].as_str().expect("event_id").to_owned()).collect()
}

/// The message bodies of the `m.room.message` events among `events`.
pub fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The whole timeline as `user` sees it, oldest first.
pub async fn timeline(s: &TestServer, user: &TestUser, room_id: &str) -> Vec<Value> {
    paginate_all(s, user, room_id, "f", 100, "").await.0
}

/// `(type, state_key)` of a state event.
pub fn type_key(event: &Value) -> (String, String) {
    (event["type"].as_str().unwrap_or_default().to_owned(), event["state_key"].as_str().unwrap_or_default().to_owned())
}

/// The event of `events` with this type and state key.
pub fn find_state<'a>(events: &'a [Value], event_type: &str, state_key: &str) -> Option<&'a Value> {
    events.iter().find(|e| e["type"] == event_type && e["state_key"] == state_key)
}

fn rand_txn() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
