//! History visibility, one test per setting: what an invited, joined and departed user sees
//! of the events before, during and after their membership, through /messages and /event.
//!
//! The rules (client-server spec, "Room History Visibility", server behaviour): an event is
//! visible if visibility was `world_readable`; or the user was joined at it; or visibility was
//! `shared` and the user joined at any point after it; or the user was invited at it and
//! visibility was `invited`. A user's own member events are visible if the membership before
//! *or* after allows it. After leaving, a user keeps what they could see before leaving.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    harness::{Backend, TestServer, TestUser, assert_error, both_backends, enc},
    room_util::{create_room, ids, invite, join, leave, paginate_all, room_path, send_text},
};

both_backends!(
    history_shared,
    history_invited,
    history_joined,
    history_world_readable,
    visibility_changes_are_seen_from_either_side,
);

/// The events of the scenario, in order.
struct Story {
    room: String,
    alice: TestUser,
    bob: TestUser,
    /// Before bob is invited.
    before: String,
    invite: String,
    /// While bob is invited.
    invited: String,
    join: String,
    /// While bob is joined.
    joined: String,
    leave: String,
    /// After bob left.
    after: String,
}

impl Story {
    fn name(&self, id: &str) -> &'static str {
        [
            (&self.before, "before"),
            (&self.invite, "invite"),
            (&self.invited, "invited"),
            (&self.join, "join"),
            (&self.joined, "joined"),
            (&self.leave, "leave"),
            (&self.after, "after"),
        ]
        .into_iter()
        .find(|(e, _)| e.as_str() == id)
        .map_or("other", |(_, n)| n)
    }
}

/// Which of the story's events `user` sees, by name, through /messages (paged backwards) and,
/// checked to agree, through /event.
async fn seen(s: &TestServer, story: &Story, user: &TestUser, upto: &[&str]) -> BTreeSet<&'static str> {
    let (events, _) = paginate_all(s, user, &story.room, "b", 5, "").await;
    let via_messages: BTreeSet<&'static str> =
        ids(&events).iter().map(|id| story.name(id)).filter(|n| *n != "other").collect();
    let mut via_event = BTreeSet::new();
    for (name, id) in [
        ("before", &story.before),
        ("invite", &story.invite),
        ("invited", &story.invited),
        ("join", &story.join),
        ("joined", &story.joined),
        ("leave", &story.leave),
        ("after", &story.after),
    ] {
        if !upto.contains(&name) {
            continue;
        }
        let result = s.get(&room_path(&story.room, &format!("event/{}", enc(id))), Some(&user.token)).await;
        match result.0 {
            StatusCode::OK => {
                via_event.insert(name);
            }
            _ => assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        }
    }
    assert_eq!(via_messages, via_event, "/messages and /event disagree for {}", user.user_id);
    via_messages
}

