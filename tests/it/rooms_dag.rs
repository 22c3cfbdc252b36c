//! Rooms as an event DAG: events signed by another server's key are fed straight into the
//! receive pipeline, as a federation transaction would deliver them, and checked from the
//! outside (the client API) and the inside (placements, the stored head).

use std::sync::Arc;

use parley::{service::rooms::timeline::Received, storage::Placement};
use reqwest::StatusCode;
use ruma::{CanonicalJsonValue, OwnedEventId, OwnedUserId, RoomId, RoomVersionId};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    dag_util::{Draft, Graph, Remote, Served, Signed, accepted, deliver, serve},
    harness::{Backend, TestServer, TestUser, both_backends, enc},
    room_util::{create_room, room_path, send_text},
};

both_backends!(
    concurrent_power_change_and_ban_resolve_the_same_in_every_order_v10,
    concurrent_power_change_and_ban_resolve_the_same_in_every_order_v12,
    an_event_that_fails_its_auth_events_is_rejected_and_never_shown,
    an_event_valid_in_its_history_but_not_now_is_soft_failed,
    a_bad_content_hash_is_stored_redacted,
    a_bad_signature_or_an_unknown_key_is_dropped,
    an_outlier_joins_the_timeline_once_received_in_place,
    a_late_event_lands_at_its_place_in_history,
    a_backfilled_event_is_history_not_news,
    missing_prev_events_are_fetched_from_the_sender,
);

/// A room made by local `alice` on `s` (public), joined by remote users.
struct LocalRoom {
    alice: TestUser,
    room: String,
    graph: Graph,
    /// The room's latest event, as the graph knows it.
    last: OwnedEventId,
}

impl LocalRoom {
    async fn new(s: &TestServer, remote: &Remote, version: &RoomVersionId, joiners: &[&OwnedUserId]) -> Self {
        remote.trusted_by(s).await;
        let alice = s.register("alice").await;
        let room = create_room(s, &alice, json!({"preset": "public_chat", "room_version": version.as_str()})).await;
        let mut graph = Graph::new(&room, version);
        let last = head_extremity(s, &room).await;
        let mut last = graph.learn(s, last.as_str()).await;
        for user in joiners {
            let join = graph.make(remote, member(user, user, "join", vec![last.clone()]));
            accepted(&deliver(s, remote, &graph.room_id, &join).await);
            last = join.id;
        }
        Self { alice, room, graph, last }
    }

    fn room_id(&self) -> &RoomId {
        &self.graph.room_id
    }

    /// Sends a local message and teaches the graph about it.
    async fn local_text(&mut self, s: &TestServer, body: &str) -> OwnedEventId {
        let id = send_text(s, &self.alice, &self.room, body).await;
        let id = self.graph.learn(s, &id).await;
        self.last = id.clone();
        id
    }
}

fn member<'a>(
    sender: &'a OwnedUserId,
    target: &'a OwnedUserId,
    membership: &str,
    prev: Vec<OwnedEventId>,
) -> Draft<'a> {
    Draft {
        sender,
        kind: "m.room.member",
        state_key: Some(target.as_str()),
        content: json!({"membership": membership}),
        prev,
    }
}

fn text<'a>(sender: &'a OwnedUserId, body: &str, prev: Vec<OwnedEventId>) -> Draft<'a> {
    Draft { sender, kind: "m.room.message", state_key: None, content: json!({"msgtype": "m.text", "body": body}), prev }
}

async fn head_extremity(s: &TestServer, room: &str) -> OwnedEventId {
    let room_id = ruma::OwnedRoomId::try_from(room).expect("room ID");
    let head = s.services().rooms.state.head(&room_id).await.expect("head").expect("room");
    assert_eq!(head.extremities.len(), 1, "one forward extremity: {:?}", head.extremities);
    head.extremities[0].0.clone()
}

