//! Micro-benchmarks of the per-event work every send does: canonical JSON, content hash,
//! signature and event ID (`parley_federation::pdu::hash_and_sign`), and the room version's
//! authorization rules (ruma's state_res) against a realistic small room.
//!
//! `cargo bench --bench events`

#![allow(clippy::unwrap_used, reason = "benchmark setup: a failure should stop it loudly")]

use std::{collections::HashMap, hint::black_box};

use criterion::{Criterion, criterion_group, criterion_main};
use parley::{service::rooms::pdu::Pdu, storage::events::StoredEvent};
use parley_federation::{SigningKey, pdu::hash_and_sign};
use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId, OwnedRoomId, ServerName, canonical_json::to_canonical_value,
    events::StateEventType, room_version_rules::RoomVersionRules, state_res,
};
use serde_json::{Value, json};

/// A room version 12 room: create, the creator's join, power levels, join rules, history
/// visibility, a name, and `members` more joins; then a message from the last member.
struct Room {
    rules: RoomVersionRules,
    key: SigningKey,
    server: &'static ServerName,
    room_id: Option<OwnedRoomId>,
    /// The events as Parley holds them: `Pdu`, which is what its auth check hands to state_res.
    events: HashMap<OwnedEventId, Pdu>,
    /// (type, state_key) → event ID.
    state: HashMap<(String, String), OwnedEventId>,
    last: Option<OwnedEventId>,
    depth: u64,
}

impl Room {
    fn new() -> Self {
        Self {
            rules: RoomVersionRules::V12,
            key: SigningKey::generate("bench").unwrap(),
            server: <&ServerName>::try_from("bench.example").unwrap(),
            room_id: None,
            events: HashMap::new(),
            state: HashMap::new(),
            last: None,
            depth: 0,
        }
    }

    /// The unsigned JSON of the next event (what a server builds before hashing and signing).
    fn draft(&self, kind: &str, sender: &str, state_key: Option<&str>, content: Value) -> Value {
        // The auth events the spec selects: power levels and the sender's membership, plus the
        // join rules for a membership event (the create event is implied in version 12).
        let mut auth: Vec<&OwnedEventId> = Vec::new();
        let mut keys = vec!["m.room.power_levels"];
        if kind == "m.room.member" {
            keys.push("m.room.join_rules");
        }
        for key in keys {
            if let Some(id) = self.state.get(&(key.to_owned(), String::new())) {
                auth.push(id);
            }
        }
        if let Some(id) = self.state.get(&("m.room.member".to_owned(), sender.to_owned())) {
            auth.push(id);
        }
        let mut draft = json!({
            "type": kind,
            "sender": sender,
            "content": content,
            "origin_server_ts": 1_700_000_000_000u64 + self.depth,
            "depth": self.depth + 1,
            "prev_events": self.last.iter().collect::<Vec<_>>(),
            "auth_events": auth,
        });
        if let Some(room_id) = &self.room_id {
            draft["room_id"] = json!(room_id);
        }
        if let Some(state_key) = state_key {
            draft["state_key"] = json!(state_key);
        }
        draft
    }

    fn sign(&self, draft: &Value) -> (CanonicalJsonObject, OwnedEventId) {
        let ruma::CanonicalJsonValue::Object(mut object) = to_canonical_value(draft).unwrap() else {
            unreachable!("an object")
        };
        let id = hash_and_sign(&mut object, &self.rules, self.server, &self.key).unwrap();
        (object, id)
    }

    fn append(&mut self, kind: &str, sender: &str, state_key: Option<&str>, content: Value) -> OwnedEventId {
        let draft = self.draft(kind, sender, state_key, content);
        let (signed, id) = self.sign(&draft);
        if self.room_id.is_none() {
            self.room_id = Some(parley_federation::pdu::room_id_from_create(&id).unwrap());
        }
        let stored = StoredEvent {
            stream_pos: i64::try_from(self.depth).unwrap(),
            event_id: id.clone(),
            room_id: self.room_id.clone().unwrap(),
            state_group: None,
            placement: parley::storage::Placement::Timeline,
            json: serde_json::value::to_raw_value(&signed).unwrap(),
            unsigned: None,
            redacted_by: None,
        };
        let ev = Pdu::from_stored(stored).unwrap();
        if let Some(state_key) = state_key {
            self.state.insert((kind.to_owned(), state_key.to_owned()), id.clone());
        }
        self.events.insert(id.clone(), ev);
        self.last = Some(id.clone());
        self.depth += 1;
        id
    }

