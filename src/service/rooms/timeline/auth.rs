//! The authorization rules, through ruma's state_res, for local and remote events alike:
//! against the event's own auth events, and against a state (the state before the event, or
//! the current state).

use std::collections::HashMap;

use ruma::{OwnedEventId, room_version_rules::RoomVersionRules, state_res};

use super::Timeline;
use crate::{
    error::Result,
    service::rooms::{Pdu, PduRef, RoomHead, state::StateMap},
};

/// State events keyed by `(type, state key)`, as the state-dependent rules read them.
pub(super) type AuthState = HashMap<(String, String), PduRef>;

/// The state-independent rules against the event's auth events, then the state-dependent
/// rules against those same auth events taken as a state.
pub(super) fn check_with_auth_events(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    auth: &HashMap<OwnedEventId, PduRef>,
) -> Result<(), String> {
    state_res::check_state_independent_auth_rules(&rules.authorization, pdu, |id| auth.get(id).map(|p| &**p))?;
    let state: AuthState = auth
        .values()
        .filter_map(|p| Some(((p.event_type.to_string(), p.state_key.clone()?), std::sync::Arc::clone(p))))
        .collect();
    check_with_state(rules, pdu, &state)
}

/// The state-dependent rules against a state.
pub(super) fn check_with_state(rules: &RoomVersionRules, pdu: &Pdu, state: &AuthState) -> Result<(), String> {
    state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, |event_type, state_key| {
        state.get(&(event_type.to_string(), state_key.to_owned())).map(|p| &**p)
    })
}

/// The keys the state-dependent rules read for `pdu`: its auth types and the create event.
/// An event whose content the rules cannot read gets the reason as an error.
pub(super) fn auth_keys(rules: &RoomVersionRules, pdu: &Pdu) -> Result<Vec<(String, String)>, String> {
    let keys = state_res::auth_types_for_event(
        &pdu.event_type,
        &pdu.sender,
        pdu.state_key.as_deref(),
        &pdu.content,
        &rules.authorization,
    )
    .map_err(|e| format!("invalid event content: {e}"))?;
    let mut keys: Vec<(String, String)> = keys.into_iter().map(|(t, k)| (t.to_string(), k)).collect();
    keys.push(("m.room.create".to_owned(), String::new()));
    Ok(keys)
}

/// The events of `state` at `keys`, from `events`.
pub(super) fn pick(keys: Vec<(String, String)>, state: &StateMap, events: &HashMap<OwnedEventId, PduRef>) -> AuthState {
    keys.into_iter()
        .filter_map(|key| {
            let pdu = events.get(state.get(&key)?)?;
            Some((key, std::sync::Arc::clone(pdu)))
        })
        .collect()
}

/// All the rules for an event whose auth events and state are in `known`: against its auth
/// events (plus the create event, which v12 no longer lists), then against `state`.
pub(super) fn check_known(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    state: &StateMap,
    known: &HashMap<OwnedEventId, PduRef>,
) -> Result<(), String> {
    let create = state.get(&("m.room.create".to_owned(), String::new()));
    let auth = pdu
        .auth_events
        .iter()
        .chain(create)
        .filter_map(|id| Some((id.clone(), std::sync::Arc::clone(known.get(id)?))))
        .collect();
    check_with_auth_events(rules, pdu, &auth)?;
    check_with_state(rules, pdu, &pick(auth_keys(rules, pdu)?, state, known))
}

impl Timeline {
    /// The events of `state` that the rules read for `pdu`. An event whose content the rules
    /// cannot read gets the reason as an error.
    pub(super) async fn auth_state(
        &self,
        rules: &RoomVersionRules,
        pdu: &Pdu,
        state: &StateMap,
    ) -> Result<Result<AuthState, String>> {
        let keys = match auth_keys(rules, pdu) {
            Ok(keys) => keys,
            Err(reason) => return Ok(Err(reason)),
        };
        let ids: Vec<OwnedEventId> = keys.iter().filter_map(|key| state.get(key).cloned()).collect();
        let by_id = self.events.pdu_map(&ids).await?;
        Ok(Ok(pick(keys, state, &by_id)))
    }

    /// The event's auth events that this server has, keyed by ID. From room version 12 the
    /// create event is no longer listed, but the rules still read it, so it is added.
    pub(super) async fn auth_events_of(&self, head: &RoomHead, pdu: &Pdu) -> Result<HashMap<OwnedEventId, PduRef>> {
        let mut ids = pdu.auth_events.clone();
        if let Some(create) = head.state_event("m.room.create", "") {
            ids.push(create.clone());
        }
        // Another room's events are no auth events here, whatever a PDU lists.
        let mut events = self.events.pdu_map(&ids).await?;
        events.retain(|_, pdu| pdu.room_id == head.room_id);
        Ok(events)
    }
}
