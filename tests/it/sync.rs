//! `/sync`: what it returns, that it wakes when something happens and only then, and that
//! every device gets every event exactly once, in order, under concurrent senders.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, TestUser, assert_error, both_backends, enc};

both_backends!(
    initial_and_incremental,
    invites_leaves_and_forgotten_rooms,
    long_poll_wakes_on_news_only,
    bad_tokens_are_refused,
    filters_shape_the_response,
    lazy_loaded_members,
    account_data_in_sync,
    exactly_once_in_order_under_concurrency,
    old_token_catches_up_completely,
    messages_see_acknowledged_sends,
);

pub async fn create_room(s: &TestServer, user: &TestUser, body: Value) -> String {
    let (status, resp) = s.post("/_matrix/client/v3/createRoom", Some(&user.token), body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp["room_id"].as_str().expect("room_id").to_owned()
}

pub async fn send(s: &TestServer, user: &TestUser, room: &str, body: &str) -> String {
    let txn = format!("t{}", rand::random::<u64>());
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
    let (status, resp) = s.put(&path, Some(&user.token), json!({"msgtype": "m.text", "body": body})).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp["event_id"].as_str().expect("event_id").to_owned()
}

pub async fn join(s: &TestServer, user: &TestUser, room: &str) {
    let (status, resp) =
        s.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(room)), Some(&user.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

pub async fn sync(s: &TestServer, user: &TestUser, query: &str) -> Value {
    let (status, resp) = s.get(&format!("/_matrix/client/v3/sync?{query}"), Some(&user.token)).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp
}

fn timeline<'a>(resp: &'a Value, room: &str) -> &'a [Value] {
    resp["rooms"]["join"][room]["timeline"]["events"].as_array().map_or(&[], Vec::as_slice)
}

fn bodies(events: &[Value]) -> Vec<String> {
    events.iter().filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)).collect()
}