    fn build(members: usize) -> Self {
        let mut room = Self::new();
        let alice = "@alice:bench.example";
        room.append("m.room.create", alice, Some(""), json!({"room_version": "12"}));
        room.append("m.room.member", alice, Some(alice), json!({"membership": "join", "displayname": "Alice"}));
        room.append(
            "m.room.power_levels",
            alice,
            Some(""),
            json!({"users": {}, "users_default": 0, "events_default": 0, "state_default": 50,
                   "ban": 50, "kick": 50, "redact": 50, "invite": 0,
                   "events": {"m.room.name": 50, "m.room.power_levels": 100}}),
        );
        room.append("m.room.join_rules", alice, Some(""), json!({"join_rule": "public"}));
        room.append("m.room.history_visibility", alice, Some(""), json!({"history_visibility": "shared"}));
        room.append("m.room.name", alice, Some(""), json!({"name": "Benchmark room"}));
        for i in 0..members {
            let user = format!("@user{i}:bench.example");
            room.append(
                "m.room.member",
                &user,
                Some(&user),
                json!({"membership": "join", "displayname": format!("User {i}")}),
            );
        }
        room
    }

    fn create_id(&self) -> &OwnedEventId {
        &self.state[&("m.room.create".to_owned(), String::new())]
    }

    /// Both rule sets, as Parley runs them before persisting an event.
    fn authorize(&self, ev: &Pdu) -> Result<(), String> {
        let rules = &self.rules.authorization;
        let create = self.create_id();
        state_res::check_state_independent_auth_rules(rules, ev, |id: &EventId| {
            (ev.auth_events.iter().any(|a| a == id) || id == create).then(|| self.events.get(id)).flatten()
        })?;
        state_res::check_state_dependent_auth_rules(rules, ev, |kind: &StateEventType, key: &str| {
            self.state.get(&(kind.to_string(), key.to_owned())).and_then(|id| self.events.get(id))
        })
    }
}

fn bench_events(c: &mut Criterion) {
    let mut room = Room::build(20);
    let sender = "@user19:bench.example";
    let message = room.draft(
        "m.room.message",
        sender,
        None,
        json!({"msgtype": "m.text", "body": "Hello, this is a message of a typical length for a chat."}),
    );

    c.bench_function("event/canonical_json", |b| {
        b.iter(|| {
            let value = to_canonical_value(black_box(&message)).unwrap();
            black_box(value.to_string())
        });
    });
    c.bench_function("event/canonical_json+hash+sign+event_id", |b| {
        b.iter(|| black_box(room.sign(black_box(&message))));
    });

    // A message from a member, and a join of a newcomer, against the room's current state.
    let message_id = room.append(
        "m.room.message",
        sender,
        None,
        json!({"msgtype": "m.text", "body": "Hello, this is a message of a typical length for a chat."}),
    );
    let newcomer = "@newcomer:bench.example";
    let join_id = room.append("m.room.member", newcomer, Some(newcomer), json!({"membership": "join"}));
    // Check the join against the state before it.
    room.state.remove(&("m.room.member".to_owned(), newcomer.to_owned()));
    let message_ev = &room.events[&message_id];
    let join_ev = &room.events[&join_id];
    room.authorize(message_ev).unwrap();
    room.authorize(join_ev).unwrap();
    c.bench_function("auth/message", |b| b.iter(|| room.authorize(black_box(message_ev)).unwrap()));
    c.bench_function("auth/join", |b| b.iter(|| room.authorize(black_box(join_ev)).unwrap()));
}

criterion_group!(benches, bench_events);
criterion_main!(benches);
