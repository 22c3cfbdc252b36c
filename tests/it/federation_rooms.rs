//! Rooms shared between Parleys: a remote join (make_join, send_join), messages both ways
//! in the same order, and the EDUs of a shared room (typing, receipts, presence, device
//! lists) crossing servers; server ACLs refusing a server.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    e2ee_util::{device_lists, token, upload_device_keys},
    fed_harness::{Peers, eventually},
    harness::{Backend, TestServer, TestUser, assert_error, both_backends, enc},
    room_util::{bodies, create_room, ids, put_state, room_path, send_text, timeline},
    sync::sync,
};

both_backends!(
    a_remote_user_joins_and_both_servers_keep_the_same_history,
    typing_receipts_presence_and_device_lists_cross_servers,
    a_server_denied_by_the_acl_is_refused,
    a_gap_too_long_to_fetch_is_filled_with_the_state_there,
    a_direct_chat_across_servers_starts_with_an_invite,
    an_invite_from_another_server_can_be_rejected,
    a_remote_redaction_needs_the_power_to_redact,
);

/// Joins `user` to `room` (an ID or alias) through the client API.
async fn join_via(s: &TestServer, user: &TestUser, room: &str, via: &str) -> (StatusCode, Value) {
    let query = if via.is_empty() { String::new() } else { format!("?via={via}") };
    s.post(&format!("/_matrix/client/v3/join/{}{query}", enc(room)), Some(&user.token), json!({})).await
}

/// Waits until `user` on `s` sees messages with these bodies in the room, in this order.
async fn wait_for_bodies(s: &TestServer, user: &TestUser, room_id: &str, want: &[&str]) -> Vec<Value> {
    eventually(30, &format!("{want:?} on {}", s.server_name), || async {
        let events = timeline(s, user, room_id).await;
        let got = bodies(&events);
        (got == want).then_some(events)
    })
    .await
}