/// Runs the story in a room with the given history visibility, checking what bob sees while
/// invited, while joined, and after leaving.
async fn run(backend: Backend, visibility: &str, expect: [&[&'static str]; 3]) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(
        &s,
        &alice,
        json!({"preset": "public_chat",
               "initial_state": [{"type": "m.room.history_visibility", "content": {"history_visibility": visibility}}]}),
    )
    .await;
    let before = send_text(&s, &alice, &room, "before").await;
    invite(&s, &alice, &room, &bob).await;
    let invite_id = member_event(&s, &alice, &room, &bob).await;
    let invited = send_text(&s, &alice, &room, "invited").await;
    let mut story = Story {
        room: room.clone(),
        alice,
        bob,
        before,
        invite: invite_id,
        invited,
        join: String::new(),
        joined: String::new(),
        leave: String::new(),
        after: String::new(),
    };

    let set = |names: &[&'static str]| names.iter().copied().collect::<BTreeSet<_>>();
    let stage1 = ["before", "invite", "invited"];
    let got = seen(&s, &story, &story.bob, &stage1).await;
    assert_eq!(got, set(expect[0]), "{visibility}: while invited");

    join(&s, &story.bob, &room).await;
    story.join = member_event(&s, &story.alice, &room, &story.bob).await;
    story.joined = send_text(&s, &story.alice, &room, "joined").await;
    let stage2 = ["before", "invite", "invited", "join", "joined"];
    let got = seen(&s, &story, &story.bob, &stage2).await;
    assert_eq!(got, set(expect[1]), "{visibility}: while joined");

    leave(&s, &story.bob, &room).await;
    story.leave = member_event(&s, &story.alice, &room, &story.bob).await;
    story.after = send_text(&s, &story.alice, &room, "after").await;
    let stage3 = ["before", "invite", "invited", "join", "joined", "leave", "after"];
    let got = seen(&s, &story, &story.bob, &stage3).await;
    assert_eq!(got, set(expect[2]), "{visibility}: after leaving");

    // Alice, joined throughout, sees everything.
    let got = seen(&s, &story, &story.alice, &stage3).await;
    assert_eq!(got, set(&stage3), "{visibility}: alice");

    // Someone who never was in the room: everything if world_readable, else refused.
    let carol = s.register("carol").await;
    let (status, body) = s.get(&room_path(&room, "messages?dir=b"), Some(&carol.token)).await;
    if visibility == "world_readable" {
        assert_eq!(status, StatusCode::OK, "{body}");
        let got = seen(&s, &story, &carol, &stage3).await;
        assert_eq!(got, set(&stage3), "peeking a world_readable room");
        let (status, state) = s.get(&room_path(&room, "state"), Some(&carol.token)).await;
        assert_eq!(status, StatusCode::OK, "{state}");
        assert!(state.as_array().is_some_and(|s| s.iter().any(|e| e["type"] == "m.room.create")));
        let (status, _) = s.get(&room_path(&room, "state/m.room.history_visibility/"), Some(&carol.token)).await;
        assert_eq!(status, StatusCode::OK);
        // Peeking is reading only.
        let send = s
            .put(
                &room_path(&room, "send/m.room.message/p"),
                Some(&carol.token),
                json!({"msgtype": "m.text", "body": "x"}),
            )
            .await;
        assert_error(&send, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    } else {
        assert_error(&(status, body), StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let result = s.get(&room_path(&room, &format!("event/{}", enc(&story.joined))), Some(&carol.token)).await;
        assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    }
    s.finish().await;
}

/// The current member event of `whom`, as `viewer` sees it.
async fn member_event(s: &TestServer, viewer: &TestUser, room: &str, whom: &TestUser) -> String {
    let path = room_path(room, &format!("state/m.room.member/{}?format=event", enc(&whom.user_id)));
    let (status, body) = s.get(&path, Some(&viewer.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["event_id"].as_str().expect("event_id").to_owned()
}

async fn history_shared(backend: Backend) {
    run(
        backend,
        "shared",
        [
            // Invited, never joined: nothing yet.
            &[],
            // Joined: all history, including from before the invite.
            &["before", "invite", "invited", "join", "joined"],
            // Left: what was visible before leaving, and their own leave; nothing after.
            &["before", "invite", "invited", "join", "joined", "leave"],
        ],
    )
    .await;
}

async fn history_invited(backend: Backend) {
    run(
        backend,
        "invited",
        [
            &["invite", "invited"],
            &["invite", "invited", "join", "joined"],
            &["invite", "invited", "join", "joined", "leave"],
        ],
    )
    .await;
}

async fn history_joined(backend: Backend) {
    run(backend, "joined", [&[], &["join", "joined"], &["join", "joined", "leave"]]).await;
}

async fn history_world_readable(backend: Backend) {
    let all: &[&'static str] = &["before", "invite", "invited", "join", "joined", "leave", "after"];
    run(
        backend,
        "world_readable",
        [&["before", "invite", "invited"], &["before", "invite", "invited", "join", "joined"], all],
    )
    .await;
}

/// A `m.room.history_visibility` event is visible if the visibility before *or* after it
/// allows: a departed user sees the switch away from `world_readable`, but not what follows.
async fn visibility_changes_are_seen_from_either_side(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(
        &s,
        &alice,
        json!({"preset": "public_chat",
               "initial_state": [{"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}]}),
    )
    .await;
    join(&s, &bob, &room).await;
    leave(&s, &bob, &room).await;
    let hidden = send_text(&s, &alice, &room, "while joined-only").await;
    let to_world = crate::room_util::put_state(
        &s,
        &alice,
        &room,
        "m.room.history_visibility",
        "",
        json!({"history_visibility": "world_readable"}),
    )
    .await;
    let public = send_text(&s, &alice, &room, "world readable").await;
    let to_joined = crate::room_util::put_state(
        &s,
        &alice,
        &room,
        "m.room.history_visibility",
        "",
        json!({"history_visibility": "joined"}),
    )
    .await;
    let later = send_text(&s, &alice, &room, "joined-only again").await;
    for (id, visible) in [(&hidden, false), (&to_world, true), (&public, true), (&to_joined, true), (&later, false)] {
        let result = s.get(&room_path(&room, &format!("event/{}", enc(id))), Some(&bob.token)).await;
        if visible {
            assert_eq!(result.0, StatusCode::OK, "{id}: {}", result.1);
        } else {
            assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        }
    }
    let (events, _) = paginate_all(&s, &bob, &room, "b", 3, "").await;
    let seen: BTreeSet<String> = ids(&events).into_iter().collect();
    for (id, visible) in [(&hidden, false), (&to_world, true), (&public, true), (&to_joined, true), (&later, false)] {
        assert_eq!(seen.contains(id), visible, "{id} in /messages");
    }
    s.finish().await;
}
