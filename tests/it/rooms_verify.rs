//! Every event Parley creates must verify by the spec's rules, checked independently with
//! ruma: signatures and content hashes against the key `GET /_matrix/key/v2/server` serves,
//! event IDs as reference hashes, v12 room IDs from the create event, and the authorization
//! rules against each event's own auth events.

use std::collections::{BTreeMap, HashMap};

use reqwest::StatusCode;
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId,
    UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    serde::Base64,
    signatures::{PublicKeyMap, Verified},
    state_res,
};
use serde_json::{Value, json, value::RawValue};

use crate::{
    harness::{Backend, TestServer, both_backends, enc},
    room_util::{create_room, ids, join, put_state, room_path, send_text, timeline},
};

both_backends!(events_verify_v10, events_verify_v11, events_verify_v12);

async fn events_verify_v10(backend: Backend) {
    verify_room(backend, "10").await;
}

async fn events_verify_v11(backend: Backend) {
    verify_room(backend, "11").await;
}

async fn events_verify_v12(backend: Backend) {
    verify_room(backend, "12").await;
}

/// An event parsed straight from its PDU JSON, for ruma's auth rules.
#[derive(Debug)]
struct Ev {
    id: OwnedEventId,
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    ts: MilliSecondsSinceUnixEpoch,
    kind: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    prev: Vec<OwnedEventId>,
    auth: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
}

impl Ev {
    fn parse(id: &OwnedEventId, pdu: &Value) -> Self {
        let ids = |field: &str| -> Vec<OwnedEventId> {
            pdu[field]
                .as_array()
                .unwrap_or_else(|| panic!("{field} in {pdu}"))
                .iter()
                .map(|v| OwnedEventId::try_from(v.as_str().expect("id")).expect("event id"))
                .collect()
        };
        let redacts = pdu
            .get("redacts")
            .or_else(|| pdu["content"].get("redacts"))
            .and_then(Value::as_str)
            .map(|r| OwnedEventId::try_from(r).expect("redacts"));
        Self {
            id: id.clone(),
            room_id: pdu.get("room_id").and_then(Value::as_str).map(|r| OwnedRoomId::try_from(r).expect("room id")),
            sender: OwnedUserId::try_from(pdu["sender"].as_str().expect("sender")).expect("user id"),
            ts: serde_json::from_value(pdu["origin_server_ts"].clone()).expect("ts"),
            kind: pdu["type"].as_str().expect("type").into(),
            content: serde_json::value::to_raw_value(&pdu["content"]).expect("content"),
            state_key: pdu.get("state_key").and_then(Value::as_str).map(str::to_owned),
            prev: ids("prev_events"),
            auth: ids("auth_events"),
            redacts,
        }
    }
}

impl state_res::Event for Ev {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        false
    }
}

/// The server's keys, as `GET /_matrix/key/v2/server` serves them, after checking that the
/// response is signed by the key it lists.
async fn server_keys(s: &TestServer) -> PublicKeyMap {
    let (status, body) = s.get("/_matrix/key/v2/server", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["server_name"], s.server_name.as_str());
    let verify_keys = body["verify_keys"].as_object().expect("verify_keys");
    assert!(!verify_keys.is_empty(), "{body}");
    let mut set = BTreeMap::new();
    for (key_id, key) in verify_keys {
        assert!(key_id.starts_with("ed25519:"), "{key_id}");
        set.insert(key_id.clone(), Base64::parse(key["key"].as_str().expect("key")).expect("base64 key"));
    }
    let mut map = PublicKeyMap::new();
    map.insert(s.server_name.clone(), set);
    let object: CanonicalJsonObject = serde_json::from_value(body.clone()).expect("canonical");
    ruma::signatures::verify_json(&map, &object).expect("key response is self-signed");
    map
}

async fn stored_pdu(s: &TestServer, id: &OwnedEventId) -> Value {
    let stored = s.services().storage.events.get(id).await.expect("storage").unwrap_or_else(|| panic!("{id} stored"));
    serde_json::from_str(stored.json.get()).expect("pdu json")
}

