//! Inbound `/send` transactions: every PDU through the event DAG's receive pipeline, every EDU
//! to its handler.
//!
//! - **Once.** The answer to each `(origin, txn ID)` is stored; a retry gets the same answer
//!   and changes nothing.
//! - **Per PDU.** Each PDU gets its own result; one PDU's failure never blocks the others.
//! - **Ordered within a room, parallel across rooms.** A room's PDUs are received one after
//!   the other, in the order sent (each may build on the previous); different rooms at once.

use std::{collections::BTreeMap, sync::Arc};

use futures::StreamExt as _;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, ServerName,
    api::federation::transactions::edu::Edu, serde::Raw,
};
use serde_json::value::RawValue;

use super::{acl, edu};
use crate::{
    error::{Error, Result},
    service::{Services, now_ms, rooms::timeline::Received},
};

/// Rooms whose PDUs one transaction receives at once.
const ROOMS_AT_ONCE: usize = 4;
/// The spec's limits on one transaction.
const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;

/// The result of each PDU, by event ID, as `/send` answers it.
pub type PduResults = BTreeMap<OwnedEventId, std::result::Result<(), String>>;

/// One transaction at a time per origin, as Synapse does: a retry of a transaction still
/// being processed (the origin timed out waiting) waits for it, then gets its stored answer,
/// instead of processing it a second time alongside. The map holds origins with a transaction
/// in progress only.
#[derive(Default)]
pub struct InboundLocks(
    std::sync::Mutex<std::collections::HashMap<ruma::OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
);

impl InboundLocks {
    async fn lock(&self, origin: &ServerName) -> OriginGuard<'_> {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(map.entry(origin.to_owned()).or_default())
        };
        let guard = Arc::clone(&lock).lock_owned().await;
        OriginGuard { locks: self, origin: origin.to_owned(), lock, _guard: Some(guard) }
    }
}

struct OriginGuard<'a> {
    locks: &'a InboundLocks,
    origin: ruma::OwnedServerName,
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for OriginGuard<'_> {
    fn drop(&mut self) {
        self._guard = None;
        let mut map = self.locks.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Nobody else holds or waits for it (the map's copy and ours are the only ones).
        if Arc::strong_count(&self.lock) <= 2 {
            map.remove(&self.origin);
        }
    }
}

/// Processes a transaction from `origin` (or replays the answer to one already seen).
pub async fn receive(
    services: &Services,
    origin: &ServerName,
    txn_id: &str,
    pdus: &[Box<RawValue>],
    edus: &[Raw<Edu>],
) -> Result<PduResults> {
    let _one_at_a_time = match &services.federation {
        Some(federation) => Some(federation.inbound.lock(origin).await),
        None => None,
    };
    if let Some(answer) = services.storage.federation.inbound_txn(origin, txn_id).await? {
        let stored: BTreeMap<OwnedEventId, Option<String>> = serde_json::from_str(&answer)?;
        return Ok(stored.into_iter().map(|(id, error)| (id, error.map_or(Ok(()), Err))).collect());
    }
    if pdus.len() > MAX_PDUS || edus.len() > MAX_EDUS {
        return Err(Error::bad_json(format!("A transaction carries at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs")));
    }
    let mut by_room: Vec<(OwnedRoomId, Vec<CanonicalJsonObject>)> = Vec::new();
    for raw in pdus {
        let Ok(object) = serde_json::from_str::<CanonicalJsonObject>(raw.get()) else {
            tracing::info!(%origin, "dropped a PDU that is not canonical JSON");
            continue;
        };
        let Some(room_id) = room_of(&object) else {
            tracing::info!(%origin, "dropped a PDU without a room");
            continue;
        };
        match by_room.iter_mut().find(|(r, _)| *r == room_id) {
            Some((_, list)) => list.push(object),
            None => by_room.push((room_id, vec![object])),
        }
    }
    let rooms: Vec<PduResults> = futures::stream::iter(by_room)
        .map(|(room_id, objects)| receive_room_pdus(services, origin, room_id, objects))
        .buffer_unordered(ROOMS_AT_ONCE)
        .collect()
        .await;
    let results: PduResults = rooms.into_iter().flatten().collect();
    for edu in edus {
        edu::receive(services, origin, edu).await;
    }
    let stored: BTreeMap<&OwnedEventId, Option<&String>> =
        results.iter().map(|(id, result)| (id, result.as_ref().err())).collect();
    services.storage.federation.record_inbound_txn(origin, txn_id, &serde_json::to_string(&stored)?, now_ms()).await?;
    Ok(results)
}

/// A room's PDUs of one transaction, in order.
async fn receive_room_pdus(
    services: &Services,
    origin: &ServerName,
    room_id: OwnedRoomId,
    objects: Vec<CanonicalJsonObject>,
) -> PduResults {
    let mut results = PduResults::new();
    let head = match services.rooms.state.head(&room_id).await {
        Ok(Some(head)) => head,
        Ok(None) => {
            tracing::info!(%origin, %room_id, "dropped PDUs of a room this server is not in");
            return results;
        }
        Err(e) => {
            tracing::warn!(%origin, %room_id, error = %e, "could not load a room for a transaction");
            return results;
        }
    };
    let denied = !acl::allows(&services.rooms, &room_id, origin).await.unwrap_or(false);
    for object in objects {
        let Ok(event_id) = parley_federation::pdu::event_id(&object, &head.rules) else { continue };
        if denied {
            results.insert(event_id, Err("The room's server ACL denies this server".to_owned()));
            continue;
        }
        let outcome = match services.rooms.timeline.receive_pdu(origin, &room_id, object).await {
            Ok(Received::Accepted(_) | Received::SoftFailed(_) | Received::Outlier(_)) => Ok(()),
            Ok(Received::Rejected(pdu)) => Err(format!("Rejected: {:?}", pdu.placement)),
            Ok(Received::MissingPrevEvents(_)) => Err("Its prev_events could not be fetched".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        results.insert(event_id, outcome);
    }
    results
}

/// The room a PDU names.
fn room_of(object: &CanonicalJsonObject) -> Option<OwnedRoomId> {
    match object.get("room_id") {
        Some(CanonicalJsonValue::String(room_id)) => OwnedRoomId::try_from(room_id.as_str()).ok(),
        _ => None,
    }
}