/// The current state as the server holds it (cache and database agree), hashed.
async fn state_hash(s: &TestServer, room_id: &RoomId) -> String {
    let rooms = &s.services().rooms;
    let head = rooms.state.head(room_id).await.expect("head").expect("room");
    let mut cached: Vec<(String, String, String)> =
        head.state.iter().map(|((t, k), id)| (t.clone(), k.clone(), id.to_string())).collect();
    cached.sort();
    let mut stored: Vec<(String, String, String)> = s
        .services()
        .storage
        .state
        .current_state(room_id)
        .await
        .expect("stored state")
        .into_iter()
        .map(|(t, k, id)| (t, k, id.to_string()))
        .collect();
    stored.sort();
    assert_eq!(cached, stored, "the cached head matches the database");
    let mut hasher = Sha256::new();
    for (t, k, id) in &stored {
        hasher.update(format!("{t}\0{k}\0{id}\n"));
    }
    format!("{:x}", hasher.finalize())
}

async fn placement(s: &TestServer, id: &OwnedEventId) -> Option<Placement> {
    s.services().rooms.events.pdu(id).await.expect("load").map(|p| p.placement.clone())
}

/// Event IDs of the room's /messages, newest first, as `user` sees them.
async fn messages(s: &TestServer, user: &TestUser, room: &str, limit: u32) -> Vec<String> {
    let (status, body) = s.get(&room_path(room, &format!("messages?dir=b&limit={limit}")), Some(&user.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ids(&body["chunk"])
}

/// The event IDs of a list of events (none when the list is absent).
fn ids(chunk: &Value) -> Vec<String> {
    chunk.as_array().into_iter().flatten().map(|e| e["event_id"].as_str().expect("event_id").to_owned()).collect()
}

async fn get_event(s: &TestServer, user: &TestUser, room: &str, id: &OwnedEventId) -> (StatusCode, Value) {
    s.get(&room_path(room, &format!("event/{}", enc(id.as_str()))), Some(&user.token)).await
}

async fn sync_token(s: &TestServer, user: &TestUser) -> String {
    let (status, body) = s.get("/_matrix/client/v3/sync?timeout=0", Some(&user.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["next_batch"].as_str().expect("next_batch").to_owned()
}

/// Event IDs an incremental sync since `since` delivers for `room`.
async fn synced(s: &TestServer, user: &TestUser, room: &str, since: &str) -> Vec<String> {
    let (status, body) = s.get(&format!("/_matrix/client/v3/sync?timeout=0&since={since}"), Some(&user.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ids(&body["rooms"]["join"][room]["timeline"]["events"])
}

// ---------------------------------------------------------------------------------------
// Forks and state resolution: the same events in every delivery order.

/// A room made entirely on the remote server, ready to fork: the events that build it, and
/// the fork (`D`: dave demotes bob; `B`: bob bans carol; `M`: dave merges both).
struct Fork {
    setup: Vec<Signed>,
    d: Signed,
    b: Signed,
    m: Signed,
    carol_join: OwnedEventId,
}

fn remote_room(remote: &Remote, version: &RoomVersionId) -> (ruma::OwnedRoomId, Fork) {
    let rules = version.rules().expect("rules");
    let (creator, dave, bob, carol) =
        (remote.user("rc"), remote.user("dave"), remote.user("bob"), remote.user("carol"));
    let v12 = rules.authorization.room_create_event_id_as_room_id;
    let mut create = ruma::CanonicalJsonObject::new();
    create.insert("type".into(), CanonicalJsonValue::String("m.room.create".into()));
    create.insert("sender".into(), CanonicalJsonValue::String(creator.to_string()));
    create.insert("state_key".into(), CanonicalJsonValue::String(String::new()));
    let mut content = ruma::CanonicalJsonObject::new();
    content.insert("room_version".into(), CanonicalJsonValue::String(version.to_string()));
    if !rules.authorization.use_room_create_sender {
        content.insert("creator".into(), CanonicalJsonValue::String(creator.to_string()));
    }
    create.insert("content".into(), CanonicalJsonValue::Object(content));
    create.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(1_000_000_u32.into()));
    create.insert("depth".into(), CanonicalJsonValue::Integer(1_u32.into()));
    create.insert("prev_events".into(), CanonicalJsonValue::Array(Vec::new()));
    create.insert("auth_events".into(), CanonicalJsonValue::Array(Vec::new()));
    let room_id = if v12 {
        None
    } else {
        let room_id = format!("!fork{}:{}", rand::random::<u32>(), remote.name);
        create.insert("room_id".into(), CanonicalJsonValue::String(room_id.clone()));
        Some(room_id)
    };
    let create = remote.sign(&rules, create);
    let room_id = match room_id {
        Some(room_id) => ruma::OwnedRoomId::try_from(room_id).expect("room ID"),
        None => parley_federation::pdu::room_id_from_create(&create.id).expect("v12 room ID"),
    };
    let mut graph = Graph::new(room_id.as_str(), version);
    graph.seed(&create, 1);
    let mut setup = vec![create.clone()];
    let mut last = create.id.clone();
    let push = |graph: &mut Graph, draft: Draft<'_>, setup: &mut Vec<Signed>| {
        let signed = graph.make(remote, draft);
        setup.push(signed.clone());
        signed.id
    };
    last = push(&mut graph, member(&creator, &creator, "join", vec![last]), &mut setup);
    let mut users = serde_json::Map::new();
    if !rules.authorization.explicitly_privilege_room_creators {
        users.insert(creator.to_string(), 100.into());
    }
    users.insert(dave.to_string(), 100.into());
    users.insert(bob.to_string(), 50.into());
    let levels = json!({"users": users, "users_default": 0, "state_default": 50, "ban": 50, "kick": 50});
    let draft = Draft {
        sender: &creator,
        kind: "m.room.power_levels",
        state_key: Some(""),
        content: levels.clone(),
        prev: vec![last],
    };
    last = push(&mut graph, draft, &mut setup);
    let draft = Draft {
        sender: &creator,
        kind: "m.room.join_rules",
        state_key: Some(""),
        content: json!({"join_rule": "public"}),
        prev: vec![last],
    };
    last = push(&mut graph, draft, &mut setup);
    for user in [&dave, &bob, &carol] {
        last = push(&mut graph, member(user, user, "join", vec![last]), &mut setup);
    }
    let carol_join = last.clone();
    // The fork, from the same point: dave takes bob's power away; bob bans carol.
    let mut demoted = levels;
    demoted["users"][bob.as_str()] = 0.into();
    let d = graph.make(
        remote,
        Draft {
            sender: &dave,
            kind: "m.room.power_levels",
            state_key: Some(""),
            content: demoted,
            prev: vec![last.clone()],
        },
    );
    let b = graph.make(remote, member(&bob, &carol, "ban", vec![last]));
    let m = graph.make(remote, text(&dave, "merge", vec![d.id.clone(), b.id.clone()]));
    (room_id, Fork { setup, d, b, m, carol_join })
}

async fn concurrent_power_change_and_ban_resolve(backend: Backend, version: RoomVersionId) {
    let remote = Remote::new("remote.test");
    let (room_id, fork) = remote_room(&remote, &version);
    let (d, b, m) = (&fork.d, &fork.b, &fork.m);
    // Every order of the fork; M first makes the receiver fetch what it lacks.
    let orders: [[&Signed; 3]; 6] = [[d, b, m], [b, d, m], [d, m, b], [b, m, d], [m, d, b], [m, b, d]];
    let mut hashes = Vec::new();
    for order in orders {
        let Some(s) = TestServer::spawn(backend).await else { return };
        remote.trusted_by(&s).await;
        let served = Arc::new(Served::default());
        for pdu in [d, b, m] {
            served.hold(pdu);
        }
        serve(&s, served);
        let timeline = &s.services().rooms.timeline;
        let (create, rest) = fork.setup.split_first().expect("setup");
        let begun = timeline.receive_create(&remote.name, create.object.clone()).await;
        accepted(&begun);
        for pdu in rest {
            accepted(&deliver(&s, &remote, &room_id, pdu).await);
        }
        for pdu in order {
            let received = deliver(&s, &remote, &room_id, pdu).await;
            assert!(
                matches!(received, Ok(Received::Accepted(_) | Received::SoftFailed(_))),
                "{} in order {:?}: {received:?}",
                pdu.id,
                order.map(|p| p.id.as_str())
            );
        }
        // Resolution: dave outranks bob, so the demotion applies first and the ban, by then
        // unauthorised, does not: carol is still in the room, bob has no power.
        let head = s.services().rooms.state.head(&room_id).await.expect("head").expect("room");
        let member_key = ("m.room.member".to_owned(), remote.user("carol").to_string());
        assert_eq!(head.state.get(&member_key), Some(&fork.carol_join), "carol still joined");
        assert_eq!(head.state.get(&("m.room.power_levels".to_owned(), String::new())), Some(&d.id), "bob demoted");
        let order_ids = order.map(|p| p.id.as_str());
        let extremities: Vec<_> = head.extremities.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(extremities, vec![m.id.clone()], "order {order_ids:?}");
        let carol = remote.user("carol");
        let membership = s.services().rooms.members.membership(&room_id, &carol).await.expect("membership");
        assert_eq!(membership.map(|m| m.membership), Some("join".to_owned()), "memberships follow the resolved state");
        assert!(matches!(placement(&s, &m.id).await, Some(Placement::Timeline)));
        hashes.push(state_hash(&s, &room_id).await);
        s.finish().await;
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "the same current state in every order: {hashes:?}");
}

async fn concurrent_power_change_and_ban_resolve_the_same_in_every_order_v10(backend: Backend) {
    concurrent_power_change_and_ban_resolve(backend, RoomVersionId::V10).await;
}

async fn concurrent_power_change_and_ban_resolve_the_same_in_every_order_v12(backend: Backend) {
    concurrent_power_change_and_ban_resolve(backend, RoomVersionId::V12).await;
}

// ---------------------------------------------------------------------------------------
// Rejection and soft failure.

async fn an_event_that_fails_its_auth_events_is_rejected_and_never_shown(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let remote = Remote::new("remote.test");
    let bob = remote.user("bob");
    let mut room = LocalRoom::new(&s, &remote, &RoomVersionId::V11, &[&bob]).await;
    let before = state_hash(&s, room.room_id()).await;
    let since = sync_token(&s, &room.alice).await;

    // Bob, at power 0, raises himself to 100: his own auth events forbid it.
    let levels = json!({"users": {room.alice.user_id.clone(): 100, bob.as_str(): 100}});
    let grab = room.graph.make(
        &remote,
        Draft {
            sender: &bob,
            kind: "m.room.power_levels",
            state_key: Some(""),
            content: levels,
            prev: vec![room.last.clone()],
        },
    );
    let received = deliver(&s, &remote, room.room_id(), &grab).await;
    assert!(matches!(received, Ok(Received::Rejected(_))), "{received:?}");
    assert!(matches!(placement(&s, &grab.id).await, Some(Placement::Rejected(_))), "stored as rejected");

    // An event that names the rejected one among its auth events is rejected too.
    let mut state = room.graph.state_after(&room.last).clone();
    state.insert(("m.room.power_levels".to_owned(), String::new()), grab.id.clone());
    let draft = text(&bob, "with forged power", vec![room.last.clone()]);
    let depth = 1 + s.services().rooms.events.pdu(&room.last).await.expect("load").expect("last").depth_i64();
    let follow = room.graph.make_with(&remote, &draft, &state, u64::try_from(depth).expect("depth"));
    let received = deliver(&s, &remote, room.room_id(), &follow).await;
    assert!(matches!(received, Ok(Received::Rejected(_))), "{received:?}");

    // Neither is ever shown, nor changes anything.
    for id in [&grab.id, &follow.id] {
        let got = get_event(&s, &room.alice, &room.room, id).await;
        assert_eq!(got.0, StatusCode::NOT_FOUND, "{got:?}");
        assert!(!messages(&s, &room.alice, &room.room, 50).await.contains(&id.to_string()));
        assert!(!synced(&s, &room.alice, &room.room, &since).await.contains(&id.to_string()));
    }
    assert_eq!(state_hash(&s, room.room_id()).await, before, "current state unchanged");
    assert_eq!(head_extremity(&s, &room.room).await, room.last, "rejected events are no extremities");
    // The next local event builds on the room as it was.
    let next = room.local_text(&s, "after").await;
    let pdu = s.services().rooms.events.pdu(&next).await.expect("load").expect("next");
    assert!(!pdu.prev_events.contains(&grab.id) && !pdu.prev_events.contains(&follow.id));
    s.finish().await;
}

async fn an_event_valid_in_its_history_but_not_now_is_soft_failed(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let remote = Remote::new("remote.test");
    let bob = remote.user("bob");
    let mut room = LocalRoom::new(&s, &remote, &RoomVersionId::V11, &[&bob]).await;
    let fork_point = room.last.clone();
    let since = sync_token(&s, &room.alice).await;
    // Alice bans bob here; bob, not having seen it, speaks after his join.
    let (status, body) =
        s.post(&room_path(&room.room, "ban"), Some(&room.alice.token), json!({"user_id": bob.as_str()})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ban = head_extremity(&s, &room.room).await;
    let late = room.graph.make(&remote, text(&bob, "did you hear me?", vec![fork_point]));
    let received = deliver(&s, &remote, room.room_id(), &late).await;
    assert!(matches!(received, Ok(Received::SoftFailed(_))), "{received:?}");
    assert_eq!(placement(&s, &late.id).await, Some(Placement::SoftFailed));

    assert_eq!(get_event(&s, &room.alice, &room.room, &late.id).await.0, StatusCode::NOT_FOUND);
    assert!(!messages(&s, &room.alice, &room.room, 50).await.contains(&late.id.to_string()));
    let delivered = synced(&s, &room.alice, &room.room, &since).await;
    assert!(delivered.contains(&ban.to_string()) && !delivered.contains(&late.id.to_string()), "{delivered:?}");
    // Not built upon: the head is still the ban alone, and the next event follows only it.
    assert_eq!(head_extremity(&s, &room.room).await, ban);
    let next = room.local_text(&s, "after").await;
    let pdu = s.services().rooms.events.pdu(&next).await.expect("load").expect("next");
    assert_eq!(pdu.prev_events, vec![ban]);
    s.finish().await;
}

// ---------------------------------------------------------------------------------------
// Hashes and signatures.

async fn a_bad_content_hash_is_stored_redacted(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let remote = Remote::new("remote.test");
    let bob = remote.user("bob");
    let room = LocalRoom::new(&s, &remote, &RoomVersionId::V11, &[&bob]).await;
    let mut pdu = room.graph.make_with(
        &remote,
        &text(&bob, "what was signed", vec![room.last.clone()]),
        room.graph.state_after(&room.last),
        1 + u64::from(s.services().rooms.events.pdu(&room.last).await.expect("load").expect("last").depth),
    );
    // The content is not covered by the signature (only its hash is), so this keeps the
    // signature valid and the event ID the same, but breaks the hash.
    if let Some(CanonicalJsonValue::Object(content)) = pdu.object.get_mut("content") {
        content.insert("body".into(), CanonicalJsonValue::String("tampered".into()));
    }
    accepted(&deliver(&s, &remote, room.room_id(), &pdu).await);
    let (status, event) = get_event(&s, &room.alice, &room.room, &pdu.id).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["content"], json!({}), "stored and served redacted: {event}");
    let stored = s.services().rooms.events.pdu(&pdu.id).await.expect("load").expect("stored");
    assert!(!stored.json.get().contains("tampered") && !stored.json.get().contains("what was signed"));
    s.finish().await;
}

async fn a_bad_signature_or_an_unknown_key_is_dropped(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let remote = Remote::new("remote.test");
    let bob = remote.user("bob");
    let room = LocalRoom::new(&s, &remote, &RoomVersionId::V11, &[&bob]).await;
    let depth = 1 + u64::from(s.services().rooms.events.pdu(&room.last).await.expect("load").expect("last").depth);
    let mut forged = room.graph.make_with(
        &remote,
        &text(&bob, "forged", vec![room.last.clone()]),
        room.graph.state_after(&room.last),
        depth,
    );
    // Another signature of the right length: signatures are not part of the event ID.
    let zeros = base64_64_zero_bytes();
    if let Some(CanonicalJsonValue::Object(signatures)) = forged.object.get_mut("signatures")
        && let Some(CanonicalJsonValue::Object(by_server)) = signatures.get_mut(remote.name.as_str())
    {
        for value in by_server.values_mut() {
            *value = CanonicalJsonValue::String(zeros.clone());
        }
    }
    let dropped = deliver(&s, &remote, room.room_id(), &forged).await;
    assert!(dropped.is_err(), "{dropped:?}");
    assert!(placement(&s, &forged.id).await.is_none(), "nothing stored");

    // A server whose key is unknown: its event is dropped too.
    let stranger = Remote::new("stranger.test");
    let eve = stranger.user("eve");
    let unknown = room.graph.make_with(
        &stranger,
        &member(&eve, &eve, "join", vec![room.last.clone()]),
        room.graph.state_after(&room.last),
        depth,
    );
    let dropped = deliver(&s, &stranger, room.room_id(), &unknown).await;
    assert!(dropped.is_err(), "{dropped:?}");
    assert!(placement(&s, &unknown.id).await.is_none(), "nothing stored");
    assert!(
        !messages(&s, &room.alice, &room.room, 50)
            .await
            .iter()
            .any(|id| *id == forged.id.as_str() || *id == unknown.id.as_str())
    );
    s.finish().await;
}

fn base64_64_zero_bytes() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode([0_u8; 64])
}

// ---------------------------------------------------------------------------------------
// Outliers, late events, backfill, missing events.

async fn an_outlier_joins_the_timeline_once_received_in_place(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let remote = Remote::new("remote.test");
    let bob = remote.user("bob");
    let mut room = LocalRoom::new(&s, &remote, &RoomVersionId::V11, &[&bob]).await;
    let since = sync_token(&s, &room.alice).await;
    let event = room.graph.make(&remote, text(&bob, "fetched by ID first", vec![room.last.clone()]));
    let timeline = &s.services().rooms.timeline;
    let stored = timeline.receive_outlier(&remote.name, room.room_id(), event.object.clone()).await;
    assert!(matches!(stored, Ok(Received::Outlier(_))), "{stored:?}");
    let pdu = s.services().rooms.events.pdu(&event.id).await.expect("load").expect("stored");
    assert_eq!((pdu.placement.clone(), pdu.stream_pos, pdu.state_group), (Placement::Outlier, 0, None));
    assert_eq!(get_event(&s, &room.alice, &room.room, &event.id).await.0, StatusCode::NOT_FOUND);
    assert!(!messages(&s, &room.alice, &room.room, 50).await.contains(&event.id.to_string()));
    assert!(synced(&s, &room.alice, &room.room, &since).await.is_empty());

    // Received again, in its place: it joins the timeline.
    accepted(&deliver(&s, &remote, room.room_id(), &event).await);
    assert_eq!(get_event(&s, &room.alice, &room.room, &event.id).await.0, StatusCode::OK);
    assert_eq!(messages(&s, &room.alice, &room.room, 1).await, vec![event.id.to_string()]);
    assert_eq!(synced(&s, &room.alice, &room.room, &since).await, vec![event.id.to_string()]);
    room.last = event.id.clone();
    assert_eq!(head_extremity(&s, &room.room).await, event.id);
    s.finish().await;
}

async fn a_late_event_lands_at_its_place_in_history(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let remote = Remote::new("remote.test");
    let bob = remote.user("bob");
    let mut room = LocalRoom::new(&s, &remote, &RoomVersionId::V11, &[&bob]).await;
    let m1 = room.local_text(&s, "m1").await;
    let mut local = vec![m1.clone()];
    for n in 2..=5 {
        local.push(room.local_text(&s, &format!("m{n}")).await);
    }
    let since = sync_token(&s, &room.alice).await;
    // Bob answered m1 long ago; his event arrives only now.
    let late = room.graph.make(&remote, text(&bob, "reply to m1", vec![m1.clone()]));
    accepted(&deliver(&s, &remote, room.room_id(), &late).await);

    // /sync delivers it once, as new (it arrived live)...
    assert_eq!(synced(&s, &room.alice, &room.room, &since).await, vec![late.id.to_string()]);
    // ...and /messages shows it where it belongs: beside m2, which also follows m1.
    let expected: Vec<String> =
        [&local[4], &local[3], &local[2], &late.id, &local[1], &local[0]].iter().map(|id| id.to_string()).collect();
    let newest = messages(&s, &room.alice, &room.room, 6).await;
    assert_eq!(newest, expected);
    // Page by page, across the late event, the tokens lose and repeat nothing.
    let mut paged = Vec::new();
    let mut from: Option<String> = None;
    while paged.len() < 6 {
        let query = match &from {
            Some(token) => format!("messages?dir=b&limit=2&from={}", enc(token)),
            None => "messages?dir=b&limit=2".to_owned(),
        };
        let (status, body) = s.get(&room_path(&room.room, &query), Some(&room.alice.token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        paged.extend(ids(&body["chunk"]));
        from = Some(body["end"].as_str().expect("end token").to_owned());
    }
    assert_eq!(paged, expected);
    // Forwards from m1's context, the same order the other way round.
    let (status, body) =
        s.get(&room_path(&room.room, &format!("context/{}?limit=10", enc(m1.as_str()))), Some(&room.alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after: Vec<String> = ids(&body["events_after"]);
    let mut forwards = expected[..5].to_vec();
    forwards.reverse();
    assert_eq!(after, forwards);
    s.finish().await;
}

async fn a_backfilled_event_is_history_not_news(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let remote = Remote::new("remote.test");
    let bob = remote.user("bob");
    let mut room = LocalRoom::new(&s, &remote, &RoomVersionId::V11, &[&bob]).await;
    let m1 = room.local_text(&s, "m1").await;
    let m2 = room.local_text(&s, "m2").await;
    let since = sync_token(&s, &room.alice).await;
    let old = room.graph.make(&remote, text(&bob, "from the archive", vec![m1.clone()]));
    let timeline = &s.services().rooms.timeline;
    let received = timeline.receive_backfilled(&remote.name, room.room_id(), old.object.clone()).await;
    assert!(matches!(received, Ok(Received::Accepted(_))), "{received:?}");
    let pdu = s.services().rooms.events.pdu(&old.id).await.expect("load").expect("stored");
    assert!(pdu.stream_pos < 0, "below every live position: {}", pdu.stream_pos);

    assert!(synced(&s, &room.alice, &room.room, &since).await.is_empty(), "not news");
    assert_eq!(head_extremity(&s, &room.room).await, m2, "history does not move the head");
    let expected = vec![m2.to_string(), old.id.to_string(), m1.to_string()];
    assert_eq!(messages(&s, &room.alice, &room.room, 3).await, expected);
    s.finish().await;
}

async fn missing_prev_events_are_fetched_from_the_sender(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let remote = Remote::new("remote.test");
    let bob = remote.user("bob");
    let mut room = LocalRoom::new(&s, &remote, &RoomVersionId::V11, &[&bob]).await;
    let served = Arc::new(Served::default());
    serve(&s, Arc::clone(&served));
    let first = room.graph.make(&remote, text(&bob, "one", vec![room.last.clone()]));
    let second = room.graph.make(&remote, text(&bob, "two", vec![first.id.clone()]));
    let third = room.graph.make(&remote, text(&bob, "three", vec![second.id.clone()]));
    for pdu in [&first, &second, &third] {
        served.hold(pdu);
    }
    // Only the last arrives; the two before it are fetched and received first.
    accepted(&deliver(&s, &remote, room.room_id(), &third).await);
    let expected: Vec<String> = [&third, &second, &first].iter().map(|p| p.id.to_string()).collect();
    assert_eq!(messages(&s, &room.alice, &room.room, 3).await, expected);
    assert_eq!(head_extremity(&s, &room.room).await, third.id);

    // Without anywhere to fetch from, an event whose prev_events are unknown is not stored.
    let orphan_parent = room.graph.make(&remote, text(&bob, "never sent", vec![third.id.clone()]));
    let orphan = room.graph.make(&remote, text(&bob, "orphan", vec![orphan_parent.id.clone()]));
    let received = deliver(&s, &remote, room.room_id(), &orphan).await;
    assert!(matches!(received, Ok(Received::MissingPrevEvents(_))), "{received:?}");
    assert!(placement(&s, &orphan.id).await.is_none());
    room.last = third.id;
    s.finish().await;
}