/// A public room on hs1, with alice; bob of hs2 joins it by alias. Returns the room ID.
async fn shared_room(peers: &Peers, alice: &TestUser, bob: &TestUser) -> String {
    let (hs1, hs2) = (peers.get(0), peers.get(1));
    let room_id = create_room(hs1, alice, json!({"preset": "public_chat", "room_alias_name": "shared"})).await;
    let alias = format!("#shared:{}", peers.names[0]);
    let (status, body) = join_via(hs2, bob, &alias, "").await;
    assert_eq!(status, StatusCode::OK, "bob joins through hs1: {body}");
    assert_eq!(body["room_id"], room_id.as_str());
    // hs1 has bob's join once it arrived with send_join.
    let (status, members) = hs1.get(&room_path(&room_id, "joined_members"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{members}");
    assert!(members["joined"][&bob.user_id].is_object(), "hs1 sees bob joined: {members}");
    room_id
}

async fn a_remote_user_joins_and_both_servers_keep_the_same_history(backend: Backend) {
    let Some(peers) = Peers::spawn(backend, 2).await else { return };
    let (hs1, hs2) = (peers.get(0), peers.get(1));
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let room_id = shared_room(&peers, &alice, &bob).await;

    // hs2 knows the room now: its state, and alice as a member.
    let (status, members) = hs2.get(&room_path(&room_id, "joined_members"), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{members}");
    assert!(members["joined"][&alice.user_id].is_object(), "hs2 sees alice joined: {members}");
    assert!(members["joined"][&bob.user_id].is_object(), "{members}");
    let (status, state) = hs2.get(&room_path(&room_id, "state/m.room.join_rules/"), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state["join_rule"], "public");
    let initial = sync(hs2, &bob, "timeout=0").await;
    assert!(initial["rooms"]["join"][&room_id].is_object(), "bob's sync has the room: {initial}");

    // Messages both ways, interleaved; each server sees all, in the same order.
    send_text(hs1, &alice, &room_id, "one").await;
    wait_for_bodies(hs2, &bob, &room_id, &["one"]).await;
    send_text(hs2, &bob, &room_id, "two").await;
    wait_for_bodies(hs1, &alice, &room_id, &["one", "two"]).await;
    send_text(hs1, &alice, &room_id, "three").await;
    send_text(hs2, &bob, &room_id, "four").await;
    let on_hs1 = eventually(30, "all four on hs1", || async {
        let events = timeline(hs1, &alice, &room_id).await;
        (bodies(&events).len() == 4).then_some(events)
    })
    .await;
    let on_hs2 = eventually(30, "all four on hs2", || async {
        let events = timeline(hs2, &bob, &room_id).await;
        (bodies(&events).len() == 4).then_some(events)
    })
    .await;
    let messages =
        |events: &[Value]| -> Vec<Value> { events.iter().filter(|e| e["type"] == "m.room.message").cloned().collect() };
    let (on_hs1, on_hs2) = (messages(&on_hs1), messages(&on_hs2));
    // Causal order holds on both. "three" and "four" were sent concurrently (a fork of the
    // graph at the same depth); each server orders such siblings as it learnt them (a known
    // gap, in docs/federation.md).
    for events in [&on_hs1, &on_hs2] {
        assert_eq!(bodies(&events[..2]), ["one", "two"]);
        let mut last: Vec<String> = bodies(&events[2..]);
        last.sort();
        assert_eq!(last, ["four", "three"]);
    }
    let (mut hs1_ids, mut hs2_ids) = (ids(&on_hs1), ids(&on_hs2));
    hs1_ids.sort();
    hs2_ids.sort();
    assert_eq!(hs1_ids, hs2_ids, "the same events on both servers");

    // bob's live sync on hs2 delivers alice's next message.
    let since = token(hs2, &bob).await;
    send_text(hs1, &alice, &room_id, "live").await;
    // Long-polls (each may also end for presence and the like) until the message arrives.
    let mut since = since;
    let mut live = Vec::new();
    for _ in 0..20 {
        let resp = sync(hs2, &bob, &format!("since={since}&timeout=20000")).await;
        let events = resp["rooms"]["join"][&room_id]["timeline"]["events"].as_array().cloned().unwrap_or_default();
        live.extend(bodies(&events));
        since = resp["next_batch"].as_str().expect("next_batch").to_owned();
        if !live.is_empty() {
            break;
        }
    }
    assert_eq!(live, ["live"]);
    peers.finish().await;
}

async fn typing_receipts_presence_and_device_lists_cross_servers(backend: Backend) {
    let Some(peers) = Peers::spawn(backend, 2).await else { return };
    let (hs1, hs2) = (peers.get(0), peers.get(1));
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let room_id = shared_room(&peers, &alice, &bob).await;
    let event_id = send_text(hs1, &alice, &room_id, "read me").await;
    wait_for_bodies(hs2, &bob, &room_id, &["read me"]).await;

    // Typing: bob types on hs2, alice sees it on hs1.
    let (status, body) = hs2
        .put(
            &room_path(&room_id, &format!("typing/{}", enc(&bob.user_id))),
            Some(&bob.token),
            json!({"typing": true, "timeout": 30000}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually(30, "bob typing on hs1", || async {
        let resp = sync(hs1, &alice, "timeout=0").await;
        let ephemeral = resp["rooms"]["join"][&room_id]["ephemeral"]["events"].as_array().cloned().unwrap_or_default();
        ephemeral
            .iter()
            .any(|e| {
                e["type"] == "m.typing"
                    && e["content"]["user_ids"].as_array().is_some_and(|u| u.contains(&json!(bob.user_id)))
            })
            .then_some(())
    })
    .await;

    // Receipts: bob reads alice's message on hs2; alice sees the receipt on hs1.
    let (status, body) = hs2
        .post(&room_path(&room_id, &format!("receipt/m.read/{}", enc(&event_id))), Some(&bob.token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually(30, "bob's receipt on hs1", || async {
        let resp = sync(hs1, &alice, "timeout=0").await;
        let ephemeral = resp["rooms"]["join"][&room_id]["ephemeral"]["events"].as_array().cloned().unwrap_or_default();
        ephemeral
            .iter()
            .any(|e| e["type"] == "m.receipt" && e["content"][&event_id]["m.read"][&bob.user_id].is_object())
            .then_some(())
    })
    .await;

    // Presence: bob sets a status message on hs2; alice reads it on hs1.
    let (status, body) = hs2
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", enc(&bob.user_id)),
            Some(&bob.token),
            json!({"presence": "online", "status_msg": "across"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually(30, "bob's presence on hs1", || async {
        let (status, body) =
            hs1.get(&format!("/_matrix/client/v3/presence/{}/status", enc(&bob.user_id)), Some(&alice.token)).await;
        (status == StatusCode::OK && body["status_msg"] == "across" && body["presence"] == "online").then_some(())
    })
    .await;

    // Device lists: bob uploads keys for a new device; alice's sync says bob's devices changed,
    // and her key query (through hs1, to hs2) finds the device.
    let since = token(hs1, &alice).await;
    let bob2 = hs2.login("bob").await;
    upload_device_keys(hs2, &bob2).await;
    eventually(30, "bob's device list change on hs1", || async {
        let (changed, _, _) = device_lists(hs1, &alice, &since).await;
        changed.contains(&bob.user_id).then_some(())
    })
    .await;
    let answer = crate::e2ee_util::query(hs1, &alice, &[&bob.user_id]).await;
    assert!(answer["device_keys"][&bob.user_id][&bob2.device_id].is_object(), "{answer}");
    peers.finish().await;
}

/// An ACL denying hs3 keeps it out: its server cannot get a join template, and once its
/// user is in, its events are refused while hs2's still arrive.
async fn a_server_denied_by_the_acl_is_refused(backend: Backend) {
    let Some(peers) = Peers::spawn(backend, 3).await else { return };
    let (hs1, hs2, hs3) = (peers.get(0), peers.get(1), peers.get(2));
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let carol = hs3.register("carol").await;
    let room_id = shared_room(&peers, &alice, &bob).await;
    let (status, body) = join_via(hs3, &carol, &room_id, peers.names[0].as_str()).await;
    assert_eq!(status, StatusCode::OK, "carol joins before the ACL: {body}");

    put_state(
        hs1,
        &alice,
        &room_id,
        "m.room.server_acl",
        "",
        json!({"allow": ["*"], "deny": [peers.names[2].as_str()], "allow_ip_literals": true}),
    )
    .await;
    // hs1 does not send the room's events (the ACL included) to hs3 any more. hs2 has the
    // ACL; carol speaks, and hs1 (and hs2) refuse her PDU, and still take bob's.
    wait_for_state(hs2, &bob, &room_id, "m.room.server_acl").await;
    send_text(hs3, &carol, &room_id, "denied").await;
    send_text(hs2, &bob, &room_id, "allowed").await;
    let events = wait_for_bodies(hs1, &alice, &room_id, &["allowed"]).await;
    assert!(!bodies(&events).contains(&"denied".to_owned()));

    // Once carol has left, hs3 has nobody in the room: joining again needs a resident
    // server's template, and both refuse hs3.
    let (status, body) = hs3.post(&room_path(&room_id, "leave"), Some(&carol.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let result = join_via(hs3, &carol, &room_id, peers.names[0].as_str()).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // hs1 sends the room's events to hs2 only: with hs3 down, nothing waits for it.
    let mut peers = peers;
    let _hs3_db = peers.stop(2).await;
    let (hs1, hs2) = (peers.get(0), peers.get(1));
    send_text(hs1, &alice, &room_id, "after the acl").await;
    wait_for_bodies(hs2, &bob, &room_id, &["allowed", "after the acl"]).await;
    let backlog = hs1.services().storage.federation.backlog(&peers.names[2]).await.expect("backlog");
    assert_eq!(backlog, 0, "nothing is queued for the denied server");
    peers.finish().await;
}

async fn wait_for_state(s: &TestServer, user: &TestUser, room_id: &str, event_type: &str) {
    eventually(30, &format!("{event_type} on {}", s.server_name), || async {
        let (status, _) = s.get(&room_path(room_id, &format!("state/{event_type}/")), Some(&user.token)).await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
}

/// hs2 misses 100 of hs1's events (a lost queue, here dropped from hs1's outbox while hs2 is
/// down), among them a change of the room's name and a new member. The next event cannot
/// be connected through get_missing_events (at most 4 rounds of 20): hs2 asks hs1 for the
/// state there, and takes the event with it: bob sees it, and the room as it now is.
async fn a_gap_too_long_to_fetch_is_filled_with_the_state_there(backend: Backend) {
    let Some(mut peers) = Peers::spawn(backend, 2).await else { return };
    let alice = peers.get(0).register("alice").await;
    let bob = peers.get(1).register("bob").await;
    let room_id = shared_room(&peers, &alice, &bob).await;
    send_text(peers.get(0), &alice, &room_id, "before").await;
    wait_for_bodies(peers.get(1), &bob, &room_id, &["before"]).await;

    let hs2_db = peers.stop(1).await;
    let hs1 = peers.get(0);
    let carol = hs1.register("carol").await;
    for i in 0..50 {
        send_text(hs1, &alice, &room_id, &format!("missed {i}")).await;
    }
    put_state(hs1, &alice, &room_id, "m.room.name", "", json!({"name": "Renamed in the gap"})).await;
    crate::room_util::join(hs1, &carol, &room_id).await;
    for i in 50..100 {
        send_text(hs1, &alice, &room_id, &format!("missed {i}")).await;
    }
    hs1.db.as_ref().expect("db").execute("DELETE FROM federation_outbox").await;
    peers.start(1, hs2_db).await;
    send_text(peers.get(0), &alice, &room_id, "after the gap").await;

    let hs2 = peers.get(1);
    eventually(60, "the event after the gap on hs2", || async {
        let events = timeline(hs2, &bob, &room_id).await;
        bodies(&events).contains(&"after the gap".to_owned()).then_some(())
    })
    .await;
    let (status, name) = hs2.get(&room_path(&room_id, "state/m.room.name/"), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{name}");
    assert_eq!(name["name"], "Renamed in the gap");
    let (status, members) = hs2.get(&room_path(&room_id, "joined_members"), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{members}");
    assert!(members["joined"][&carol.user_id].is_object(), "carol's join came with the state: {members}");
    // And hs2 follows on: bob's next message reaches hs1.
    send_text(hs2, &bob, &room_id, "bob after the gap").await;
    eventually(30, "bob's message on hs1", || async {
        let events = timeline(peers.get(0), &alice, &room_id).await;
        bodies(&events).contains(&"bob after the gap".to_owned()).then_some(())
    })
    .await;
    peers.finish().await;
}

/// The invites in `user`'s initial sync, by room.
async fn invites(s: &TestServer, user: &TestUser) -> serde_json::Map<String, Value> {
    sync(s, user, "timeout=0").await["rooms"]["invite"].as_object().cloned().unwrap_or_default()
}

/// alice on hs1 opens a DM with bob on hs2: hs2 signs the invite, bob's sync shows it with
/// the room's name and alice's invite; bob accepts (a join through hs1) and they talk.
async fn a_direct_chat_across_servers_starts_with_an_invite(backend: Backend) {
    let Some(peers) = Peers::spawn(backend, 2).await else { return };
    let (hs1, hs2) = (peers.get(0), peers.get(1));
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let room_id = create_room(
        hs1,
        &alice,
        json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [bob.user_id], "name": "Alice and Bob"}),
    )
    .await;
    // hs1 stored the invite with hs2's signature on it.
    let (status, member) =
        hs1.get(&room_path(&room_id, &format!("state/m.room.member/{}", enc(&bob.user_id))), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{member}");
    assert_eq!(member["membership"], "invite");
    assert_eq!(member["is_direct"], true);

    let invite = eventually(30, "bob's invite", || async { invites(hs2, &bob).await.remove(&room_id) }).await;
    let state = invite["invite_state"]["events"].as_array().cloned().unwrap_or_default();
    let name = state.iter().find(|e| e["type"] == "m.room.name").expect("the room's name");
    assert_eq!(name["content"]["name"], "Alice and Bob");
    let own = state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .expect("bob's invite in the invite state");
    assert_eq!(own["sender"], alice.user_id.as_str());
    assert_eq!(own["content"]["membership"], "invite");

    // Accepting: no `via` needed, the invite says where the room is.
    let (status, body) =
        hs2.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room_id)), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(invites(hs2, &bob).await.is_empty(), "the invite is gone once accepted");
    send_text(hs1, &alice, &room_id, "hi bob").await;
    wait_for_bodies(hs2, &bob, &room_id, &["hi bob"]).await;
    send_text(hs2, &bob, &room_id, "hi alice").await;
    wait_for_bodies(hs1, &alice, &room_id, &["hi bob", "hi alice"]).await;
    peers.finish().await;
}

/// bob rejects an invite from hs1 to a room hs2 does not have: the invite goes, and his
/// sync shows the room as left; joining is no longer offered by the invite.
async fn an_invite_from_another_server_can_be_rejected(backend: Backend) {
    let Some(peers) = Peers::spawn(backend, 2).await else { return };
    let (hs1, hs2) = (peers.get(0), peers.get(1));
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let room_id = create_room(hs1, &alice, json!({"preset": "private_chat", "invite": [bob.user_id]})).await;
    let since = eventually(30, "bob's invite", || async {
        let resp = sync(hs2, &bob, "timeout=0").await;
        resp["rooms"]["invite"][&room_id]
            .is_object()
            .then(|| resp["next_batch"].as_str().expect("next_batch").to_owned())
    })
    .await;
    let (status, body) = hs2.post(&room_path(&room_id, "leave"), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let resp = sync(hs2, &bob, &format!("since={since}&timeout=0")).await;
    assert!(resp["rooms"]["leave"][&room_id].is_object(), "the rejected invite is left: {resp}");
    assert!(invites(hs2, &bob).await.is_empty());
    // Rejecting twice is refused: there is nothing to reject.
    let result = hs2.post(&room_path(&room_id, "leave"), Some(&bob.token), json!({})).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    peers.finish().await;
}

/// The content of `event_id` as `user` reads it on `s`.
async fn content_of(s: &TestServer, user: &TestUser, room_id: &str, event_id: &str) -> Value {
    let (status, event) = s.get(&room_path(room_id, &format!("event/{}", enc(event_id))), Some(&user.token)).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    event["content"].clone()
}

/// A redaction from another server applies to its own users' events, or with the power to
/// redact: hs2 (here, as a misbehaving server would) sends bob's redaction of alice's
/// message; hs1 keeps the redaction event but not its effect. bob's redaction of his own
/// message applies.
async fn a_remote_redaction_needs_the_power_to_redact(backend: Backend) {
    let Some(peers) = Peers::spawn(backend, 2).await else { return };
    let (hs1, hs2) = (peers.get(0), peers.get(1));
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let room_id = shared_room(&peers, &alice, &bob).await;
    let alices = send_text(hs1, &alice, &room_id, "keep me").await;
    wait_for_bodies(hs2, &bob, &room_id, &["keep me"]).await;
    let bobs = send_text(hs2, &bob, &room_id, "take me back").await;
    wait_for_bodies(hs1, &alice, &room_id, &["keep me", "take me back"]).await;
    wait_for_bodies(hs2, &bob, &room_id, &["keep me", "take me back"]).await;

    // hs2 builds and signs bob's redaction of alice's message on its head of the room.
    let room = ruma::OwnedRoomId::try_from(room_id.as_str()).expect("room ID");
    let head = hs2.services().rooms.state.head(&room).await.expect("head").expect("room on hs2");
    let state_id = |event_type: &str, key: &str| {
        head.state.get(&(event_type.to_owned(), key.to_owned())).map(|id| json!(id.as_str())).expect("state event")
    };
    let mut auth_events = vec![state_id("m.room.power_levels", ""), state_id("m.room.member", &bob.user_id)];
    if head.version != ruma::RoomVersionId::V12 {
        auth_events.push(state_id("m.room.create", ""));
    }
    let prev_events: Vec<Value> = head.extremities.iter().map(|(id, _)| json!(id.as_str())).collect();
    let depth = head.extremities.iter().map(|(_, d)| *d).max().unwrap_or(0) + 1;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_millis();
    let object = json!({
        "type": "m.room.redaction", "room_id": room_id, "sender": bob.user_id, "redacts": alices,
        "content": {"redacts": alices}, "origin_server_ts": now as u64, "depth": depth,
        "prev_events": prev_events, "auth_events": auth_events,
    });
    let mut object: ruma::CanonicalJsonObject = serde_json::from_value(object).expect("canonical");
    let redaction_id = hs2.services().server_keys.hash_and_sign_event(&mut object, &head.rules).expect("signed");
    let client = peers.client_as(peers.names[1].as_str(), hs2.services().server_keys.signing_key_arc(), None);
    let body = json!({"origin": peers.names[1].as_str(), "origin_server_ts": now as u64, "pdus": [object]});
    let answer = client
        .send_raw(&peers.names[0], http::Method::PUT, "/_matrix/federation/v1/send/evil-1", Some(&body))
        .await
        .expect("sent");
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));

    // The redaction is in hs1's room; alice's message is untouched.
    let (status, redaction) =
        hs1.get(&room_path(&room_id, &format!("event/{}", enc(redaction_id.as_str()))), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "the redaction was accepted as an event: {redaction}");
    assert_eq!(content_of(hs1, &alice, &room_id, &alices).await["body"], "keep me");

    // bob redacting his own message is his right, and hs1 applies it.
    let (status, body) =
        hs2.put(&room_path(&room_id, &format!("redact/{}/r1", enc(&bobs))), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually(30, "bob's own redaction applied on hs1", || async {
        content_of(hs1, &alice, &room_id, &bobs).await.get("body").is_none().then_some(())
    })
    .await;
    peers.finish().await;
}