async fn initial_and_incremental(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat", "name": "Hall"})).await;
    join(&s, &bob, &room).await;
    send(&s, &alice, &room, "one").await;

    let first = sync(&s, &bob, "").await;
    let joined = &first["rooms"]["join"][&room];
    assert!(joined.is_object(), "{first}");
    assert!(timeline(&first, &room).iter().any(|e| e["content"]["body"] == "one"));
    assert!(timeline(&first, &room).iter().all(|e| e.get("room_id").is_none()), "sync events carry no room_id");
    // The whole room fits in the timeline, so the state before it is empty (and may be omitted).
    let state_types: Vec<&str> = joined["state"]["events"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    let timeline_types: Vec<&str> = timeline(&first, &room).iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(state_types.contains(&"m.room.create") || timeline_types.contains(&"m.room.create"), "{joined}");
    assert_eq!(joined["summary"]["m.joined_member_count"], 2);
    assert_eq!(joined["summary"]["m.heroes"], json!([alice.user_id]));
    let next = first["next_batch"].as_str().expect("next_batch").to_owned();

    // Nothing new: an immediate incremental sync has no rooms.
    let quiet = sync(&s, &bob, &format!("since={next}")).await;
    assert!(quiet["rooms"]["join"].as_object().is_none_or(|r| r.is_empty()), "{quiet}");

    let two = send(&s, &alice, &room, "two").await;
    let three = send(&s, &bob, &room, "three").await;
    let inc = sync(&s, &bob, &format!("since={next}")).await;
    let events = timeline(&inc, &room);
    let ids: Vec<&str> = events.iter().filter_map(|e| e["event_id"].as_str()).collect();
    assert_eq!(ids, vec![two.as_str(), three.as_str()], "exactly the new events, in order");
    assert_ne!(inc["rooms"]["join"][&room]["timeline"]["limited"], true);
    assert!(inc["rooms"]["join"][&room]["state"]["events"].as_array().is_none_or(Vec::is_empty));
    // The sender's own device sees its transaction ID; nobody else's does.
    let own = events.iter().find(|e| e["event_id"] == three.as_str()).expect("own event");
    assert!(own["unsigned"]["transaction_id"].is_string(), "{own}");
    let alice_view = sync(&s, &alice, &format!("since={next}")).await;
    let theirs = timeline(&alice_view, &room).iter().find(|e| e["event_id"] == three.as_str()).expect("event");
    assert!(theirs["unsigned"].get("transaction_id").is_none(), "{theirs}");

    // Repeating the same since token is safe and gives the same events.
    let again = sync(&s, &bob, &format!("since={next}")).await;
    assert_eq!(bodies(timeline(&again, &room)), vec!["two", "three"]);

    // The legacy r0 path works too.
    let (status, _) = s.get(&format!("/_matrix/client/r0/sync?since={next}"), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK);
    s.finish().await;
}

async fn invites_leaves_and_forgotten_rooms(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let start = sync(&s, &bob, "").await["next_batch"].as_str().expect("token").to_owned();
    let room =
        create_room(&s, &alice, json!({"preset": "private_chat", "name": "Secret", "invite": [bob.user_id]})).await;
    let inc = sync(&s, &bob, &format!("since={start}")).await;
    let invite = &inc["rooms"]["invite"][&room]["invite_state"]["events"];
    let types: Vec<&str> = invite.as_array().expect("invite_state").iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(types.contains(&"m.room.name") && types.contains(&"m.room.member"), "{invite}");
    assert!(invite.as_array().expect("events").iter().all(|e| e.get("event_id").is_none()), "stripped state");
    let next = inc["next_batch"].as_str().expect("token").to_owned();

    join(&s, &bob, &room).await;
    send(&s, &alice, &room, "welcome").await;
    let joined = sync(&s, &bob, &format!("since={next}")).await;
    assert!(bodies(timeline(&joined, &room)).contains(&"welcome".to_owned()));
    let state = &joined["rooms"]["join"][&room]["state"]["events"];
    assert!(
        state.as_array().expect("state").iter().any(|e| e["type"] == "m.room.name"),
        "newly joined: full state {state}"
    );
    let next = joined["next_batch"].as_str().expect("token").to_owned();

    // Kicked: the room moves to `leave`, with the kick as the last timeline event.
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)),
            Some(&alice.token),
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    send(&s, &alice, &room, "after the kick").await;
    let left = sync(&s, &bob, &format!("since={next}")).await;
    let leave = &left["rooms"]["leave"][&room]["timeline"]["events"];
    let last = leave.as_array().and_then(|e| e.last()).expect("leave timeline");
    assert_eq!((last["type"].as_str(), last["content"]["membership"].as_str()), (Some("m.room.member"), Some("leave")));
    assert!(
        !bodies(leave.as_array().expect("events")).contains(&"after the kick".to_owned()),
        "nothing after the leave"
    );
    assert!(left["rooms"]["join"].get(&room).is_none());

    // Initial syncs show left rooms only with include_leave, and never forgotten ones.
    let plain = sync(&s, &bob, "").await;
    assert!(plain["rooms"]["leave"].get(&room).is_none(), "{plain}");
    let filter = enc(&json!({"room": {"include_leave": true}}).to_string());
    let with_leave = sync(&s, &bob, &format!("filter={filter}")).await;
    assert!(with_leave["rooms"]["leave"].get(&room).is_some(), "{with_leave}");
    let (status, _) =
        s.post(&format!("/_matrix/client/v3/rooms/{}/forget", enc(&room)), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let forgotten = sync(&s, &bob, &format!("filter={filter}")).await;
    assert!(forgotten["rooms"]["leave"].get(&room).is_none(), "{forgotten}");
    s.finish().await;
}

async fn long_poll_wakes_on_news_only(backend: Backend) {
    // Presence off: bob's own presence would otherwise (rightly) be news for him.
    let Some(s) = TestServer::spawn_with(backend, |c| c.presence.enabled = false).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let shared = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &shared).await;
    let elsewhere = create_room(&s, &carol, json!({"preset": "public_chat"})).await;
    let next = sync(&s, &bob, "").await["next_batch"].as_str().expect("token").to_owned();

    // A message bob cannot see does not end his wait: he waits out the timeout, empty-handed.
    let started = Instant::now();
    let waiting = {
        let (http, url, token) =
            (s.http.clone(), s.url(&format!("/_matrix/client/v3/sync?since={next}&timeout=1500")), bob.token.clone());
        tokio::spawn(async move {
            http.get(url).bearer_auth(token).send().await.expect("sync").json::<Value>().await.expect("json")
        })
    };
    s.wait_for_long_poll(&bob.user_id).await;
    send(&s, &carol, &elsewhere, "not for bob").await;
    let resp = waiting.await.expect("join");
    assert!(started.elapsed() >= Duration::from_millis(1400), "returned early without news: {resp}");
    assert!(resp["rooms"]["join"].as_object().is_none_or(|r| r.is_empty()), "{resp}");

    // A message for him ends the wait long before the timeout.
    let started = Instant::now();
    let waiting = {
        let (http, url, token) =
            (s.http.clone(), s.url(&format!("/_matrix/client/v3/sync?since={next}&timeout=30000")), bob.token.clone());
        tokio::spawn(async move {
            http.get(url).bearer_auth(token).send().await.expect("sync").json::<Value>().await.expect("json")
        })
    };
    s.wait_for_long_poll(&bob.user_id).await;
    let event = send(&s, &alice, &shared, "for bob").await;
    let resp = waiting.await.expect("join");
    assert!(started.elapsed() < Duration::from_secs(20), "did not wake");
    let ids: Vec<&str> = timeline(&resp, &shared).iter().filter_map(|e| e["event_id"].as_str()).collect();
    assert_eq!(ids, vec![event.as_str()]);
    s.finish().await;
}

