//! A fake remote homeserver for the event-DAG tests: it signs PDUs with a key of its own,
//! which the Parley under test has been told to trust, and tracks the state after each event
//! it makes so that its events carry the right auth events and depth.
//!
//! Events go straight into Parley's receive pipeline, as a federation transaction would
//! deliver them; missing ones can be served back through an `EventSource`.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use parley::{
    error::Result,
    service::rooms::timeline::{EventSource, Received},
    storage::server_keys::RemoteKey,
};
use parley_federation::SigningKey;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId,
    RoomVersionId, ServerName, canonical_json::to_canonical_value, events::TimelineEventType,
    room_version_rules::RoomVersionRules, state_res,
};
use serde_json::Value;

use crate::harness::TestServer;

/// Room state keyed by `(type, state key)`.
pub type StateMap = HashMap<(String, String), OwnedEventId>;

/// A signed PDU, with its ID.
#[derive(Clone, Debug)]
pub struct Signed {
    pub id: OwnedEventId,
    pub object: CanonicalJsonObject,
}

/// A homeserver that exists only as a signing key.
pub struct Remote {
    pub name: OwnedServerName,
    key: SigningKey,
}

impl Remote {
    pub fn new(name: &str) -> Self {
        Self {
            name: OwnedServerName::try_from(name).expect("server name"),
            key: SigningKey::generate("fake1").expect("key"),
        }
    }

    pub fn user(&self, localpart: &str) -> OwnedUserId {
        OwnedUserId::try_from(format!("@{localpart}:{}", self.name)).expect("user ID")
    }

    /// Makes `s` trust this server's key, as fetching it over federation would.
    pub async fn trusted_by(&self, s: &TestServer) {
        let key = RemoteKey {
            key_id: self.key.key_id().to_string(),
            public_key: self.key.public_key_base64(),
            valid_until_ts: i64::MAX,
            expired: false,
        };
        s.services().server_keys.store_remote_keys(&self.name, &[key]).await.expect("store key");
    }

    /// Hashes and signs an event object.
    pub fn sign(&self, rules: &RoomVersionRules, mut object: CanonicalJsonObject) -> Signed {
        let id = parley_federation::pdu::hash_and_sign(&mut object, rules, &self.name, &self.key).expect("sign");
        Signed { id, object }
    }
}

/// The graph of one room as the tests see it: every event's depth and the state after it,
/// for the events Parley made (read back from it) and those the remote made.
pub struct Graph {
    pub room_id: OwnedRoomId,
    pub rules: RoomVersionRules,
    after: HashMap<OwnedEventId, (u64, StateMap)>,
}

/// An event to make.
pub struct Draft<'a> {
    pub sender: &'a OwnedUserId,
    pub kind: &'a str,
    pub state_key: Option<&'a str>,
    pub content: Value,
    pub prev: Vec<OwnedEventId>,
}

impl Graph {
    pub fn new(room_id: &str, version: &RoomVersionId) -> Self {
        Self {
            room_id: OwnedRoomId::try_from(room_id).expect("room ID"),
            rules: version.rules().expect("rules"),
            after: HashMap::new(),
        }
    }

    /// Learns an event Parley holds: its depth and the state after it.
    pub async fn learn(&mut self, s: &TestServer, event_id: &str) -> OwnedEventId {
        let id = OwnedEventId::try_from(event_id).expect("event ID");
        let rooms = &s.services().rooms;
        let pdu = rooms.events.pdu(&id).await.expect("load").expect("known to Parley");
        let group = pdu.state_group.expect("has state");
        let state: StateMap = rooms.state.group_map(group).await.expect("state");
        self.after.insert(id.clone(), (u64::from(pdu.depth), state));
        id
    }

    /// Starts the graph of a room made by a remote with its create event.
    pub fn seed(&mut self, create: &Signed, depth: u64) {
        let state = StateMap::from([(("m.room.create".to_owned(), String::new()), create.id.clone())]);
        self.after.insert(create.id.clone(), (depth, state));
    }

    /// The state after an event the graph knows.
    pub fn state_after(&self, id: &OwnedEventId) -> &StateMap {
        &self.after.get(id).expect("known event").1
    }

    /// Makes and signs an event after `draft.prev`, whose auth events come from the state
    /// after the first prev event (tests fork from one point, then merge explicitly).
    pub fn make(&mut self, remote: &Remote, draft: Draft<'_>) -> Signed {
        let base = self.state_after(&draft.prev[0]).clone();
        let depth = draft.prev.iter().map(|p| self.after.get(p).expect("known prev").0).max().unwrap_or(0) + 1;
        let signed = self.make_with(remote, &draft, &base, depth);
        let mut after = base;
        if let Some(key) = draft.state_key {
            after.insert((draft.kind.to_owned(), key.to_owned()), signed.id.clone());
        }
        self.after.insert(signed.id.clone(), (depth, after));
        signed
    }

