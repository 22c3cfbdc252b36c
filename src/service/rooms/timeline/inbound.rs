//! Receiving an event from another server: the checks the spec performs on receipt of a PDU
//! (server-server API, "Checks performed on receipt of a PDU"), in its order:
//!
//! 1. a valid PDU (format, size): otherwise dropped;
//! 2. valid signatures from the sender's server (and, for restricted joins, the authorising
//!    server): otherwise dropped;
//! 3. a valid content hash: otherwise the event is kept, but redacted;
//! 4. allowed by the authorization rules against its own auth events: otherwise rejected;
//! 5. allowed against the state before it (the resolution of the states after its
//!    prev_events): otherwise rejected;
//! 6. allowed against the current state of the room: otherwise soft-failed.
//!
//! A rejected event is stored as rejected and never shown; a soft-failed one is stored with
//! its state but kept out of the current state, the timelines and the prev_events of new
//! events. Then the event goes through the same persist step as a local one.
//!
//! Missing auth events are fetched and stored as outliers; missing prev_events are fetched
//! (get_missing_events) and received first. Where they come from is an [`EventSource`], which
//! federation provides.

use std::{future::Future, pin::Pin, sync::Arc};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId, ServerName,
    signatures::{Verified, required_server_signatures_to_verify_event, verify_event},
    state_res,
};

use super::{
    Timeline,
    auth::{check_with_auth_events, check_with_state},
    persist::{Flow, Persist, StateBefore},
};
use crate::{
    error::{Error, Result},
    service::rooms::{Pdu, PduRef, RoomGuard, RoomHead},
    storage::Placement,
};

/// How deep fetching missing events may recurse (missing events of missing events...).
const MAX_FETCH_DEPTH: u8 = 4;
/// Events asked for per get_missing_events request.
const MISSING_EVENTS_LIMIT: u32 = 20;

/// What the room pipeline asks of other servers, through federation: missing events, the
/// state at a gap, signatures on invites.
#[async_trait::async_trait]
pub trait EventSource: Send + Sync {
    /// The events with these IDs, as `origin` has them.
    async fn fetch_events(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        ids: &[OwnedEventId],
    ) -> Result<Vec<CanonicalJsonObject>>;

    /// Events of the room that lead from `earliest` (exclusive; what this server has) up to
    /// `latest` (exclusive), as `origin` has them.
    async fn missing_events(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        earliest: &[OwnedEventId],
        latest: &[OwnedEventId],
        limit: u32,
    ) -> Result<Vec<CanonicalJsonObject>>;

    /// The state before `event_id` as `origin` has it, and its auth chain, by event IDs
    /// (state_ids). Used at a gap: when an event's prev_events cannot be fetched.
    async fn state_ids(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &ruma::EventId,
    ) -> Result<(Vec<OwnedEventId>, Vec<OwnedEventId>)> {
        let _ = (origin, room_id, event_id);
        Err(Error::not_found("This source does not answer state_ids"))
    }

    /// Asks `destination` (the invitee's server) to sign an invite (invite v2), with the
    /// stripped state of the room; returns the event with its signature added.
    async fn send_invite(
        &self,
        destination: &ServerName,
        version: &RoomVersionId,
        event_id: &ruma::EventId,
        event: CanonicalJsonObject,
        invite_room_state: Vec<Box<serde_json::value::RawValue>>,
    ) -> Result<CanonicalJsonObject> {
        let _ = (destination, version, event_id, event, invite_room_state);
        Err(Error::not_found("This server does not federate"))
    }
}

/// What became of a received event.
#[derive(Clone, Debug)]
pub enum Received {
    /// In the room's timeline (now, or already before).
    Accepted(PduRef),
    /// Stored, but kept out of the current state and the timelines.
    SoftFailed(PduRef),
    /// Stored as rejected; the reason is in its placement.
    Rejected(PduRef),
    /// Stored without its place in the graph.
    Outlier(PduRef),
    /// Not stored: its prev_events are unknown and could not be fetched. Federation then
    /// asks for the state at the event instead.
    MissingPrevEvents(Vec<OwnedEventId>),
}

impl Received {
    pub(super) fn of(pdu: PduRef) -> Self {
        match &pdu.placement {
            Placement::Timeline => Self::Accepted(pdu),
            Placement::SoftFailed => Self::SoftFailed(pdu),
            Placement::Rejected(_) => Self::Rejected(pdu),
            Placement::Outlier => Self::Outlier(pdu),
        }
    }
}

type Receiving<'a> = Pin<Box<dyn Future<Output = Result<Received>> + Send + 'a>>;