async fn bad_tokens_are_refused(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let bob = s.register("bob").await;
    for token in ["garbage", "s", "s-1", "12", "s12_x"] {
        let resp = s.get(&format!("/_matrix/client/v3/sync?since={token}"), Some(&bob.token)).await;
        assert_error(&resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    // A well-formed token this server never issued (from the future).
    let resp = s.get("/_matrix/client/v3/sync?since=s999999999", Some(&bob.token)).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let resp = s.get("/_matrix/client/v3/sync?filter=nosuchfilter", Some(&bob.token)).await;
    assert_error(&resp, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(&s.get("/_matrix/client/v3/sync", None).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    s.finish().await;
}

async fn filters_shape_the_response(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let other = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    for i in 0..6 {
        send(&s, &alice, &room, &format!("a{i}")).await;
        send(&s, &bob, &room, &format!("b{i}")).await;
    }
    let topic_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room));
    assert_eq!(s.put(&topic_path, Some(&alice.token), json!({"topic": "t"})).await.0, StatusCode::OK);

    // Stored filter, by ID.
    let filter = json!({"room": {"timeline": {"limit": 3, "types": ["m.room.message"], "senders": [alice.user_id]}}});
    let (status, created) = s
        .post(&format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id)), Some(&alice.token), filter.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = created["filter_id"].as_str().expect("filter_id");
    let (_, fetched) =
        s.get(&format!("/_matrix/client/v3/user/{}/filter/{id}", enc(&alice.user_id)), Some(&alice.token)).await;
    assert_eq!(fetched["room"]["timeline"]["limit"], 3, "{fetched}");
    let forbidden =
        s.get(&format!("/_matrix/client/v3/user/{}/filter/{id}", enc(&alice.user_id)), Some(&bob.token)).await;
    assert_error(&forbidden, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let resp = sync(&s, &alice, &format!("filter={id}")).await;
    assert_eq!(bodies(timeline(&resp, &room)), vec!["a3", "a4", "a5"]);
    assert_eq!(resp["rooms"]["join"][&room]["timeline"]["limited"], true);
    assert!(resp["rooms"]["join"][&room]["timeline"]["prev_batch"].is_string());

    // Inline filters: not_types, rooms / not_rooms, event_fields, event_format.
    let inline = |f: Value| enc(&f.to_string());
    let resp = sync(
        &s,
        &alice,
        &format!("filter={}", inline(json!({"room": {"timeline": {"not_types": ["m.room.message"]}}}))),
    )
    .await;
    assert!(timeline(&resp, &room).iter().all(|e| e["type"] != "m.room.message"));
    assert!(timeline(&resp, &room).iter().any(|e| e["type"] == "m.room.topic"));
    let resp = sync(&s, &alice, &format!("filter={}", inline(json!({"room": {"rooms": [room]}})))).await;
    assert!(resp["rooms"]["join"].get(&other).is_none() && resp["rooms"]["join"].get(&room).is_some());
    let resp = sync(&s, &alice, &format!("filter={}", inline(json!({"room": {"not_rooms": [room]}})))).await;
    assert!(resp["rooms"]["join"].get(&room).is_none() && resp["rooms"]["join"].get(&other).is_some());
    let resp = sync(&s, &alice, &format!("filter={}", inline(json!({"event_fields": ["type", "content.body"], "room": {"timeline": {"limit": 1, "types": ["m.room.message"]}}})))).await;
    assert_eq!(timeline(&resp, &room), &[json!({"type": "m.room.message", "content": {"body": "b5"}})]);
    let resp = sync(
        &s,
        &alice,
        &format!("filter={}", inline(json!({"event_format": "federation", "room": {"timeline": {"limit": 1}}}))),
    )
    .await;
    let pdu = &timeline(&resp, &room)[0];
    assert!(pdu["hashes"]["sha256"].is_string() && pdu["signatures"].is_object() && pdu["depth"].is_u64(), "{pdu}");
    s.finish().await;
}

async fn lazy_loaded_members(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let mut others = Vec::new();
    for i in 0..5 {
        let user = s.register(&format!("member{i}")).await;
        join(&s, &user, &room).await;
        others.push(user);
    }
    for _ in 0..12 {
        send(&s, &alice, &room, "filler").await;
    }
    send(&s, &others[2], &room, "from member2").await;
    let lazy = enc(&json!({"room": {"timeline": {"limit": 2}, "state": {"lazy_load_members": true}}}).to_string());
    let resp = sync(&s, &alice, &format!("filter={lazy}")).await;
    let state = resp["rooms"]["join"][&room]["state"]["events"].as_array().expect("state");
    let members: Vec<&str> =
        state.iter().filter(|e| e["type"] == "m.room.member").filter_map(|e| e["state_key"].as_str()).collect();
    let mut members = members;
    members.sort_unstable();
    let mut expected = vec![alice.user_id.as_str(), others[2].user_id.as_str()];
    expected.sort_unstable();
    assert_eq!(members, expected, "only the senders' (and own) member events");
    assert!(state.iter().any(|e| e["type"] == "m.room.power_levels"), "other state still comes");
    // Without lazy loading every member comes.
    let resp =
        sync(&s, &alice, &format!("filter={}", enc(&json!({"room": {"timeline": {"limit": 2}}}).to_string()))).await;
    let state = resp["rooms"]["join"][&room]["state"]["events"].as_array().expect("state");
    assert_eq!(state.iter().filter(|e| e["type"] == "m.room.member").count(), 6);
    s.finish().await;
}

async fn account_data_in_sync(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    let global = format!("/_matrix/client/v3/user/{}/account_data/m.direct", enc(&alice.user_id));
    assert_eq!(s.put(&global, Some(&alice.token), json!({"@bob:x": [room]})).await.0, StatusCode::OK);
    let first = sync(&s, &alice, "").await;
    let events = first["account_data"]["events"].as_array().expect("account data");
    assert!(events.iter().any(|e| e["type"] == "m.direct" && e["content"]["@bob:x"][0] == room.as_str()), "{first}");
    let next = first["next_batch"].as_str().expect("token").to_owned();
    let per_room = format!("/_matrix/client/v3/user/{}/rooms/{}/account_data/m.tag", enc(&alice.user_id), enc(&room));
    assert_eq!(s.put(&per_room, Some(&alice.token), json!({"tags": {"u.work": {}}})).await.0, StatusCode::OK);
    let inc = sync(&s, &alice, &format!("since={next}&timeout=5000")).await;
    assert!(inc["account_data"]["events"].as_array().is_none_or(Vec::is_empty), "only what changed: {inc}");
    let room_data = inc["rooms"]["join"][&room]["account_data"]["events"].as_array().expect("room account data");
    assert_eq!(room_data, &vec![json!({"type": "m.tag", "content": {"tags": {"u.work": {}}}})]);
    s.finish().await;
}

/// A device's view: event IDs per room, in the order its syncs delivered them.
type Seen = HashMap<String, Vec<String>>;

/// The token a device starts from: an initial sync's `next_batch`.
async fn start_token(s: &TestServer, user: &TestUser) -> String {
    let first =
        sync(s, user, &format!("filter={}", enc(&json!({"room": {"timeline": {"limit": 0}}}).to_string()))).await;
    first["next_batch"].as_str().expect("token").to_owned()
}

async fn sync_until(s: &TestServer, user: &TestUser, mut since: String, rooms: &[String], expected: usize) -> Seen {
    let mut seen: Seen = HashMap::new();
    // Room for every message between two syncs, so a gap would mean a lost event.
    let filter = enc(&json!({"room": {"timeline": {"limit": 1000}}}).to_string());
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.values().map(Vec::len).sum::<usize>() < expected {
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} messages arrived",
            seen.values().map(Vec::len).sum::<usize>()
        );
        let resp = sync(s, user, &format!("since={since}&timeout=10000&filter={filter}")).await;
        for room in rooms {
            let joined = &resp["rooms"]["join"][room];
            assert_ne!(joined["timeline"]["limited"], true, "a gap: events would be lost");
            for event in timeline(&resp, room) {
                if event["type"] == "m.room.message" {
                    seen.entry(room.clone()).or_default().push(event["event_id"].as_str().expect("id").to_owned());
                }
            }
        }
        since = resp["next_batch"].as_str().expect("token").to_owned();
    }
    seen
}