    /// Makes an event with auth events from `state` and the given depth, without recording it.
    pub fn make_with(&self, remote: &Remote, draft: &Draft<'_>, state: &StateMap, depth: u64) -> Signed {
        let kind = TimelineEventType::from(draft.kind);
        let raw = serde_json::value::to_raw_value(&draft.content).expect("raw");
        let auth: Vec<CanonicalJsonValue> =
            state_res::auth_types_for_event(&kind, draft.sender, draft.state_key, &raw, &self.rules.authorization)
                .expect("auth types")
                .into_iter()
                .filter_map(|(t, k)| state.get(&(t.to_string(), k)))
                .map(|id| CanonicalJsonValue::String(id.to_string()))
                .collect();
        let mut object = CanonicalJsonObject::new();
        object.insert("type".into(), CanonicalJsonValue::String(draft.kind.to_owned()));
        object.insert("room_id".into(), CanonicalJsonValue::String(self.room_id.to_string()));
        object.insert("sender".into(), CanonicalJsonValue::String(draft.sender.to_string()));
        object.insert("content".into(), to_canonical_value(&draft.content).expect("canonical content"));
        object.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(now()));
        object.insert("depth".into(), CanonicalJsonValue::Integer(depth.try_into().expect("depth")));
        object.insert(
            "prev_events".into(),
            CanonicalJsonValue::Array(draft.prev.iter().map(|p| CanonicalJsonValue::String(p.to_string())).collect()),
        );
        object.insert("auth_events".into(), CanonicalJsonValue::Array(auth));
        if let Some(key) = draft.state_key {
            object.insert("state_key".into(), CanonicalJsonValue::String(key.to_owned()));
        }
        remote.sign(&self.rules, object)
    }
}

fn now() -> ruma::Int {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    ruma::Int::try_from(i64::try_from(ms).expect("ms")).expect("ms fit")
}

/// Feeds a PDU to Parley as if `remote` had sent it live.
pub async fn deliver(s: &TestServer, remote: &Remote, room: &RoomId, pdu: &Signed) -> Result<Received> {
    s.services().rooms.timeline.receive_pdu(&remote.name, room, pdu.object.clone()).await
}

/// Asserts that a delivery was accepted into the timeline.
#[track_caller]
pub fn accepted(received: &Result<Received>) {
    assert!(matches!(received, Ok(Received::Accepted(_))), "expected accepted, got {received:?}");
}

/// Serves events a remote holds, as federation's event and get_missing_events requests would.
#[derive(Default)]
pub struct Served {
    events: Mutex<HashMap<OwnedEventId, CanonicalJsonObject>>,
}

impl Served {
    pub fn hold(&self, pdu: &Signed) {
        self.events.lock().expect("lock").insert(pdu.id.clone(), pdu.object.clone());
    }

    fn prevs(object: &CanonicalJsonObject) -> Vec<OwnedEventId> {
        match object.get("prev_events") {
            Some(CanonicalJsonValue::Array(prev)) => prev
                .iter()
                .filter_map(|p| match p {
                    CanonicalJsonValue::String(s) => OwnedEventId::try_from(s.as_str()).ok(),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[async_trait::async_trait]
impl EventSource for Served {
    async fn fetch_events(
        &self,
        _origin: &ServerName,
        _room_id: &RoomId,
        ids: &[OwnedEventId],
    ) -> Result<Vec<CanonicalJsonObject>> {
        let events = self.events.lock().expect("lock");
        Ok(ids.iter().filter_map(|id| events.get(id).cloned()).collect())
    }

    async fn missing_events(
        &self,
        _origin: &ServerName,
        _room_id: &RoomId,
        earliest: &[OwnedEventId],
        latest: &[OwnedEventId],
        limit: u32,
    ) -> Result<Vec<CanonicalJsonObject>> {
        // Walk back from `latest` through prev_events, stopping at `earliest` and at events
        // this remote does not hold, as the spec's get_missing_events does.
        let events = self.events.lock().expect("lock");
        let mut found = Vec::new();
        let mut seen: std::collections::HashSet<OwnedEventId> = earliest.iter().cloned().collect();
        let mut frontier: Vec<OwnedEventId> =
            latest.iter().filter_map(|id| events.get(id)).flat_map(Self::prevs).collect();
        while let Some(id) = frontier.pop() {
            if found.len() >= limit as usize || !seen.insert(id.clone()) {
                continue;
            }
            if let Some(object) = events.get(&id) {
                frontier.extend(Self::prevs(object));
                found.push(object.clone());
            }
        }
        Ok(found)
    }
}

/// Connects `served` as where `s` fetches missing events from.
pub fn serve(s: &TestServer, served: Arc<Served>) {
    s.services().rooms.timeline.set_event_source(served);
}