async fn verify_room(backend: Backend, version: &str) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(
        &s,
        &alice,
        json!({"preset": "public_chat", "room_version": version, "name": "Verified", "topic": "t",
               "room_alias_name": format!("v{version}")}),
    )
    .await;
    join(&s, &bob, &room).await;
    send_text(&s, &alice, &room, "hello").await;
    let doomed = send_text(&s, &bob, &room, "regret").await;
    put_state(&s, &alice, &room, "m.room.join_rules", "", json!({"join_rule": "invite"})).await;
    let (_, mut power) = s.get(&room_path(&room, "state/m.room.power_levels/"), Some(&alice.token)).await;
    power["users"][&bob.user_id] = json!(50);
    put_state(&s, &alice, &room, "m.room.power_levels", "", power).await;
    put_state(&s, &bob, &room, "m.room.topic", "", json!({"topic": "bob's"})).await;
    let (status, body) = s
        .put(&room_path(&room, &format!("redact/{}/r", enc(&doomed))), Some(&alice.token), json!({"reason": "no"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let redaction = body["event_id"].as_str().expect("event_id").to_owned();
    let (status, _) =
        s.post(&room_path(&room, "kick"), Some(&alice.token), json!({"user_id": bob.user_id, "reason": "bye"})).await;
    assert_eq!(status, StatusCode::OK);
    send_text(&s, &alice, &room, "alone").await;

    let keys = server_keys(&s).await;
    let rules: RoomVersionRules = RoomVersionId::try_from(version).expect("version").rules().expect("rules");
    let event_ids: Vec<OwnedEventId> = ids(&timeline(&s, &alice, &room).await)
        .iter()
        .map(|id| OwnedEventId::try_from(id.as_str()).expect("event id"))
        .collect();
    // createRoom: 9 events (with alias, name, topic); then join, 2 messages, join rules, power
    // levels, topic, redaction, kick, message.
    assert_eq!(event_ids.len(), 9 + 9);

    let mut pdus: HashMap<OwnedEventId, Value> = HashMap::new();
    for id in &event_ids {
        pdus.insert(id.clone(), stored_pdu(&s, id).await);
    }
    let create_id = &event_ids[0];
    let create = &pdus[create_id];
    assert_eq!(create["type"], "m.room.create");

    for id in &event_ids {
        let pdu = &pdus[id];
        let object: CanonicalJsonObject = serde_json::from_value(pdu.clone()).expect("canonical json");
        // Signatures, and content hashes unless the event was redacted.
        let verified = ruma::signatures::verify_event(&keys, &object, &rules)
            .unwrap_or_else(|e| panic!("v{version} {id} ({}): {e}", pdu["type"]));
        if id.as_str() == doomed {
            assert_eq!(verified, Verified::Signatures, "redacted: content hash no longer matches");
            assert_eq!(pdu["content"], json!({}), "stored redacted");
        } else {
            assert_eq!(verified, Verified::All, "v{version} {id} ({})", pdu["type"]);
        }
        assert_eq!(pdu["signatures"].as_object().map(|m| m.len()), Some(1), "signed by this server only");
        // The event ID is the reference hash.
        let hash = ruma::signatures::reference_hash(&object, &rules).expect("reference hash");
        assert_eq!(id.as_str(), format!("${hash}"), "v{version} event ID of {}", pdu["type"]);
        assert!(pdu.get("event_id").is_none(), "v3+ PDUs carry no event_id");

        // Room IDs: v12 derives it from the create event, which carries none.
        if version == "12" {
            if id == create_id {
                assert!(pdu.get("room_id").is_none(), "v12 create event has no room_id: {pdu}");
            } else {
                assert_eq!(pdu["room_id"], room.as_str());
            }
        } else {
            assert_eq!(pdu["room_id"], room.as_str());
        }

        // The authorization rules, against the event's own auth events.
        let event = Ev::parse(id, pdu);
        let mut auth_ids = event.auth.clone();
        if version == "12" && id != create_id {
            assert!(!auth_ids.contains(create_id), "v12 auth events leave out the create event");
            auth_ids.push(create_id.clone());
        } else if id != create_id {
            assert!(auth_ids.contains(create_id), "create event among the auth events");
        }
        let mut auth_events: HashMap<OwnedEventId, Ev> = HashMap::new();
        for auth_id in &auth_ids {
            let auth_pdu = pdus.get(auth_id).unwrap_or_else(|| panic!("{id}: auth event {auth_id} not in the room"));
            auth_events.insert(auth_id.clone(), Ev::parse(auth_id, auth_pdu));
        }
        state_res::check_state_independent_auth_rules(&rules.authorization, &event, |e| auth_events.get(e))
            .unwrap_or_else(|e| panic!("v{version} {id} ({}) state-independent: {e}", pdu["type"]));
        let by_key: HashMap<(String, String), &Ev> =
            auth_events.values().map(|e| ((e.kind.to_string(), e.state_key.clone().unwrap_or_default()), e)).collect();
        state_res::check_state_dependent_auth_rules(&rules.authorization, &event, |t: &StateEventType, k: &str| {
            by_key.get(&(t.to_string(), k.to_owned())).copied()
        })
        .unwrap_or_else(|e| panic!("v{version} {id} ({}) state-dependent: {e}", pdu["type"]));
        // prev_events point backwards at known events.
        for prev in &event.prev {
            assert!(pdus.contains_key(prev), "{id} follows unknown {prev}");
        }
    }

    if version == "12" {
        let object: CanonicalJsonObject = serde_json::from_value(create.clone()).expect("canonical");
        let hash = ruma::signatures::reference_hash(&object, &rules).expect("hash");
        assert_eq!(room, format!("!{hash}"), "v12 room ID is the create event's reference hash");
    }
    // The redaction is itself a verified event naming its target.
    let redaction_pdu = &pdus[&OwnedEventId::try_from(redaction.as_str()).expect("id")];
    let target = redaction_pdu.get("redacts").or_else(|| redaction_pdu["content"].get("redacts"));
    assert_eq!(target.and_then(Value::as_str), Some(doomed.as_str()));
    assert_eq!(redaction_pdu.get("redacts").is_some(), version == "10", "v11+ moved redacts into content");
    s.finish().await;
}