async fn exactly_once_in_order_under_concurrency(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let mut senders = Vec::new();
    for i in 0..6 {
        senders.push(s.register(&format!("sender{i}")).await);
    }
    let reader = s.register("reader").await;
    let reader_phone = s.login("reader").await;
    let watcher = s.register("watcher").await;
    let rooms = vec![
        create_room(&s, &senders[0], json!({"preset": "public_chat"})).await,
        create_room(&s, &senders[0], json!({"preset": "public_chat"})).await,
    ];
    for room in &rooms {
        for user in senders.iter().skip(1).chain([&reader, &watcher]) {
            join(&s, user, room).await;
        }
    }
    let per_sender = 15;
    let expected = senders.len() * per_sender;
    // Every device has its starting token before the burst begins.
    let devices = [&reader, &reader_phone, &watcher];
    let mut tokens = Vec::new();
    for device in devices {
        tokens.push(start_token(&s, device).await);
    }
    let syncs: Vec<_> =
        devices.iter().zip(tokens).map(|(d, token)| sync_until(&s, d, token, &rooms, expected)).collect();
    let sends = futures::future::join_all(senders.iter().enumerate().map(|(i, user)| {
        let rooms = &rooms;
        let s = &s;
        async move {
            for n in 0..per_sender {
                send(s, user, &rooms[(i + n) % 2], &format!("{i}-{n}")).await;
            }
        }
    }));
    let (views, ()) = tokio::join!(futures::future::join_all(syncs), async {
        sends.await;
    });
    // Exactly once, and the same order on every device, which is the room's order.
    for room in &rooms {
        let (status, page) = s
            .get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=f&limit=1000", enc(room)), Some(&reader.token))
            .await;
        assert_eq!(status, StatusCode::OK);
        let order: Vec<String> = page["chunk"]
            .as_array()
            .expect("chunk")
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
            .collect();
        for view in &views {
            assert_eq!(view.get(room).cloned().unwrap_or_default(), order, "device view differs from the room order");
        }
    }
    let total: usize = views[0].values().map(Vec::len).sum();
    assert_eq!(total, expected);
    s.finish().await;
}

