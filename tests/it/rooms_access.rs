//! Who may do what in a room (power levels, membership), aliases, the public room directory
//! and per-room account data, over HTTP, on both backends.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{
    harness::{Backend, TestServer, assert_error, both_backends, enc},
    room_util::{create_room, invite, join, leave, put_state, put_state_raw, room_path, send_text},
};

both_backends!(
    power_levels_gate_state_and_messages,
    redacting_others_needs_the_redact_level,
    non_members_can_neither_read_nor_send,
    aliases_put_get_delete,
    public_room_directory,
    room_account_data_and_m_direct,
);

async fn power_levels_gate_state_and_messages(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    for version in ["10", "12"] {
        let room = create_room(&s, &alice, json!({"preset": "public_chat", "room_version": version})).await;
        join(&s, &bob, &room).await;
        // Bob is at 0; state needs 50 (name), 100 (power levels, history visibility).
        for (event_type, content) in [
            ("m.room.name", json!({"name": "mine"})),
            ("m.room.topic", json!({"topic": "mine"})),
            ("m.room.power_levels", json!({"users": {bob.user_id.clone(): 100}})),
            ("m.room.history_visibility", json!({"history_visibility": "joined"})),
            ("m.room.join_rules", json!({"join_rule": "invite"})),
            ("org.example.custom", json!({})),
        ] {
            let result = put_state_raw(&s, &bob, &room, event_type, "", content).await;
            assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        }
        // Someone else's member event is not bob's to write.
        let result =
            put_state_raw(&s, &bob, &room, "m.room.member", &alice.user_id, json!({"membership": "leave"})).await;
        assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        // Messages need events_default (0).
        send_text(&s, &bob, &room, "I can talk").await;

        // Alice raises messages to 10 and lets bob set the topic at 0.
        let (_, mut power) = s.get(&room_path(&room, "state/m.room.power_levels/"), Some(&alice.token)).await;
        power["events"]["m.room.message"] = json!(10);
        power["events"]["m.room.topic"] = json!(0);
        put_state(&s, &alice, &room, "m.room.power_levels", "", power.clone()).await;
        let result = s
            .put(
                &room_path(&room, "send/m.room.message/hush"),
                Some(&bob.token),
                json!({"msgtype": "m.text", "body": "x"}),
            )
            .await;
        assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        put_state(&s, &bob, &room, "m.room.topic", "", json!({"topic": "bob's topic"})).await;
        // Other event types still go through.
        crate::room_util::send_event(&s, &bob, &room, "org.example.ping", "p1", json!({})).await;

        // Bob cannot raise himself, and alice cannot grant more than she has (v10: 100).
        power["users"][&bob.user_id] = json!(100);
        let result = put_state_raw(&s, &bob, &room, "m.room.power_levels", "", power.clone()).await;
        assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        if version == "10" {
            power["users"][&bob.user_id] = json!(101);
            let result = put_state_raw(&s, &alice, &room, "m.room.power_levels", "", power.clone()).await;
            assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        } else {
            // v12: creators must not be listed in power levels.
            power["users"][&alice.user_id] = json!(100);
            power["users"].as_object_mut().expect("users").remove(&bob.user_id);
            let result = put_state_raw(&s, &alice, &room, "m.room.power_levels", "", power.clone()).await;
            assert_eq!(result.0, StatusCode::FORBIDDEN, "creator listed in v12 power levels: {}", result.1);
        }
        // Raised to 50, bob may set the name.
        let (_, mut power) = s.get(&room_path(&room, "state/m.room.power_levels/"), Some(&alice.token)).await;
        power["users"][&bob.user_id] = json!(50);
        put_state(&s, &alice, &room, "m.room.power_levels", "", power).await;
        put_state(&s, &bob, &room, "m.room.name", "", json!({"name": "by bob"})).await;
        // A state key that is a user ID belongs to that user: bob's is his, alice's is not.
        put_state(&s, &bob, &room, "org.example.owned", &bob.user_id, json!({"x": 1})).await;
        let result = put_state_raw(&s, &bob, &room, "org.example.owned", &alice.user_id, json!({"x": 1})).await;
        assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let result = put_state_raw(&s, &bob, &room, "m.room.power_levels", "", json!({})).await;
        assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    s.finish().await;
}

async fn redacting_others_needs_the_redact_level(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    join(&s, &carol, &room).await;
    let from_alice = send_text(&s, &alice, &room, "alice's").await;
    let from_carol = send_text(&s, &carol, &room, "carol's").await;
    let from_bob = send_text(&s, &bob, &room, "bob's").await;
    let redact = |target: &str, txn: &str| room_path(&room, &format!("redact/{}/{txn}", enc(target)));

    // Bob (0, redact needs 50) may not redact others' events.
    for (i, target) in [&from_alice, &from_carol].into_iter().enumerate() {
        let result = s.put(&redact(target, &format!("x{i}")), Some(&bob.token), json!({})).await;
        assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let (_, event) = s.get(&room_path(&room, &format!("event/{}", enc(target))), Some(&alice.token)).await;
        assert!(event["content"]["body"].is_string(), "not redacted: {event}");
        assert!(event["unsigned"].get("redacted_because").is_none(), "{event}");
    }
    // His own, yes.
    let (status, body) = s.put(&redact(&from_bob, "own"), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Alice (creator) may redact carol's.
    let (status, body) = s.put(&redact(&from_carol, "mod"), Some(&alice.token), json!({"reason": "moderation"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, event) = s.get(&room_path(&room, &format!("event/{}", enc(&from_carol))), Some(&bob.token)).await;
    assert_eq!(event["content"], json!({}));
    assert_eq!(event["unsigned"]["redacted_because"]["sender"], alice.user_id.as_str());
    // Unknown target: the redaction of a missing event is not an error for the sender's own
    // server to refuse, but it must not touch anything else. A non-member cannot redact at all.
    let dave = s.register("dave").await;
    let result = s.put(&redact(&from_alice, "d"), Some(&dave.token), json!({})).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    s.finish().await;
}

async fn non_members_can_neither_read_nor_send(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let eve = s.register("eve").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let event = send_text(&s, &alice, &room, "members only").await;

    let forbidden = [
        room_path(&room, "messages?dir=b"),
        room_path(&room, "state"),
        room_path(&room, "state/m.room.name/"),
        room_path(&room, "state/m.room.create/"),
        room_path(&room, "members"),
        room_path(&room, "joined_members"),
        room_path(&room, &format!("context/{}", enc(&event))),
        room_path(&room, "aliases"),
        format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts=0&dir=f", enc(&room)),
    ];
    for path in &forbidden {
        assert_error(&s.get(path, Some(&eve.token)).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    // /event hides the event's existence.
    let result = s.get(&room_path(&room, &format!("event/{}", enc(&event))), Some(&eve.token)).await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // Sending anything.
    let send = s
        .put(&room_path(&room, "send/m.room.message/e1"), Some(&eve.token), json!({"msgtype": "m.text", "body": "hi"}))
        .await;
    assert_error(&send, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let state = put_state_raw(&s, &eve, &room, "org.example.x", "", json!({})).await;
    assert_error(&state, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let invite_as_eve = s.post(&room_path(&room, "invite"), Some(&eve.token), json!({"user_id": alice.user_id})).await;
    assert_error(&invite_as_eve, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // A room that does not exist.
    let nowhere = format!("!nowhere:{}", s.server_name);
    assert_error(
        &s.get(&room_path(&nowhere, "messages?dir=b"), Some(&eve.token)).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    // Nothing of eve's got in.
    let (_, page) = s.get(&room_path(&room, "messages?dir=b&limit=50"), Some(&alice.token)).await;
    assert!(page["chunk"].as_array().expect("chunk").iter().all(|e| e["sender"] != eve.user_id.as_str()), "{page}");

    // Having left, eve cannot send either, and cannot read what came after.
    join(&s, &eve, &room).await;
    leave(&s, &eve, &room).await;
    let after = send_text(&s, &alice, &room, "after eve left").await;
    let send = s
        .put(&room_path(&room, "send/m.room.message/e2"), Some(&eve.token), json!({"msgtype": "m.text", "body": "hi"}))
        .await;
    assert_error(&send, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let result = s.get(&room_path(&room, &format!("event/{}", enc(&after))), Some(&eve.token)).await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // Her state view stops at her leave: the later name change is not in it.
    put_state(&s, &alice, &room, "m.room.name", "", json!({"name": "later"})).await;
    let (status, state) = s.get(&room_path(&room, "state"), Some(&eve.token)).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    let names: Vec<_> = state.as_array().expect("state").iter().filter(|e| e["type"] == "m.room.name").collect();
    assert!(names.is_empty(), "eve left before the name was set: {names:?}");
    s.finish().await;
}

async fn aliases_put_get_delete(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat", "room_alias_name": "main"})).await;
    join(&s, &bob, &room).await;
    let alias = |name: &str| format!("#{name}:{}", s.server_name);
    let path = |name: &str| format!("/_matrix/client/v3/directory/room/{}", enc(&alias(name)));

    // A member (bob, power 0) may add an alias; a non-member may not.
    let (status, body) = s.put(&path("side"), Some(&bob.token), json!({"room_id": room})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(
        &s.put(&path("carols"), Some(&carol.token), json!({"room_id": room})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    // Taken.
    let taken = s.put(&path("side"), Some(&alice.token), json!({"room_id": room})).await;
    assert_error(&taken, StatusCode::CONFLICT, "M_UNKNOWN");
    // Another server's alias.
    let foreign = s
        .put("/_matrix/client/v3/directory/room/%23x%3Aelsewhere.example", Some(&alice.token), json!({"room_id": room}))
        .await;
    assert_eq!(foreign.0, StatusCode::BAD_REQUEST, "{}", foreign.1);

    for name in ["main", "side"] {
        let (status, body) = s.get(&path(name), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["room_id"], room.as_str());
    }
    let (status, body) = s.get(&room_path(&room, "aliases"), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: BTreeSet<&str> =
        body["aliases"].as_array().expect("aliases").iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(listed, BTreeSet::from([alias("main").as_str(), alias("side").as_str()]));
    assert_error(&s.get(&room_path(&room, "aliases"), Some(&carol.token)).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Deleting: bob may not delete alice's alias (no power over canonical_alias); alice may
    // delete bob's (she has that power); bob may delete his own.
    let (status, body) = s.put(&path("bobs"), Some(&bob.token), json!({"room_id": room})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(
        &s.call(Method::DELETE, &path("main"), Some(&bob.token), None).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let (status, body) = s.call(Method::DELETE, &path("side"), Some(&alice.token), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = s.call(Method::DELETE, &path("bobs"), Some(&bob.token), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(&s.get(&path("side"), None).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(
        &s.call(Method::DELETE, &path("side"), Some(&alice.token), None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (_, body) = s.get(&room_path(&room, "aliases"), Some(&alice.token)).await;
    assert_eq!(body["aliases"], json!([alias("main")]));
    // A deleted alias can be taken again.
    let (status, _) = s.put(&path("side"), Some(&alice.token), json!({"room_id": room})).await;
    assert_eq!(status, StatusCode::OK);
    s.finish().await;
}

async fn public_room_directory(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let mut public = Vec::new();
    for i in 0..5 {
        let room = create_room(
            &s,
            &alice,
            json!({"visibility": "public", "name": format!("Room {i}"), "topic": format!("topic number {i}"),
                   "room_alias_name": format!("r{i}")}),
        )
        .await;
        public.push(room);
    }
    // More members for room 3: it sorts first.
    join(&s, &bob, &public[3]).await;
    let hidden = create_room(&s, &alice, json!({"preset": "public_chat", "name": "Room hidden"})).await;

    let (status, body) = s.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let chunk = body["chunk"].as_array().expect("chunk");
    assert_eq!(chunk.len(), 5, "{body}");
    assert_eq!(body["total_room_count_estimate"], 5);
    assert_eq!(chunk[0]["room_id"], public[3].as_str(), "largest first: {body}");
    assert_eq!(chunk[0]["num_joined_members"], 2);
    assert_eq!(chunk[0]["name"], "Room 3");
    assert_eq!(chunk[0]["topic"], "topic number 3");
    assert_eq!(chunk[0]["canonical_alias"], format!("#r3:{}", s.server_name));
    // Absent means public (spec), so either form is right.
    assert!(chunk[0].get("join_rule").is_none_or(|r| r == "public"), "{}", chunk[0]);
    assert_eq!(chunk[0]["world_readable"], false);
    assert_eq!(chunk[0]["guest_can_join"], false);
    assert!(chunk.iter().all(|r| r["room_id"] != hidden.as_str()));

    // Paging by 2, both ways.
    let mut seen = Vec::new();
    let mut since: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &since {
            Some(t) => format!("?limit=2&since={}", enc(t)),
            None => "?limit=2".to_owned(),
        };
        let (status, page) = s.get(&format!("/_matrix/client/v3/publicRooms{query}"), Some(&bob.token)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        let chunk = page["chunk"].as_array().expect("chunk");
        assert!(chunk.len() <= 2);
        seen.extend(chunk.iter().map(|r| r["room_id"].as_str().expect("id").to_owned()));
        assert_eq!(page.get("prev_batch").is_some(), since.is_some(), "{page}");
        match page["next_batch"].as_str() {
            Some(next) => since = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(unique, public.iter().collect::<BTreeSet<_>>());

    // POST with a search term (case-insensitive, name or topic) and paging.
    let (status, body) = s
        .post("/_matrix/client/v3/publicRooms", Some(&bob.token), json!({"filter": {"generic_search_term": "ROOM 2"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let found: Vec<&str> =
        body["chunk"].as_array().expect("chunk").iter().filter_map(|r| r["room_id"].as_str()).collect();
    assert_eq!(found, vec![public[2].as_str()]);
    let (_, body) = s
        .post(
            "/_matrix/client/v3/publicRooms",
            Some(&bob.token),
            json!({"filter": {"generic_search_term": "number"}, "limit": 3}),
        )
        .await;
    assert_eq!(body["chunk"].as_array().map(Vec::len), Some(3));
    assert_eq!(body["total_room_count_estimate"], 5);
    let next = body["next_batch"].as_str().expect("next_batch").to_owned();
    let (_, body) = s
        .post(
            "/_matrix/client/v3/publicRooms",
            Some(&bob.token),
            json!({"filter": {"generic_search_term": "number"}, "limit": 3, "since": next}),
        )
        .await;
    assert_eq!(body["chunk"].as_array().map(Vec::len), Some(2));
    assert!(body.get("next_batch").is_none(), "{body}");
    let (_, body) = s
        .post("/_matrix/client/v3/publicRooms", Some(&bob.token), json!({"filter": {"generic_search_term": "zebra"}}))
        .await;
    assert_eq!(body["chunk"], json!([]));
    let bad = s.get("/_matrix/client/v3/publicRooms?since=garbage", None).await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST, "{}", bad.1);

    // Directory visibility: bob (not powerful) cannot list a room; alice can.
    let list = format!("/_matrix/client/v3/directory/list/room/{}", enc(&hidden));
    join(&s, &bob, &hidden).await;
    assert_error(
        &s.put(&list, Some(&bob.token), json!({"visibility": "public"})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let (status, body) = s.put(&list, Some(&alice.token), json!({"visibility": "public"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = s.get(&list, None).await;
    assert_eq!(body["visibility"], "public");
    let (_, body) = s.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(body["chunk"].as_array().map(Vec::len), Some(6));
    let (status, _) = s.put(&list, Some(&alice.token), json!({"visibility": "private"})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = s.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(body["chunk"].as_array().map(Vec::len), Some(5));
    let unknown = format!("/_matrix/client/v3/directory/list/room/{}", enc(&format!("!nope:{}", s.server_name)));
    assert_error(&s.get(&unknown, None).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    s.finish().await;
}

async fn room_account_data_and_m_direct(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room =
        create_room(&s, &alice, json!({"preset": "trusted_private_chat", "invite": [bob.user_id], "is_direct": true}))
            .await;
    let other = create_room(&s, &alice, json!({})).await;
    let data = |user: &str, room: &str, kind: &str| {
        format!("/_matrix/client/v3/user/{}/rooms/{}/account_data/{kind}", enc(user), enc(room))
    };

    let path = data(&alice.user_id, &room, "org.example.note");
    let (status, body) = s.put(&path, Some(&alice.token), json!({"text": "remember"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = s.get(&path, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"text": "remember"}));
    // Per room: the other room has none, and the global namespace neither.
    assert_error(
        &s.get(&data(&alice.user_id, &other, "org.example.note"), Some(&alice.token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let global = format!("/_matrix/client/v3/user/{}/account_data/org.example.note", enc(&alice.user_id));
    assert_error(&s.get(&global, Some(&alice.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // Overwrite.
    let (status, _) = s.put(&path, Some(&alice.token), json!({"text": "changed"})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = s.get(&path, Some(&alice.token)).await;
    assert_eq!(body, json!({"text": "changed"}));
    // Someone else's: forbidden both ways.
    assert_error(&s.get(&path, Some(&bob.token)).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(&s.put(&path, Some(&bob.token), json!({})).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Bob (invited) may keep data for the room; for a room he never saw, no.
    let (status, body) = s.put(&data(&bob.user_id, &room, "org.example.note"), Some(&bob.token), json!({"b": 1})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(
        &s.put(&data(&bob.user_id, &other, "org.example.note"), Some(&bob.token), json!({"b": 1})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    // Alice's and bob's data for the same room stay apart.
    let (_, body) = s.get(&path, Some(&alice.token)).await;
    assert_eq!(body, json!({"text": "changed"}));

    // m.direct is global account data: user ID -> rooms.
    let direct = format!("/_matrix/client/v3/user/{}/account_data/m.direct", enc(&alice.user_id));
    let content = json!({ bob.user_id.clone(): [room] });
    let (status, body) = s.put(&direct, Some(&alice.token), content.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = s.get(&direct, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, content);
    // And it does not leak into the per-room namespace.
    assert_error(
        &s.get(&data(&alice.user_id, &room, "m.direct"), Some(&alice.token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    // The invite that made the DM is marked direct.
    let (_, member) =
        s.get(&room_path(&room, &format!("state/m.room.member/{}", enc(&bob.user_id))), Some(&alice.token)).await;
    assert_eq!(member["membership"], "invite", "{member}");
    assert_eq!(member["is_direct"], true, "{member}");
    join(&s, &bob, &room).await;
    invite(&s, &bob, &room, &s.register("carol").await).await;
    s.finish().await;
}
