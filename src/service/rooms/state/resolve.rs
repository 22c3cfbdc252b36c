//! State resolution: ruma's implementation of the room version's algorithm (v2, or v2.1 from
//! room version 12), fed with what it needs.
//!
//! ruma's `resolve` is synchronous, so everything it may look at is loaded first: the events
//! of every state, and their auth chains (which hold every auth event, power-levels events
//! included, that the algorithm walks). It then runs on the blocking pool: resolving a large
//! room's fork is CPU work that must not stall the async workers.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    EventId, OwnedEventId,
    events::StateEventType,
    room_version_rules::RoomVersionRules,
    state_res::{self, utils::event_id_set::EventIdSet},
};

use super::{RoomState, head::StateMap};
use crate::{
    error::{Error, Result},
    service::rooms::PduRef,
};

impl RoomState {
    /// The resolution of the given states by the room version's algorithm.
    pub async fn resolve(&self, rules: &RoomVersionRules, maps: &[Arc<StateMap>]) -> Result<StateMap> {
        let Some(first) = maps.first() else { return Ok(StateMap::new()) };
        if maps.iter().all(|m| **m == **first) {
            return Ok((**first).clone());
        }
        let v2 = *rules
            .state_res
            .v2_rules()
            .ok_or_else(|| Error::internal("this room version's state resolution is not supported"))?;
        let mut chains = Vec::with_capacity(maps.len());
        let mut wanted: HashSet<OwnedEventId> = HashSet::new();
        for map in maps {
            let ids: Vec<OwnedEventId> = map.values().cloned().collect();
            let chain = self.storage.events.auth_chain(&ids).await?;
            wanted.extend(ids);
            wanted.extend(chain.iter().cloned());
            chains.push(chain.into_iter().collect::<EventIdSet<OwnedEventId>>());
        }
        let events = self.events.pdu_map(&wanted.into_iter().collect::<Vec<_>>()).await?;
        let ruma_maps: Vec<state_res::StateMap<OwnedEventId>> = maps.iter().map(|m| to_ruma(m)).collect();
        let authorization = rules.authorization.clone();
        let resolved = tokio::task::spawn_blocking(move || {
            state_res::resolve(
                &authorization,
                &v2,
                &ruma_maps,
                chains,
                |id| events.get(id).cloned(),
                |conflicted| Some(conflicted_subgraph(conflicted, &events)),
            )
        })
        .await
        .map_err(|e| Error::internal(format!("state resolution task: {e}")))?
        .map_err(|e| Error::internal(format!("state resolution failed: {e}")))?;
        Ok(resolved.into_iter().map(|((t, k), id)| ((t.to_string(), k), id)).collect())
    }
}

fn to_ruma(map: &StateMap) -> state_res::StateMap<OwnedEventId> {
    map.iter().map(|((t, k), id)| ((StateEventType::from(t.as_str()), k.clone()), id.clone())).collect()
}

/// The conflicted state subgraph (room version 12, state resolution v2.1): the events on an
/// `auth_events` path from one conflicted event to another, i.e. those that are auth
/// ancestors of a conflicted event and have a conflicted event among their own ancestors
/// (conflicted events included).
fn conflicted_subgraph(
    conflicted: &state_res::StateMap<Vec<OwnedEventId>>,
    events: &HashMap<OwnedEventId, PduRef>,
) -> EventIdSet<OwnedEventId> {
    let targets: HashSet<&EventId> = conflicted.values().flatten().map(|id| &**id).collect();
    let auth_of = |id: &EventId| events.get(id).map(|p| p.auth_events.as_slice()).unwrap_or_default();
    // Whether each event reached from a conflicted event reaches a conflicted event itself;
    // an iterative post-order walk, so that a deep auth chain cannot overflow the stack.
    let mut reaches: HashMap<&EventId, bool> = HashMap::new();
    let mut open: HashSet<&EventId> = HashSet::new();
    let mut stack: Vec<(&EventId, bool)> = targets.iter().map(|id| (*id, false)).collect();
    while let Some((id, expanded)) = stack.pop() {
        if expanded {
            let found = targets.contains(id) || auth_of(id).iter().any(|a| reaches.get(&**a) == Some(&true));
            reaches.insert(id, found);
            open.remove(id);
            continue;
        }
        if reaches.contains_key(id) || !open.insert(id) {
            continue;
        }
        stack.push((id, true));
        for auth in auth_of(id) {
            if !reaches.contains_key(&**auth) && !open.contains(&**auth) {
                stack.push((auth, false));
            }
        }
    }
    reaches.into_iter().filter(|(_, found)| *found).map(|(id, _)| id.to_owned()).collect()
}