async fn old_token_catches_up_completely(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let old = sync(&s, &bob, "").await["next_batch"].as_str().expect("token").to_owned();
    let mut sent = Vec::new();
    for i in 0..40 {
        sent.push(send(&s, &alice, &room, &format!("m{i}")).await);
    }
    // The catch-up sync is limited; its prev_batch leads back, through /messages, to the old token.
    let resp = sync(&s, &bob, &format!("since={old}")).await;
    let joined = &resp["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true);
    let mut got: Vec<String> =
        timeline(&resp, &room).iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect();
    let mut from = joined["timeline"]["prev_batch"].as_str().expect("prev_batch").to_owned();
    loop {
        let (status, page) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=7&from={from}&to={old}", enc(&room)),
                Some(&bob.token),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let mut chunk: Vec<String> = page["chunk"]
            .as_array()
            .expect("chunk")
            .iter()
            .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
            .collect();
        chunk.reverse();
        chunk.extend(got);
        got = chunk;
        match page["end"].as_str() {
            Some(end) => from = end.to_owned(),
            None => break,
        }
    }
    assert_eq!(got, sent, "every event since the old token, once, in order");
    s.finish().await;
}

/// `/messages` without `from` starts at the current position: an event acknowledged to its
/// sender is on that page even while a lower stream position is still being written. (The
/// page read up to the watermark, which that open position held below the event:
/// rooms_visibility::history_world_readable failed now and then in full parallel runs.)
async fn messages_see_acknowledged_sends(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    let open = s.services().stream.allocate();
    let event = send(&s, &alice, &room, "acknowledged").await;
    let reading = {
        let url = s.url(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=5", enc(&room)));
        let (http, token) = (s.http.clone(), alice.token.clone());
        tokio::spawn(async move {
            http.get(url).bearer_auth(token).send().await.expect("messages").json::<Value>().await.expect("json")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.services().stream.readers_waiting() == 0 && !reading.is_finished() {
        assert!(Instant::now() < deadline, "the read neither waited nor answered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(open);
    let page = reading.await.expect("join");
    let first = page["chunk"][0]["event_id"].as_str();
    assert_eq!(first, Some(event.as_str()), "the acknowledged event heads the page: {page}");
    s.finish().await;
}
