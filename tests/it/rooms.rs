//! Rooms over HTTP: createRoom and its options, membership endpoints, state, redaction and
//! the member lists, on both backends.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    harness::{Backend, TestServer, assert_error, both_backends, enc},
    room_util::{
        create_room, find_state, invite, join, leave, messages, put_state, put_state_raw, room_path, send_text,
        timeline, type_key,
    },
};

both_backends!(
    create_private_chat_sends_the_spec_sequence,
    create_public_and_trusted_presets,
    create_room_versions_and_overrides,
    join_leave_forget_and_joined_rooms,
    invite_kick_ban_unban,
    knock_then_invite,
    state_send_and_read,
    redaction_serves_redacted_form,
    member_lists,
    a_refused_create_room_leaves_nothing_behind,
    redacting_an_unknown_event_is_not_found,
);

async fn create_private_chat_sends_the_spec_sequence(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(
        &s,
        &alice,
        json!({
            "preset": "private_chat",
            "name": "Secret plans",
            "topic": "Plans, secret",
            "room_alias_name": "plans",
            "invite": [bob.user_id],
            "is_direct": true,
            "room_version": "11",
            "initial_state": [
                {"type": "org.example.config", "state_key": "k", "content": {"v": 1}},
                {"type": "m.room.guest_access", "content": {"guest_access": "forbidden"}},
            ],
        }),
    )
    .await;
    let alias = format!("#plans:{}", s.server_name);

    // The events createRoom sends, in the spec's order: create, creator's join, power levels,
    // canonical alias, the preset's state (minus what initial_state overrides), initial_state,
    // name, topic, invites.
    let events = timeline(&s, &alice, &room).await;
    let order: Vec<(String, String)> = events.iter().map(type_key).collect();
    let pair = |t: &str, k: &str| (t.to_owned(), k.to_owned());
    assert_eq!(
        order,
        vec![
            pair("m.room.create", ""),
            pair("m.room.member", &alice.user_id),
            pair("m.room.power_levels", ""),
            pair("m.room.canonical_alias", ""),
            pair("m.room.join_rules", ""),
            pair("m.room.history_visibility", ""),
            pair("org.example.config", "k"),
            pair("m.room.guest_access", ""),
            pair("m.room.name", ""),
            pair("m.room.topic", ""),
            pair("m.room.member", &bob.user_id),
        ]
    );
    for event in &events {
        assert_eq!(event["room_id"], room.as_str(), "{event}");
        assert_eq!(event["sender"], alice.user_id.as_str(), "{event}");
        assert!(event.get("hashes").is_none() && event.get("signatures").is_none(), "client format: {event}");
    }
    let content = |t: &str, k: &str| find_state(&events, t, k).expect(t)["content"].clone();
    // v11: no `creator` in the create event.
    assert_eq!(content("m.room.create", ""), json!({"room_version": "11"}));
    assert_eq!(content("m.room.member", &alice.user_id)["membership"], "join");
    assert_eq!(content("m.room.join_rules", ""), json!({"join_rule": "invite"}));
    assert_eq!(content("m.room.history_visibility", ""), json!({"history_visibility": "shared"}));
    assert_eq!(content("m.room.guest_access", ""), json!({"guest_access": "forbidden"}));
    assert_eq!(content("m.room.canonical_alias", "")["alias"], alias.as_str());
    assert_eq!(content("m.room.name", ""), json!({"name": "Secret plans"}));
    assert_eq!(content("m.room.topic", "")["topic"], "Plans, secret");
    assert_eq!(content("org.example.config", "k"), json!({"v": 1}));
    let invite_content = content("m.room.member", &bob.user_id);
    assert_eq!(invite_content["membership"], "invite");
    assert_eq!(invite_content["is_direct"], true);
    let power = content("m.room.power_levels", "");
    assert_eq!(power["users"], json!({ alice.user_id.clone(): 100 }));
    assert_eq!(power["invite"], 0, "private_chat lets members invite");

    // The alias resolves, percent-encoded in the path.
    let (status, body) = s.get(&format!("/_matrix/client/v3/directory/room/{}", enc(&alias)), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    assert_eq!(body["servers"], json!([s.server_name]));

    // A private room is not published; the creator is joined, the invitee is not.
    let (_, vis) = s.get(&format!("/_matrix/client/v3/directory/list/room/{}", enc(&room)), None).await;
    assert_eq!(vis["visibility"], "private");
    let (_, joined) = s.get("/_matrix/client/v3/joined_rooms", Some(&alice.token)).await;
    assert_eq!(joined["joined_rooms"], json!([room]));
    let (_, joined) = s.get("/_matrix/client/v3/joined_rooms", Some(&bob.token)).await;
    assert_eq!(joined["joined_rooms"], json!([]));

    // The same alias again is refused.
    let again = s.post("/_matrix/client/v3/createRoom", Some(&alice.token), json!({"room_alias_name": "plans"})).await;
    assert_error(&again, StatusCode::BAD_REQUEST, "M_ROOM_IN_USE");
    s.finish().await;
}

async fn create_public_and_trusted_presets(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;

    let public = create_room(&s, &alice, json!({"preset": "public_chat", "room_version": "10"})).await;
    let state = current_state(&s, &alice, &public).await;
    let content = |t: &str| find_state(&state, t, "").expect(t)["content"].clone();
    assert_eq!(content("m.room.join_rules"), json!({"join_rule": "public"}));
    assert_eq!(content("m.room.guest_access"), json!({"guest_access": "forbidden"}));
    assert_eq!(content("m.room.history_visibility"), json!({"history_visibility": "shared"}));
    assert_eq!(content("m.room.power_levels")["invite"], 50, "public_chat: inviting needs 50");
    // v10 still names the creator in the create event.
    assert_eq!(content("m.room.create"), json!({"room_version": "10", "creator": alice.user_id}));
    // A preset alone does not publish the room; visibility does.
    let (_, vis) = s.get(&format!("/_matrix/client/v3/directory/list/room/{}", enc(&public)), None).await;
    assert_eq!(vis["visibility"], "private");
    let listed = create_room(&s, &alice, json!({"visibility": "public", "name": "Listed"})).await;
    let (_, vis) = s.get(&format!("/_matrix/client/v3/directory/list/room/{}", enc(&listed)), None).await;
    assert_eq!(vis["visibility"], "public");
    let listed_state = current_state(&s, &alice, &listed).await;
    assert_eq!(
        find_state(&listed_state, "m.room.join_rules", "").expect("join rules")["content"]["join_rule"],
        "public",
        "visibility public without preset means public_chat"
    );

    // trusted_private_chat: invitees get the creator's power level.
    let trusted = create_room(
        &s,
        &alice,
        json!({"preset": "trusted_private_chat", "invite": [bob.user_id], "room_version": "10"}),
    )
    .await;
    let state = current_state(&s, &alice, &trusted).await;
    let power = &find_state(&state, "m.room.power_levels", "").expect("power")["content"];
    assert_eq!(power["users"], json!({ alice.user_id.clone(): 100, bob.user_id.clone(): 100 }));
    assert_eq!(find_state(&state, "m.room.join_rules", "").expect("jr")["content"]["join_rule"], "invite");
    assert_eq!(find_state(&state, "m.room.guest_access", "").expect("ga")["content"]["guest_access"], "can_join");
    let member = &find_state(&state, "m.room.member", &bob.user_id).expect("invite")["content"];
    assert_eq!(member["membership"], "invite");
    assert!(member.get("is_direct").is_none(), "not direct unless asked: {member}");
    // Bob, at 100, may change the name after joining.
    join(&s, &bob, &trusted).await;
    put_state(&s, &bob, &trusted, "m.room.name", "", json!({"name": "Bob's"})).await;
    s.finish().await;
}

async fn create_room_versions_and_overrides(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    for version in ["10", "11", "12"] {
        let room = create_room(
            &s,
            &alice,
            json!({
                "room_version": version,
                "creation_content": {"m.federate": false, "type": "org.example.kind"},
                "power_level_content_override": {"events_default": 20, "events": {"m.room.topic": 75}},
            }),
        )
        .await;
        let state = current_state(&s, &alice, &room).await;
        let create = &find_state(&state, "m.room.create", "").expect("create")["content"];
        assert_eq!(create["room_version"], version);
        assert_eq!(create["m.federate"], false);
        assert_eq!(create["type"], "org.example.kind");
        assert_eq!(create.get("creator").is_some(), version == "10", "{create}");
        let power = &find_state(&state, "m.room.power_levels", "").expect("power")["content"];
        assert_eq!(power["events_default"], 20, "override applied");
        // The override replaces top-level keys wholesale.
        assert_eq!(power["events"], json!({"m.room.topic": 75}));
        assert_eq!(power["state_default"], 50, "other defaults kept");
        if version == "12" {
            // Creators hold power through the create event and are not listed.
            assert_eq!(power["users"], json!({}));
            assert!(!room.contains(':'), "v12 room IDs have no server part: {room}");
        } else {
            assert_eq!(power["users"][&alice.user_id], 100);
            assert!(room.ends_with(&format!(":{}", s.server_name)), "{room}");
        }
        // The room works: a message goes in and comes back.
        let event_id = send_text(&s, &alice, &room, "hello").await;
        let (status, event) = s.get(&room_path(&room, &format!("event/{}", enc(&event_id))), Some(&alice.token)).await;
        assert_eq!(status, StatusCode::OK, "{event}");
        assert_eq!(event["content"]["body"], "hello");
    }
    for unsupported in ["9", "1", "org.example.custom"] {
        let result =
            s.post("/_matrix/client/v3/createRoom", Some(&alice.token), json!({"room_version": unsupported})).await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION");
    }
    let (_, joined) = s.get("/_matrix/client/v3/joined_rooms", Some(&alice.token)).await;
    assert_eq!(joined["joined_rooms"].as_array().map(Vec::len), Some(3), "failed creations left no rooms");
    s.finish().await;
}

async fn join_leave_forget_and_joined_rooms(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat", "room_alias_name": "lobby"})).await;

    // Join by room ID.
    join(&s, &bob, &room).await;
    // Join by alias, percent-encoded.
    let alias = format!("#lobby:{}", s.server_name);
    let (status, body) =
        s.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), Some(&carol.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    // And /join/{roomId} works too (joining again is a no-op membership change).
    let (status, body) = s.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let unknown_alias = format!("/_matrix/client/v3/join/{}", enc(&format!("#nowhere:{}", s.server_name)));
    assert_error(&s.post(&unknown_alias, Some(&bob.token), json!({})).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    let (_, members) = s.get(&room_path(&room, "joined_members"), Some(&alice.token)).await;
    let mut joined: Vec<&String> = members["joined"].as_object().expect("joined").keys().collect();
    joined.sort();
    assert_eq!(joined, vec![&alice.user_id, &bob.user_id, &carol.user_id]);
    let (_, rooms) = s.get("/_matrix/client/v3/joined_rooms", Some(&carol.token)).await;
    assert_eq!(rooms["joined_rooms"], json!([room]));

    // Forgetting needs leaving first.
    let forget = room_path(&room, "forget");
    let early = s.post(&forget, Some(&bob.token), json!({})).await;
    assert_eq!(early.0, StatusCode::BAD_REQUEST, "{}", early.1);
    leave(&s, &bob, &room).await;
    let (_, rooms) = s.get("/_matrix/client/v3/joined_rooms", Some(&bob.token)).await;
    assert_eq!(rooms["joined_rooms"], json!([]));
    // Leaving again: not in the room.
    assert_error(
        &s.post(&room_path(&room, "leave"), Some(&bob.token), json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let (status, body) = s.post(&forget, Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The leave is in the timeline, sent by bob.
    let events = timeline(&s, &alice, &room).await;
    let last = events.last().expect("events");
    assert_eq!(type_key(last), ("m.room.member".to_owned(), bob.user_id.clone()));
    assert_eq!(last["content"]["membership"], "leave");
    assert_eq!(last["sender"], bob.user_id.as_str());
    assert_eq!(last["unsigned"]["prev_content"]["membership"], "join");
    // Bob can come back to a public room after forgetting it.
    join(&s, &bob, &room).await;
    let (_, rooms) = s.get("/_matrix/client/v3/joined_rooms", Some(&bob.token)).await;
    assert_eq!(rooms["joined_rooms"], json!([room]));
    s.finish().await;
}

async fn invite_kick_ban_unban(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "private_chat"})).await;

    // Uninvited: no way in.
    assert_error(
        &s.post(&room_path(&room, "join"), Some(&bob.token), json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    invite(&s, &alice, &room, &bob).await;
    assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await, "invite");
    // Inviting someone who does not exist.
    let ghost = format!("@ghost:{}", s.server_name);
    let result = s.post(&room_path(&room, "invite"), Some(&alice.token), json!({"user_id": ghost})).await;
    assert_eq!(result.0, StatusCode::NOT_FOUND, "{}", result.1);
    join(&s, &bob, &room).await;
    invite(&s, &bob, &room, &carol).await;
    join(&s, &carol, &room).await;

    // Bob (power 0, kick needs 50) cannot kick or ban.
    let kick = room_path(&room, "kick");
    let ban = room_path(&room, "ban");
    let unban = room_path(&room, "unban");
    assert_error(
        &s.post(&kick, Some(&bob.token), json!({"user_id": carol.user_id})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.post(&ban, Some(&bob.token), json!({"user_id": carol.user_id})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );

    // Alice kicks carol, with a reason; the member event says who and why.
    let (status, body) = s.post(&kick, Some(&alice.token), json!({"user_id": carol.user_id, "reason": "noise"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = timeline(&s, &alice, &room).await;
    let kicked = events.last().expect("events");
    assert_eq!(type_key(kicked), ("m.room.member".to_owned(), carol.user_id.clone()));
    assert_eq!(kicked["sender"], alice.user_id.as_str());
    assert_eq!(kicked["content"]["membership"], "leave");
    assert_eq!(kicked["content"]["reason"], "noise");
    // Kicked from an invite-only room: no rejoining without a new invite.
    assert_error(
        &s.post(&room_path(&room, "join"), Some(&carol.token), json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    // Kicking someone who is not there.
    assert_error(
        &s.post(&kick, Some(&alice.token), json!({"user_id": carol.user_id})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );

    // Ban bob: he is out, cannot rejoin, cannot be invited.
    let (status, body) = s.post(&ban, Some(&alice.token), json!({"user_id": bob.user_id, "reason": "spam"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await, "ban");
    assert_error(
        &s.post(&room_path(&room, "join"), Some(&bob.token), json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.post(&room_path(&room, "invite"), Some(&alice.token), json!({"user_id": bob.user_id})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    // A banned user cannot send either.
    let send = s
        .put(&room_path(&room, "send/m.room.message/b1"), Some(&bob.token), json!({"msgtype": "m.text", "body": "x"}))
        .await;
    assert_error(&send, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Ban someone who never was in the room: allowed, pre-emptively.
    let (status, body) = s.post(&ban, Some(&alice.token), json!({"user_id": carol.user_id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(membership_of(&s, &alice, &room, &carol.user_id).await, "ban");

    // Unban: not-banned users cannot be unbanned; bob becomes `leave` and may be invited again.
    let dave = s.register("dave").await;
    assert_error(
        &s.post(&unban, Some(&alice.token), json!({"user_id": dave.user_id})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let (status, body) = s.post(&unban, Some(&alice.token), json!({"user_id": bob.user_id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await, "leave");
    assert_error(
        &s.post(&room_path(&room, "join"), Some(&bob.token), json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    invite(&s, &alice, &room, &bob).await;
    join(&s, &bob, &room).await;
    assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await, "join");
    s.finish().await;
}

async fn knock_then_invite(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(
        &s,
        &alice,
        json!({"room_alias_name": "door", "initial_state": [{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}]}),
    )
    .await;
    let closed = create_room(&s, &alice, json!({"preset": "private_chat"})).await;
    // Knocking on an invite-only room is refused.
    let result = s.post(&format!("/_matrix/client/v3/knock/{}", enc(&closed)), Some(&bob.token), json!({})).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Knock by alias.
    let alias = format!("#door:{}", s.server_name);
    let (status, body) = s
        .post(&format!("/_matrix/client/v3/knock/{}", enc(&alias)), Some(&bob.token), json!({"reason": "let me in"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    let (_, members) = s.get(&room_path(&room, "members?membership=knock"), Some(&alice.token)).await;
    let chunk = members["chunk"].as_array().expect("chunk");
    assert_eq!(chunk.len(), 1, "{members}");
    assert_eq!(chunk[0]["state_key"], bob.user_id.as_str());
    assert_eq!(chunk[0]["content"]["reason"], "let me in");
    // A knock does not let bob join on his own; an invite does.
    assert_error(
        &s.post(&room_path(&room, "join"), Some(&bob.token), json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    invite(&s, &alice, &room, &bob).await;
    join(&s, &bob, &room).await;
    assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await, "join");
    s.finish().await;
}

async fn state_send_and_read(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({"name": "First"})).await;

    let first = put_state(&s, &alice, &room, "org.example.thing", "", json!({"n": 1})).await;
    let second = put_state(&s, &alice, &room, "org.example.thing", "", json!({"n": 2})).await;
    let keyed = put_state(&s, &alice, &room, "org.example.thing", "a/b c", json!({"n": 3})).await;
    assert_ne!(first, second);

    // The content by default, the whole event with format=event.
    let path = room_path(&room, "state/org.example.thing/");
    let (status, body) = s.get(&path, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"n": 2}));
    let (_, body) =
        s.get(&room_path(&room, &format!("state/org.example.thing/{}", enc("a/b c"))), Some(&alice.token)).await;
    assert_eq!(body, json!({"n": 3}));
    let (status, body) = s.get(&format!("{path}?format=event"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["event_id"], second.as_str());
    assert_eq!(body["unsigned"]["replaces_state"], first.as_str());
    assert_eq!(body["unsigned"]["prev_content"], json!({"n": 1}));
    let missing = s.get(&room_path(&room, "state/org.example.none/"), Some(&alice.token)).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // The full state holds exactly one event per (type, key), the latest.
    let state = current_state(&s, &alice, &room).await;
    let mut keys: Vec<(String, String)> = state.iter().map(type_key).collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "duplicate state entries");
    assert_eq!(find_state(&state, "org.example.thing", "").expect("thing")["event_id"], second.as_str());
    assert_eq!(find_state(&state, "org.example.thing", "a/b c").expect("keyed")["event_id"], keyed.as_str());
    assert!(state.iter().all(|e| e.get("state_key").is_some()), "only state events");
    let name = put_state(&s, &alice, &room, "m.room.name", "", json!({"name": "Second"})).await;
    let (_, body) = s.get(&room_path(&room, "state/m.room.name/"), Some(&alice.token)).await;
    assert_eq!(body, json!({"name": "Second"}));
    let state = current_state(&s, &alice, &room).await;
    assert_eq!(find_state(&state, "m.room.name", "").expect("name")["event_id"], name.as_str());

    // Bad content: not an object.
    let bad = put_state_raw(&s, &alice, &room, "org.example.thing", "", json!([1, 2])).await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST, "{}", bad.1);
    // A canonical alias must point at the room.
    let bad_alias = put_state_raw(
        &s,
        &alice,
        &room,
        "m.room.canonical_alias",
        "",
        json!({"alias": format!("#nowhere:{}", s.server_name)}),
    )
    .await;
    assert_error(&bad_alias, StatusCode::BAD_REQUEST, "M_BAD_ALIAS");
    s.finish().await;
}

async fn redaction_serves_redacted_form(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    for version in ["10", "11"] {
        let room = create_room(&s, &alice, json!({"preset": "public_chat", "room_version": version})).await;
        join(&s, &bob, &room).await;
        let message = send_text(&s, &bob, &room, "regrettable").await;
        let rules =
            put_state(&s, &alice, &room, "m.room.join_rules", "", json!({"join_rule": "public", "extra": 1})).await;
        let redact = |target: &str, txn: &str| room_path(&room, &format!("redact/{}/{txn}", enc(target)));

        let (status, body) = s.put(&redact(&message, "r1"), Some(&bob.token), json!({"reason": "oops"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let redaction = body["event_id"].as_str().expect("event_id").to_owned();
        // The same txnId is the same redaction.
        let (_, again) = s.put(&redact(&message, "r1"), Some(&bob.token), json!({"reason": "oops"})).await;
        assert_eq!(again["event_id"], redaction.as_str());

        let (status, event) = s.get(&room_path(&room, &format!("event/{}", enc(&message))), Some(&alice.token)).await;
        assert_eq!(status, StatusCode::OK, "{event}");
        assert_eq!(event["content"], json!({}), "message content is redacted away");
        assert_eq!(event["type"], "m.room.message");
        assert_eq!(event["sender"], bob.user_id.as_str());
        let because = &event["unsigned"]["redacted_because"];
        assert_eq!(because["event_id"], redaction.as_str(), "{event}");
        assert_eq!(because["type"], "m.room.redaction");
        assert_eq!(because["redacts"], message.as_str());
        assert_eq!(because["content"]["reason"], "oops");
        if version == "11" {
            assert_eq!(because["content"]["redacts"], message.as_str(), "v11 carries redacts in content");
        }

        // The redaction event itself, and the redacted event in /messages.
        let events = timeline(&s, &alice, &room).await;
        let in_timeline = events.iter().find(|e| e["event_id"] == message.as_str()).expect("in timeline");
        assert_eq!(in_timeline["content"], json!({}));
        assert_eq!(in_timeline["unsigned"]["redacted_because"]["event_id"], redaction.as_str());
        let last = events.last().expect("events");
        assert_eq!(last["event_id"], redaction.as_str());

        // State events keep the keys the algorithm keeps.
        let (status, body) = s.put(&redact(&rules, "r2"), Some(&alice.token), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, event) = s.get(&room_path(&room, &format!("event/{}", enc(&rules))), Some(&alice.token)).await;
        assert_eq!(event["content"], json!({"join_rule": "public"}), "v{version}");
        assert_eq!(event["state_key"], "");
        // Redacting an already redacted event changes nothing further, and is allowed.
        let (status, _) = s.put(&redact(&message, "r3"), Some(&bob.token), json!({})).await;
        assert_eq!(status, StatusCode::OK);
        let (_, event) = s.get(&room_path(&room, &format!("event/{}", enc(&message))), Some(&alice.token)).await;
        assert_eq!(event["unsigned"]["redacted_because"]["event_id"], redaction.as_str(), "first redaction stays");
    }
    s.finish().await;
}

async fn member_lists(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let dave = s.register("dave").await;
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(&bob.user_id)),
            Some(&bob.token),
            json!({"displayname": "Bobby"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    // A token from before anyone else arrived.
    let (_, page) = messages(&s, &alice, &room, "dir=b&limit=1").await;
    let early = page["start"].as_str().expect("start").to_owned();
    join(&s, &bob, &room).await;
    join(&s, &carol, &room).await;
    invite(&s, &alice, &room, &dave).await;
    leave(&s, &carol, &room).await;

    let members = |query: String| {
        let s = &s;
        let alice = &alice;
        let room = &room;
        async move {
            let (status, body) = s.get(&room_path(room, &format!("members{query}")), Some(&alice.token)).await;
            assert_eq!(status, StatusCode::OK, "{query}: {body}");
            let mut list: Vec<(String, String)> = body["chunk"]
                .as_array()
                .expect("chunk")
                .iter()
                .map(|e| {
                    assert_eq!(e["type"], "m.room.member");
                    (
                        e["state_key"].as_str().unwrap_or_default().to_owned(),
                        e["content"]["membership"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            list.sort();
            list
        }
    };
    let m = |u: &str, ms: &str| (u.to_owned(), ms.to_owned());
    let all = vec![
        m(&alice.user_id, "join"),
        m(&bob.user_id, "join"),
        m(&carol.user_id, "leave"),
        m(&dave.user_id, "invite"),
    ];
    assert_eq!(members("".to_owned()).await, all);
    assert_eq!(members("?membership=join".to_owned()).await, vec![m(&alice.user_id, "join"), m(&bob.user_id, "join")]);
    assert_eq!(members("?membership=invite".to_owned()).await, vec![m(&dave.user_id, "invite")]);
    assert_eq!(
        members("?not_membership=leave".to_owned()).await,
        vec![m(&alice.user_id, "join"), m(&bob.user_id, "join"), m(&dave.user_id, "invite")]
    );
    // Both together form an "or": membership is `join`, or is not `invite`.
    assert_eq!(
        members("?membership=join&not_membership=invite".to_owned()).await,
        vec![m(&alice.user_id, "join"), m(&bob.user_id, "join"), m(&carol.user_id, "leave")]
    );
    // At a point before the others arrived: only alice.
    assert_eq!(members(format!("?at={}", enc(&early))).await, vec![m(&alice.user_id, "join")]);

    // joined_members: joined users with their profiles.
    let (status, body) = s.get(&room_path(&room, "joined_members"), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let joined = body["joined"].as_object().expect("joined");
    assert_eq!(joined.len(), 2, "{body}");
    assert_eq!(joined[&bob.user_id]["display_name"], "Bobby");
    assert!(joined.contains_key(&alice.user_id));
    // Not joined: no list. Carol (left) and dave (invited) are refused.
    for outsider in [&carol, &dave] {
        let result = s.get(&room_path(&room, "joined_members"), Some(&outsider.token)).await;
        assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    // Carol, who left, sees the members as they were when she left.
    let (status, body) = s.get(&room_path(&room, "members"), Some(&carol.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let chunk = body["chunk"].as_array().expect("chunk");
    let carol_sees: Vec<&str> = chunk.iter().filter_map(|e| e["state_key"].as_str()).collect();
    assert!(carol_sees.contains(&carol.user_id.as_str()) && carol_sees.contains(&dave.user_id.as_str()), "{body}");
    s.finish().await;
}

/// The room's current state as `user` sees it through `GET /state`.
pub async fn current_state(s: &TestServer, user: &crate::harness::TestUser, room_id: &str) -> Vec<Value> {
    let (status, body) = s.get(&room_path(room_id, "state"), Some(&user.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().expect("state array").clone()
}

/// `user_id`'s membership, from the room state as `viewer` sees it.
async fn membership_of(s: &TestServer, viewer: &crate::harness::TestUser, room_id: &str, user_id: &str) -> String {
    let (status, body) =
        s.get(&room_path(room_id, &format!("state/m.room.member/{}", enc(user_id))), Some(&viewer.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["membership"].as_str().unwrap_or_default().to_owned()
}

/// createRoom checks every event it would make before it makes any: a request refused
/// half-way must leave no room, no membership and no alias.
async fn a_refused_create_room_leaves_nothing_behind(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let refused = [
        // A power level above 2^53 is not canonical JSON.
        (
            json!({"room_alias_name": "big", "power_level_content_override": {"users_default": 9_007_199_254_740_993_u64}}),
            StatusCode::BAD_REQUEST,
        ),
        // Neither is a float in an initial state event.
        (
            json!({"room_alias_name": "float", "initial_state": [{"type": "m.room.topic", "content": {"topic": "x", "ratio": 0.5}}]}),
            StatusCode::BAD_REQUEST,
        ),
        // A power override that takes the creator's power away refuses the events after it.
        (
            json!({"room_version": "10", "room_alias_name": "weak", "power_level_content_override": {"users": {}, "state_default": 100}}),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (body, status) in refused {
        let (got, resp) = s.post("/_matrix/client/v3/createRoom", Some(&alice.token), body.clone()).await;
        assert_eq!(got, status, "{body}: {resp}");
        assert!(resp["errcode"].is_string(), "{resp}");
    }
    let (status, joined) = s.get("/_matrix/client/v3/joined_rooms", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(joined["joined_rooms"], json!([]), "no half-built room");
    for alias in ["big", "float", "weak"] {
        let (status, _) =
            s.get(&format!("/_matrix/client/v3/directory/room/{}", enc(&format!("#{alias}:localhost"))), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "alias #{alias} not left behind");
    }
    // The same names work once the request is valid.
    let room = create_room(&s, &alice, json!({"room_alias_name": "weak"})).await;
    let (status, body) = s.get(&format!("/_matrix/client/v3/directory/room/{}", enc("#weak:localhost")), None).await;
    assert_eq!((status, body["room_id"].as_str()), (StatusCode::OK, Some(room.as_str())));
    s.finish().await;
}

/// A redaction must name an event of the room: an unknown one is `404`, even for a member
/// without the power to redact others' events.
async fn redacting_an_unknown_event_is_not_found(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let path = room_path(&room, &format!("redact/{}/t1", enc("$nosuchevent")));
    let result = s.put(&path, Some(&bob.token), json!({})).await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    s.finish().await;
}
