//! Reading timelines: /messages pagination and filters, /context, /event,
//! /timestamp_to_event, concurrent senders, and transaction-ID idempotency.

use std::{collections::HashSet, time::Duration};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    harness::{Backend, TestServer, TestUser, assert_error, both_backends, enc},
    room_util::{
        bodies, create_room, ids, invite, join, messages, paginate_all, put_state, room_path, send_text, timeline,
    },
};

both_backends!(
    pagination_backwards_and_forwards,
    pagination_filters_and_lazy_members,
    context_around_an_event,
    event_endpoint,
    timestamp_to_event,
    concurrent_senders_get_one_order,
    txn_ids_are_idempotent,
);

/// A room with alice and bob, and 60 messages between them (and two topic changes).
async fn busy_room(s: &TestServer) -> (TestUser, TestUser, String, Vec<String>) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(s, &alice, json!({"preset": "private_chat"})).await;
    invite(s, &alice, &room, &bob).await;
    join(s, &bob, &room).await;
    let mut sent = Vec::new();
    for i in 0..60 {
        let who = if i % 3 == 0 { &bob } else { &alice };
        sent.push(send_text(s, who, &room, &format!("m{i:02}")).await);
        if i == 20 || i == 40 {
            put_state(s, &alice, &room, "m.room.topic", "", json!({"topic": format!("t{i}")})).await;
        }
    }
    (alice, bob, room, sent)
}

fn assert_unique(events: &[Value]) {
    let all = ids(events);
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "duplicates in {all:?}");
}

async fn pagination_backwards_and_forwards(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let (alice, bob, room, sent) = busy_room(&s).await;

    // The reference: everything, oldest first, in one go.
    let (status, page) = messages(&s, &alice, &room, "dir=f&limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let all = page["chunk"].as_array().expect("chunk").clone();
    assert_unique(&all);
    assert_eq!(all[0]["type"], "m.room.create", "forwards from the beginning starts at the create event");
    let messages_in_order: Vec<String> =
        ids(&all.iter().filter(|e| e["type"] == "m.room.message").cloned().collect::<Vec<_>>());
    assert_eq!(messages_in_order, sent, "messages in the order sent");
    // createRoom's 6 events + invite + join + 60 messages + 2 topics.
    assert_eq!(all.len(), 6 + 2 + 60 + 2);

    for user in [&alice, &bob] {
        // Backwards by 7 from the live end: the same events, newest first, no gaps, no repeats.
        let (back, pages) = paginate_all(&s, user, &room, "b", 7, "").await;
        assert_unique(&back);
        let mut reversed = ids(&back);
        reversed.reverse();
        assert_eq!(reversed, ids(&all));
        let full_pages = all.len().div_ceil(7);
        assert!(pages == full_pages || pages == full_pages + 1, "{pages} pages for {} events", all.len());

        // Forwards by 7 from the beginning.
        let (fwd, _) = paginate_all(&s, user, &room, "f", 7, "").await;
        assert_eq!(ids(&fwd), ids(&all));
    }

    // Tokens from forward pages bound a range with `to`.
    let mut tokens = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..4 {
        let query = match &from {
            Some(f) => format!("dir=f&limit=7&from={}", enc(f)),
            None => "dir=f&limit=7".to_owned(),
        };
        let (_, page) = messages(&s, &alice, &room, &query).await;
        let end = page["end"].as_str().expect("end").to_owned();
        tokens.push(end.clone());
        from = Some(end);
    }
    // tokens[0] lies after 7 events, tokens[2] after 21.
    let (status, page) =
        messages(&s, &alice, &room, &format!("dir=f&limit=100&from={}&to={}", enc(&tokens[0]), enc(&tokens[2]))).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(page["chunk"].as_array().expect("chunk")), ids(&all[7..21]));
    let (status, page) =
        messages(&s, &alice, &room, &format!("dir=b&limit=100&from={}&to={}", enc(&tokens[2]), enc(&tokens[0]))).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut expected = ids(&all[7..21]);
    expected.reverse();
    assert_eq!(ids(page["chunk"].as_array().expect("chunk")), expected);
    // A limit inside the range still pages within it.
    let (_, page) =
        messages(&s, &alice, &room, &format!("dir=b&limit=5&from={}&to={}", enc(&tokens[2]), enc(&tokens[0]))).await;
    assert_eq!(ids(page["chunk"].as_array().expect("chunk")), expected[..5].to_vec());
    // Backwards from the first token: exactly the first 7 events.
    let (_, page) = messages(&s, &alice, &room, &format!("dir=b&from={}", enc(&tokens[0]))).await;
    assert_eq!(ids(page["chunk"].as_array().expect("chunk")).len(), 7);
    // Bad tokens and directions.
    let bad = messages(&s, &alice, &room, "dir=b&from=garbage").await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST, "{}", bad.1);
    let bad = messages(&s, &alice, &room, "dir=sideways").await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST, "{}", bad.1);
    s.finish().await;
}