impl Timeline {
    /// A PDU received from `origin` as it happens (a federation transaction).
    pub async fn receive_pdu(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        object: CanonicalJsonObject,
    ) -> Result<Received> {
        let guard = self.lock(room_id).await;
        self.receive_locked(&guard, origin, object, Some(Flow::Live), 0).await
    }

    /// A PDU from the room's history (backfill): it takes its place in the past and is not
    /// delivered to clients as new.
    pub async fn receive_backfilled(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        object: CanonicalJsonObject,
    ) -> Result<Received> {
        let guard = self.lock(room_id).await;
        self.receive_locked(&guard, origin, object, Some(Flow::Backfill), 0).await
    }

    /// An event whose place in the graph is not known (an auth chain or state from a join,
    /// an event fetched by ID): checked against its auth events and stored as an outlier.
    pub async fn receive_outlier(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        object: CanonicalJsonObject,
    ) -> Result<Received> {
        let guard = self.lock(room_id).await;
        self.receive_locked(&guard, origin, object, None, 0).await
    }

    /// The create event of a room made on another server, which begins the room here: the
    /// first event of its graph, checked like any other (format, signatures, the create
    /// rules). Joining a remote room starts from it.
    pub async fn receive_create(&self, origin: &ServerName, object: CanonicalJsonObject) -> Result<Received> {
        let version = match object.get("content") {
            Some(CanonicalJsonValue::Object(content)) => match content.get("room_version") {
                Some(CanonicalJsonValue::String(v)) => RoomVersionId::try_from(v.as_str()).ok(),
                // Before room versions were named, every room was version 1.
                None => Some(RoomVersionId::V1),
                _ => None,
            },
            _ => None,
        };
        let version = version.ok_or_else(|| Error::bad_json("Invalid room_version in the create event"))?;
        if !crate::config::SUPPORTED_ROOM_VERSIONS.contains(&version) {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::UnsupportedRoomVersion,
                format!("Room version {version} is not supported"),
            ));
        }
        let rules = RoomHead::rules_for(&version)?;
        if !matches!(object.get("type"), Some(CanonicalJsonValue::String(t)) if t == "m.room.create") {
            return Err(Error::bad_json("Not a create event"));
        }
        state_res::check_pdu_format(&object, &rules.event_format)
            .map_err(|e| Error::bad_json(format!("Invalid PDU: {e}")))?;
        let event_id = parley_federation::pdu::event_id(&object, &rules).map_err(|e| Error::bad_json(e.to_string()))?;
        let room_id = match object.get("room_id") {
            Some(CanonicalJsonValue::String(room_id)) => {
                OwnedRoomId::try_from(room_id.as_str()).map_err(|e| Error::bad_json(e.to_string()))?
            }
            _ => parley_federation::pdu::room_id_from_create(&event_id).map_err(|e| Error::bad_json(e.to_string()))?,
        };
        let guard = self.lock(&room_id).await;
        if self.state.head(&room_id).await?.is_some() {
            return match self.events.pdu(&event_id).await? {
                Some(known) => Ok(Received::of(known)),
                None => Err(Error::forbidden("This server already has that room, with another create event")),
            };
        }
        let head = Arc::new(RoomHead {
            room_id: room_id.clone(),
            version: version.clone(),
            rules,
            extremities: Vec::new(),
            current_group: 0,
            chain_len: 0,
            state: Arc::default(),
        });
        let object = self.verify_signatures(&head, object).await?;
        let pdu = Pdu::from_object(event_id, room_id, &object)?;
        let placement = match state_res::check_state_independent_auth_rules(
            &head.rules.authorization,
            &pdu,
            |_: &ruma::EventId| -> Option<PduRef> { None },
        ) {
            Ok(()) => Placement::Timeline,
            Err(reason) => return Err(Error::forbidden(format!("Invalid create event: {reason}"))),
        };
        let created_at = i64::from(pdu.origin_server_ts.get());
        let creator = pdu.sender.clone();
        let persist = Persist {
            pdu,
            before: Some(StateBefore::current(&head)),
            placement,
            flow: Flow::Live,
            txn: None,
            new_room: Some(crate::storage::NewRoom { room_version: version.as_str(), creator: &creator, created_at }),
            has_successor: false,
            restart_head: false,
        };
        let received = Received::of(self.persist(&guard, &head, persist).await?);
        tracing::info!(room_id = %head.room_id, %origin, "a room made on another server begins here");
        Ok(received)
    }

    /// The checks and the persist step, under the room's lock. `flow` is `None` for an
    /// outlier. Boxed: fetching missing events recurses.
    fn receive_locked<'a>(
        &'a self,
        guard: &'a RoomGuard,
        origin: &'a ServerName,
        object: CanonicalJsonObject,
        flow: Option<Flow>,
        depth: u8,
    ) -> Receiving<'a> {
        Box::pin(async move {
            let room_id = guard.room_id();
            let head = self.state.head(room_id).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
            let rules = &head.rules;
            // 1. A valid PDU, or it is dropped.
            state_res::check_pdu_format(&object, &rules.event_format)
                .map_err(|e| Error::bad_json(format!("Invalid PDU: {e}")))?;
            if let Some(CanonicalJsonValue::String(in_room)) = object.get("room_id")
                && in_room != room_id.as_str()
            {
                return Err(Error::bad_json("The PDU belongs to another room"));
            }
            let event_id =
                parley_federation::pdu::event_id(&object, rules).map_err(|e| Error::bad_json(e.to_string()))?;
            // A PDU without a room ID is a create event (room version 12), and only this
            // room's own create event (whose ID names the room) belongs here.
            if !object.contains_key("room_id")
                && parley_federation::pdu::room_id_from_create(&event_id).ok().as_deref() != Some(room_id)
            {
                return Err(Error::bad_json("The PDU belongs to another room"));
            }
            if let Some(known) = self.events.pdu(&event_id).await?
                && (known.placement != Placement::Outlier || flow.is_none())
            {
                return Ok(Received::of(known));
            }
            // 2 and 3. Signatures, or it is dropped; the content hash, or it is redacted.
            let object = self.verify_signatures(&head, object).await?;
            let pdu = Pdu::from_object(event_id, room_id.to_owned(), &object)?;
            let auth = self.auth_events_fetched(guard, &head, &pdu, origin, depth).await?;
            let Some(flow) = flow else {
                let placement = match check_with_auth_events(rules, &pdu, &auth) {
                    Ok(()) => Placement::Outlier,
                    Err(reason) => Placement::Rejected(reason),
                };
                let persist = outlier(pdu, placement);
                return Ok(Received::of(self.persist(guard, &head, persist).await?));
            };
            let Some(before) = self.state_before(guard, &head, &pdu, origin, flow, depth).await? else {
                let missing = pdu.prev_events.clone();
                return Ok(Received::MissingPrevEvents(missing));
            };
            // Receiving missing events first may have moved the head.
            let head = self.state.head(room_id).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
            let placement = self.judge(&head, &pdu, &auth, &before, flow).await?;
            if let Placement::Rejected(reason) = &placement {
                tracing::info!(event_id = %pdu.event_id, %origin, %reason, "rejected a PDU");
            }
            let has_successor = self.storage.events.has_successor(&pdu.event_id).await?;
            let persist = Persist {
                pdu,
                before: Some(before),
                placement,
                flow,
                txn: None,
                new_room: None,
                has_successor,
                restart_head: false,
            };
            Ok(Received::of(self.persist(guard, &head, persist).await?))
        })
    }

    /// Checks 4 to 6: the placement the authorization rules give the event.
    async fn judge(
        &self,
        head: &RoomHead,
        pdu: &Pdu,
        auth: &std::collections::HashMap<OwnedEventId, PduRef>,
        before: &StateBefore,
        flow: Flow,
    ) -> Result<Placement> {
        let rules = &head.rules;
        if let Err(reason) = check_with_auth_events(rules, pdu, auth) {
            return Ok(Placement::Rejected(format!("against its auth events: {reason}")));
        }
        let state = match self.auth_state(rules, pdu, &before.map).await? {
            Ok(state) => state,
            Err(reason) => return Ok(Placement::Rejected(reason)),
        };
        if let Err(reason) = check_with_state(rules, pdu, &state) {
            return Ok(Placement::Rejected(format!("against the state before it: {reason}")));
        }
        // An event from the past is not judged by today's state.
        if flow == Flow::Live && *before.map != *head.state {
            let current = match self.auth_state(rules, pdu, &head.state).await? {
                Ok(state) => state,
                Err(_) => return Ok(Placement::SoftFailed),
            };
            if let Err(reason) = check_with_state(rules, pdu, &current) {
                tracing::info!(event_id = %pdu.event_id, %reason, "soft-failed a PDU");
                return Ok(Placement::SoftFailed);
            }
        }
        Ok(Placement::Timeline)
    }

    /// Checks the signatures the spec requires, with keys valid when the event was sent.
    /// An event whose content hash is wrong is redacted, as the spec says, not dropped.
    pub(super) async fn verify_signatures(
        &self,
        head: &RoomHead,
        object: CanonicalJsonObject,
    ) -> Result<CanonicalJsonObject> {
        let rules = &head.rules;
        let servers = required_server_signatures_to_verify_event(&object, &rules.signatures)
            .map_err(|e| Error::forbidden(format!("Cannot verify the PDU: {e}")))?;
        let ts = match object.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
            _ => 0,
        };
        let keys = self.keys.public_keys(&object, &servers, ts).await?;
        if let Some(server) = servers.iter().find(|s| !keys.contains_key(s.as_str())) {
            return Err(Error::forbidden(format!("No valid signing key is known for {server}")));
        }
        match verify_event(&keys, &object, rules) {
            Ok(Verified::All) => Ok(object),
            Ok(Verified::Signatures) => {
                tracing::info!("a PDU's content hash does not match: storing it redacted");
                ruma::canonical_json::redact(object, &rules.redaction, None)
                    .map_err(|e| Error::bad_json(format!("Cannot redact the PDU: {e}")))
            }
            Err(e) => Err(Error::forbidden(format!("Invalid signature on the PDU: {e}"))),
        }
    }

    /// The event's auth events, fetching the missing ones from `origin` as outliers.
    pub(super) async fn auth_events_fetched(
        &self,
        guard: &RoomGuard,
        head: &RoomHead,
        pdu: &Pdu,
        origin: &ServerName,
        depth: u8,
    ) -> Result<std::collections::HashMap<OwnedEventId, PduRef>> {
        let auth = self.auth_events_of(head, pdu).await?;
        let missing: Vec<OwnedEventId> = pdu.auth_events.iter().filter(|id| !auth.contains_key(*id)).cloned().collect();
        let Some(source) = self.source.get().filter(|_| !missing.is_empty() && depth < MAX_FETCH_DEPTH) else {
            return Ok(auth);
        };
        match source.fetch_events(origin, guard.room_id(), &missing).await {
            Ok(fetched) => {
                for object in fetched {
                    if let Err(e) = self.receive_locked(guard, origin, object, None, depth + 1).await {
                        tracing::info!(event_id = %pdu.event_id, error = %e, "could not store a missing auth event");
                    }
                }
            }
            Err(e) => tracing::info!(event_id = %pdu.event_id, error = %e, "could not fetch missing auth events"),
        }
        self.auth_events_of(head, pdu).await
    }

    /// The state before the event: the state after its prev_event, or the resolution of the
    /// states after them. Missing prev_events are fetched and received first; `None` when
    /// some are still missing.
    async fn state_before(
        &self,
        guard: &RoomGuard,
        head: &RoomHead,
        pdu: &Pdu,
        origin: &ServerName,
        flow: Flow,
        depth: u8,
    ) -> Result<Option<StateBefore>> {
        let mut prevs = self.in_graph(&head.room_id, &pdu.prev_events).await?;
        if prevs.len() < pdu.prev_events.len()
            && depth < MAX_FETCH_DEPTH
            && let Some(source) = self.source.get()
        {
            let earliest: Vec<OwnedEventId> = head.extremities.iter().map(|(id, _)| id.clone()).collect();
            let latest = [pdu.event_id.clone()];
            match source.missing_events(origin, guard.room_id(), &earliest, &latest, MISSING_EVENTS_LIMIT).await {
                Ok(mut fetched) => {
                    // Oldest first, so that each one's prev_events come before it.
                    fetched.sort_by_key(|object| match object.get("depth") {
                        Some(CanonicalJsonValue::Integer(depth)) => i64::from(*depth),
                        _ => 0,
                    });
                    for object in fetched {
                        match self.receive_locked(guard, origin, object, Some(flow), depth + 1).await {
                            // The rest follow it: they would each ask for the same gap again.
                            Ok(Received::MissingPrevEvents(_)) => break,
                            Ok(_) => {}
                            Err(e) => {
                                tracing::info!(event_id = %pdu.event_id, error = %e, "could not receive a missing event");
                            }
                        }
                    }
                }
                Err(e) => tracing::info!(event_id = %pdu.event_id, error = %e, "could not fetch missing events"),
            }
            prevs = self.in_graph(&head.room_id, &pdu.prev_events).await?;
        }
        if prevs.len() < pdu.prev_events.len() && depth == 0 && flow == Flow::Live {
            // A gap that get_missing_events could not close: ask for the state there.
            return self.state_at_gap(guard, head, pdu, origin, &prevs).await;
        }
        if prevs.len() < pdu.prev_events.len() || prevs.is_empty() {
            return Ok(None);
        }
        let mut maps = Vec::with_capacity(prevs.len());
        let mut base = None;
        for (_, group) in &prevs {
            let group_base = self.state.group_base(*group).await?;
            maps.push(Arc::clone(&group_base.map));
            base.get_or_insert(group_base);
        }
        let map = if maps.len() == 1 {
            Arc::clone(&maps[0])
        } else {
            Arc::new(self.state.resolve(&head.rules, &maps).await?)
        };
        Ok(Some(StateBefore { map, base }))
    }

    /// The state before an event some of whose prev_events are missing for good: for each
    /// missing one, the state before it (state_ids from `origin`), plus itself when it is a
    /// state event; the events among them this server lacks are fetched and stored as
    /// outliers (checked like any). With the states after the prev_events that are here, they
    /// resolve to the state before the event. `None` when `origin` cannot say.
    async fn state_at_gap(
        &self,
        guard: &RoomGuard,
        head: &RoomHead,
        pdu: &Pdu,
        origin: &ServerName,
        known: &[(OwnedEventId, i64)],
    ) -> Result<Option<StateBefore>> {
        let Some(source) = self.source.get() else { return Ok(None) };
        let mut maps = Vec::with_capacity(pdu.prev_events.len());
        for (_, group) in known {
            maps.push(Arc::clone(&self.state.group_base(*group).await?.map));
        }
        let room_id = guard.room_id();
        for prev in pdu.prev_events.iter().filter(|id| !known.iter().any(|(k, _)| k == *id)) {
            let (state, auth_chain) = match source.state_ids(origin, room_id, prev).await {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::info!(event_id = %pdu.event_id, %prev, error = %e, "no state at a gap");
                    return Ok(None);
                }
            };
            let mut wanted: Vec<OwnedEventId> = auth_chain.into_iter().chain(state.iter().cloned()).collect();
            wanted.push(prev.clone());
            let have: std::collections::HashSet<OwnedEventId> =
                self.events.pdus(&wanted).await?.into_iter().map(|p| p.event_id.clone()).collect();
            let mut missing: Vec<OwnedEventId> = wanted.into_iter().filter(|id| !have.contains(id)).collect();
            missing.sort();
            missing.dedup();
            if !missing.is_empty() {
                let mut fetched = source.fetch_events(origin, room_id, &missing).await?;
                fetched.sort_by_key(|object| match object.get("depth") {
                    Some(CanonicalJsonValue::Integer(depth)) => i64::from(*depth),
                    _ => 0,
                });
                for object in fetched {
                    if let Err(e) = self.receive_locked(guard, origin, object, None, 1).await {
                        tracing::info!(event_id = %pdu.event_id, error = %e, "a state event at a gap was refused");
                    }
                }
            }
            let mut ids = state;
            ids.push(prev.clone());
            let mut map = crate::service::rooms::state::StateMap::new();
            let mut prev_state = None;
            for event in self.events.pdus(&ids).await? {
                let Some(key) = event.state_key.clone() else { continue };
                // Only this room's accepted events: a remote cannot lend another room's state.
                if event.room_id != room_id || matches!(event.placement, Placement::Rejected(_)) {
                    continue;
                }
                let entry = ((event.event_type.to_string(), key), event.event_id.clone());
                if event.event_id == *prev {
                    prev_state = Some(entry);
                } else {
                    map.insert(entry.0, entry.1);
                }
            }
            // The state after the prev_event: before it, plus itself.
            if let Some((key, id)) = prev_state {
                map.insert(key, id);
            }
            maps.push(Arc::new(map));
        }
        let map = if maps.len() == 1 {
            Arc::clone(&maps[0])
        } else {
            Arc::new(self.state.resolve(&head.rules, &maps).await?)
        };
        tracing::info!(event_id = %pdu.event_id, %origin, "filled a gap in the room's graph with the state there");
        Ok(Some(StateBefore { map, base: None }))
    }

    /// Those of `ids` whose place in this room's graph is known, with the state group after
    /// each. An event of another room is not a prev_event here, whatever a PDU says.
    async fn in_graph(&self, room_id: &RoomId, ids: &[OwnedEventId]) -> Result<Vec<(OwnedEventId, i64)>> {
        let mut found: Vec<(OwnedEventId, i64)> = self
            .events
            .pdus(ids)
            .await?
            .into_iter()
            .filter(|p| p.room_id == room_id)
            .filter_map(|p| Some((p.event_id.clone(), p.state_group?)))
            .collect();
        found.sort();
        found.dedup();
        Ok(found)
    }
}

/// The persist request for an outlier.
fn outlier(pdu: Pdu, placement: Placement) -> Persist<'static> {
    Persist {
        pdu,
        before: None,
        placement,
        flow: Flow::Live,
        txn: None,
        new_room: None,
        has_successor: false,
        restart_head: false,
    }
}