async fn pagination_filters_and_lazy_members(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let (alice, bob, room, sent) = busy_room(&s).await;
    let filter = |f: Value| format!("&filter={}", enc(&f.to_string()));

    // Bob's messages only, paged backwards by 7.
    let (back, _) = paginate_all(
        &s,
        &alice,
        &room,
        "b",
        7,
        &filter(json!({"types": ["m.room.message"], "senders": [bob.user_id]})),
    )
    .await;
    let mut expected: Vec<String> = sent.iter().step_by(3).cloned().collect();
    expected.reverse();
    assert_eq!(ids(&back), expected);
    assert!(back.iter().all(|e| e["sender"] == bob.user_id.as_str()));

    // Everything but messages, forwards: exactly the state events, in order.
    let (fwd, _) = paginate_all(&s, &bob, &room, "f", 4, &filter(json!({"not_types": ["m.room.message"]}))).await;
    assert_eq!(fwd.len(), 10, "{:?}", ids(&fwd));
    assert!(fwd.iter().all(|e| e["type"] != "m.room.message" && e.get("state_key").is_some()));
    let topics: Vec<&str> =
        fwd.iter().filter(|e| e["type"] == "m.room.topic").filter_map(|e| e["content"]["topic"].as_str()).collect();
    assert_eq!(topics, vec!["t20", "t40"]);
    // Wildcards, and not_senders.
    let (only_topics, _) = paginate_all(&s, &bob, &room, "b", 50, &filter(json!({"types": ["m.room.t*"]}))).await;
    assert_eq!(only_topics.len(), 2);
    let (not_bob, _) = paginate_all(
        &s,
        &bob,
        &room,
        "b",
        50,
        &filter(json!({"types": ["m.room.message"], "not_senders": [bob.user_id]})),
    )
    .await;
    assert_eq!(not_bob.len(), 40);
    assert_eq!(bodies(&not_bob).first().map(String::as_str), Some("m59"));

    // lazy_load_members: the page's state holds the member events of the page's senders.
    let lazy = filter(json!({"lazy_load_members": true}));
    let (status, page) = messages(&s, &alice, &room, &format!("dir=b&limit=2{lazy}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let chunk = page["chunk"].as_array().expect("chunk");
    // The newest two: m59 (alice) and m58 (alice).
    assert_eq!(bodies(chunk), vec!["m59", "m58"]);
    let state = page["state"].as_array().expect("state with lazy loading");
    let members: Vec<&str> = state.iter().filter_map(|e| e["state_key"].as_str()).collect();
    assert_eq!(members, vec![alice.user_id.as_str()]);
    assert_eq!(state[0]["type"], "m.room.member");
    let (_, page) = messages(&s, &alice, &room, &format!("dir=b&limit=3{lazy}")).await;
    let mut members: Vec<&str> =
        page["state"].as_array().expect("state").iter().filter_map(|e| e["state_key"].as_str()).collect();
    members.sort_unstable();
    let mut want = vec![alice.user_id.as_str(), bob.user_id.as_str()];
    want.sort_unstable();
    assert_eq!(members, want);
    // Without lazy loading, no state.
    let (_, page) = messages(&s, &alice, &room, "dir=b&limit=3").await;
    assert!(page.get("state").is_none_or(|s| s.as_array().is_some_and(Vec::is_empty)), "{page}");
    // A malformed filter.
    let bad = messages(&s, &alice, &room, "dir=b&filter=%7Bnot%20json").await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST, "{}", bad.1);
    s.finish().await;
}

async fn context_around_an_event(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let (alice, _bob, room, sent) = busy_room(&s).await;
    let (_, page) = messages(&s, &alice, &room, "dir=f&limit=1000").await;
    let all = ids(page["chunk"].as_array().expect("chunk"));
    let at = all.iter().position(|id| *id == sent[30]).expect("m30");

    let (status, ctx) =
        s.get(&room_path(&room, &format!("context/{}?limit=6", enc(&sent[30]))), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{ctx}");
    assert_eq!(ctx["event"]["event_id"], sent[30].as_str());
    assert_eq!(ctx["event"]["content"]["body"], "m30");
    let before = ids(ctx["events_before"].as_array().expect("events_before"));
    let after = ids(ctx["events_after"].as_array().expect("events_after"));
    let mut want_before: Vec<String> = all[at - 3..at].to_vec();
    want_before.reverse();
    assert_eq!(before, want_before, "events_before: newest first");
    assert_eq!(after, all[at + 1..at + 4].to_vec(), "events_after: oldest first");
    // The state at the last event returned includes both members and the first topic.
    let state = ctx["state"].as_array().expect("state");
    assert!(state.iter().any(|e| e["type"] == "m.room.topic" && e["content"]["topic"] == "t20"), "{ctx}");
    assert!(!state.iter().any(|e| e["content"]["topic"] == "t40"), "state is not from the future");
    assert_eq!(state.iter().filter(|e| e["type"] == "m.room.member").count(), 2);

    // The tokens continue the timeline on either side.
    let start = ctx["start"].as_str().expect("start");
    let end = ctx["end"].as_str().expect("end");
    let (_, page) = messages(&s, &alice, &room, &format!("dir=b&limit=2&from={}", enc(start))).await;
    let mut want: Vec<String> = all[at - 5..at - 3].to_vec();
    want.reverse();
    assert_eq!(ids(page["chunk"].as_array().expect("chunk")), want);
    let (_, page) = messages(&s, &alice, &room, &format!("dir=f&limit=2&from={}", enc(end))).await;
    assert_eq!(ids(page["chunk"].as_array().expect("chunk")), all[at + 4..at + 6].to_vec());

    // A filter applies to the surrounding events, not to the event itself.
    let f = enc(&json!({"types": ["m.room.topic"]}).to_string());
    let (_, ctx) =
        s.get(&room_path(&room, &format!("context/{}?limit=2&filter={f}", enc(&sent[30]))), Some(&alice.token)).await;
    assert_eq!(ctx["event"]["event_id"], sent[30].as_str());
    let before: Vec<&str> = ctx["events_before"]
        .as_array()
        .expect("before")
        .iter()
        .filter_map(|e| e["content"]["topic"].as_str())
        .collect();
    let after: Vec<&str> =
        ctx["events_after"].as_array().expect("after").iter().filter_map(|e| e["content"]["topic"].as_str()).collect();
    assert_eq!((before, after), (vec!["t20"], vec!["t40"]));

    let unknown = room_path(&room, &format!("context/{}", enc("$nope")));
    assert_error(&s.get(&unknown, Some(&alice.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    s.finish().await;
}

async fn event_endpoint(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let alice2 = s.login("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    let other = create_room(&s, &alice, json!({})).await;
    let path = room_path(&room, "send/m.room.message/txn-1");
    let (_, body) = s.put(&path, Some(&alice.token), json!({"msgtype": "m.text", "body": "hi"})).await;
    let event_id = body["event_id"].as_str().expect("event_id").to_owned();

    let (status, event) = s.get(&room_path(&room, &format!("event/{}", enc(&event_id))), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["event_id"], event_id.as_str());
    assert_eq!(event["room_id"], room.as_str());
    assert_eq!(event["type"], "m.room.message");
    assert_eq!(event["sender"], alice.user_id.as_str());
    assert_eq!(event["content"], json!({"msgtype": "m.text", "body": "hi"}));
    assert!(event["origin_server_ts"].as_u64().is_some_and(|ts| ts > 1_600_000_000_000), "{event}");
    assert!(event["unsigned"]["age"].is_u64(), "{event}");
    // The transaction ID is shown to the device that sent it only.
    assert_eq!(event["unsigned"]["transaction_id"], "txn-1");
    let (_, seen_by_other_device) =
        s.get(&room_path(&room, &format!("event/{}", enc(&event_id))), Some(&alice2.token)).await;
    assert_eq!(seen_by_other_device["event_id"], event_id.as_str());
    assert!(seen_by_other_device["unsigned"].get("transaction_id").is_none(), "{seen_by_other_device}");
    for field in ["hashes", "signatures", "auth_events", "prev_events", "depth"] {
        assert!(event.get(field).is_none(), "{field} in client event: {event}");
    }
    // The wrong room, or an unknown event: 404.
    let wrong_room = s.get(&room_path(&other, &format!("event/{}", enc(&event_id))), Some(&alice.token)).await;
    assert_error(&wrong_room, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let unknown = s.get(&room_path(&room, &format!("event/{}", enc("$doesnotexist"))), Some(&alice.token)).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    s.finish().await;
}

async fn timestamp_to_event(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        // Each event in a millisecond of its own: wait until the clock has passed the last one.
        if let Some((_, last)) = sent.last() {
            while parley::service::now_ms() <= *last {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let id = send_text(&s, &alice, &room, &format!("at {i}")).await;
        let (_, event) = s.get(&room_path(&room, &format!("event/{}", enc(&id))), Some(&alice.token)).await;
        sent.push((id, event["origin_server_ts"].as_i64().expect("ts")));
    }
    for pair in sent.windows(2) {
        assert!(pair[0].1 < pair[1].1, "timestamps increase: {sent:?}");
    }
    let lookup =
        |ts: i64, dir: &str| format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={ts}&dir={dir}", enc(&room));
    for (k, (id, ts)) in sent.iter().enumerate() {
        for dir in ["f", "b"] {
            let (status, body) = s.get(&lookup(*ts, dir), Some(&alice.token)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["event_id"], id.as_str(), "exact ts, dir {dir}");
            assert_eq!(body["origin_server_ts"], *ts);
        }
        if k + 1 < sent.len() {
            let (_, body) = s.get(&lookup(ts + 1, "f"), Some(&alice.token)).await;
            assert_eq!(body["event_id"], sent[k + 1].0.as_str(), "next after {k}");
        }
        if k > 0 {
            let (_, body) = s.get(&lookup(ts - 1, "b"), Some(&alice.token)).await;
            assert_eq!(body["event_id"], sent[k - 1].0.as_str(), "last before {k}");
        }
    }
    let last_ts = sent[4].1;
    assert_error(
        &s.get(&lookup(last_ts + 60_000, "f"), Some(&alice.token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(&s.get(&lookup(1, "b"), Some(&alice.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // Before the first message, backwards: the room's last creation event.
    let (status, body) = s.get(&lookup(sent[0].1 - 1, "b"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = timeline(&s, &alice, &room).await;
    let before_first = events.iter().position(|e| e["event_id"] == sent[0].0.as_str()).expect("first") - 1;
    assert_eq!(body["event_id"], events[before_first]["event_id"]);
    s.finish().await;
}

async fn concurrent_senders_get_one_order(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let owner = s.register("owner").await;
    let room = create_room(&s, &owner, json!({"preset": "public_chat"})).await;
    let mut users = Vec::new();
    for i in 0..8 {
        let user = s.register(&format!("sender{i}")).await;
        join(&s, &user, &room).await;
        users.push(user);
    }
    let sends = users.iter().enumerate().map(|(u, user)| {
        let s = &s;
        let room = &room;
        async move {
            let mut ids = Vec::new();
            for i in 0..25 {
                ids.push(send_text(s, user, room, &format!("u{u} n{i:02}")).await);
            }
            ids
        }
    });
    let per_sender: Vec<Vec<String>> = futures::future::join_all(sends).await;

    let reference = {
        let (events, _) = paginate_all(&s, &owner, &room, "b", 50, "").await;
        events
    };
    let messages_seen: Vec<&Value> = reference.iter().filter(|e| e["type"] == "m.room.message").collect();
    assert_eq!(messages_seen.len(), 200);
    let unique: HashSet<&str> = messages_seen.iter().filter_map(|e| e["event_id"].as_str()).collect();
    assert_eq!(unique.len(), 200, "each message exactly once");
    let all_sent: HashSet<&str> = per_sender.iter().flatten().map(String::as_str).collect();
    assert_eq!(unique, all_sent);
    // Oldest first, each sender's messages come in the order they were sent.
    let mut oldest_first: Vec<&Value> = messages_seen.clone();
    oldest_first.reverse();
    for (u, ids_sent) in per_sender.iter().enumerate() {
        let theirs: Vec<&str> = oldest_first
            .iter()
            .filter(|e| e["sender"] == users[u].user_id.as_str())
            .filter_map(|e| e["event_id"].as_str())
            .collect();
        assert_eq!(theirs, ids_sent.iter().map(String::as_str).collect::<Vec<_>>(), "sender {u}");
    }
    // Every member sees the same single order, backwards and forwards.
    for user in &users {
        let (back, _) = paginate_all(&s, user, &room, "b", 50, "").await;
        assert_eq!(ids(&back), ids(&reference), "{} sees another order", user.user_id);
    }
    let (fwd, _) = paginate_all(&s, &users[3], &room, "f", 33, "").await;
    let mut reversed = ids(&reference);
    reversed.reverse();
    assert_eq!(ids(&fwd), reversed);
    // The DAG is a single chain in that order: each event follows the previous one.
    let mut prev: Option<(String, i64)> = None;
    for id in &reversed {
        let event_id = ruma::OwnedEventId::try_from(id.as_str()).expect("event id");
        let stored = s.services().storage.events.get(&event_id).await.expect("storage").expect("stored");
        let pdu: Value = serde_json::from_str(stored.json.get()).expect("json");
        let depth = pdu["depth"].as_i64().expect("depth");
        if let Some((prev_id, prev_depth)) = &prev {
            assert_eq!(pdu["prev_events"], json!([prev_id]), "{id}");
            assert_eq!(depth, prev_depth + 1, "{id}");
        }
        prev = Some((id.clone(), depth));
    }
    s.finish().await;
}

async fn txn_ids_are_idempotent(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let phone = s.login("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    let path = room_path(&room, "send/m.room.message/same-txn");
    let (status, first) = s.put(&path, Some(&alice.token), json!({"msgtype": "m.text", "body": "once"})).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let first = first["event_id"].as_str().expect("event_id").to_owned();
    // A retry, even with other content, is the same event.
    let (status, again) = s.put(&path, Some(&alice.token), json!({"msgtype": "m.text", "body": "twice?"})).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["event_id"], first.as_str());
    // Another device, same txnId: a new event.
    let (status, other) = s.put(&path, Some(&phone.token), json!({"msgtype": "m.text", "body": "from phone"})).await;
    assert_eq!(status, StatusCode::OK, "{other}");
    let from_phone = other["event_id"].as_str().expect("event_id").to_owned();
    assert_ne!(from_phone, first);
    // Another event type with the same txnId is another request.
    let (_, typed) = s.put(&room_path(&room, "send/org.example.x/same-txn"), Some(&alice.token), json!({})).await;
    let typed = typed["event_id"].as_str().expect("event_id").to_owned();
    assert!(typed != first && typed != from_phone);

    let count = |events: &[Value]| bodies(events);
    let events = timeline(&s, &alice, &room).await;
    assert_eq!(count(&events), vec!["once", "from phone"]);

    // Across a restart, the retry still maps to the same event.
    let db = s.stop().await;
    let s = TestServer::start_on(db, |_| {}).await;
    let (status, after) = s.put(&path, Some(&alice.token), json!({"msgtype": "m.text", "body": "after restart"})).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["event_id"], first.as_str());
    let (_, after) = s.put(&path, Some(&phone.token), json!({"msgtype": "m.text", "body": "after restart"})).await;
    assert_eq!(after["event_id"], from_phone.as_str());
    let events = timeline(&s, &alice, &room).await;
    assert_eq!(count(&events), vec!["once", "from phone"]);
    assert_eq!(events.iter().filter(|e| e["type"] == "org.example.x").count(), 1);
    // The sending device still sees its transaction ID.
    let sent = events.iter().find(|e| e["event_id"] == first.as_str()).expect("sent");
    assert_eq!(sent["unsigned"]["transaction_id"], "same-txn");
    // A fresh txnId after the restart is a fresh event.
    let fresh = send_text(&s, &alice, &room, "new").await;
    assert!(fresh != first && fresh != from_phone);
    s.finish().await;
}
