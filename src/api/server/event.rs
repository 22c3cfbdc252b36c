//! Events and state, for other servers: a single event, the events they miss, the state at
//! an event, an event's auth chain. Each only as far as the asking server may see.

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId,
    api::federation::{
        authorization::get_event_authorization,
        event::{get_event, get_missing_events, get_room_state, get_room_state_ids},
    },
};
use serde_json::value::RawValue;

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::Result,
    service::{
        Services,
        federation::history::{missing_events, state_before, visible_event},
        rooms::PduRef,
    },
};

/// The most events one get_missing_events answers with.
const MAX_MISSING: usize = 100;
/// The most event IDs of each list of a get_missing_events request that are looked at.
const MAX_IDS: usize = 100;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(event).ruma(missing).ruma(state_ids).ruma(state).ruma(event_auth)
}

/// `GET /_matrix/federation/v1/event/{eventId}`
/// <https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1eventeventid>
async fn event(
    State(services): State<Arc<Services>>,
    req: Ruma<get_event::v1::Request>,
) -> RumaResult<get_event::v1::Response> {
    let pdu = visible_event(&services, &req.auth.0, None, &req.body.event_id).await?;
    let response = get_event::v1::Response::new(
        services.config.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
        pdu.json.clone(),
    );
    Ok(response.into())
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`
/// <https://spec.matrix.org/v1.19/server-server-api/#post_matrixfederationv1get_missing_eventsroomid>
async fn missing(
    State(services): State<Arc<Services>>,
    req: Ruma<get_missing_events::v1::Request>,
) -> RumaResult<get_missing_events::v1::Response> {
    let body = &req.body;
    let limit = usize::try_from(u64::from(body.limit)).unwrap_or(MAX_MISSING).min(MAX_MISSING);
    // Each ID costs a look-up: a request naming thousands is cut to a sane number.
    let earliest = &body.earliest_events[..body.earliest_events.len().min(MAX_IDS)];
    let latest = &body.latest_events[..body.latest_events.len().min(MAX_IDS)];
    let events =
        missing_events(&services, &req.auth.0, &body.room_id, earliest, latest, limit, u64::from(body.min_depth))
            .await?;
    Ok(get_missing_events::v1::Response::new(events.iter().map(|p| p.json.clone()).collect()).into())
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}`: the state before an event, by ID.
/// <https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1state_idsroomid>
async fn state_ids(
    State(services): State<Arc<Services>>,
    req: Ruma<get_room_state_ids::v1::Request>,
) -> RumaResult<get_room_state_ids::v1::Response> {
    origin_in_room(&services, &req.auth.0, &req.body.room_id).await?;
    let pdu = visible_event(&services, &req.auth.0, Some(&req.body.room_id), &req.body.event_id).await?;
    let (state, auth_chain) = state_and_chain(&services, &pdu).await?;
    Ok(get_room_state_ids::v1::Response::new(auth_chain, state).into())
}

/// `GET /_matrix/federation/v1/state/{roomId}`: the state before an event, in full.
/// <https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1stateroomid>
async fn state(
    State(services): State<Arc<Services>>,
    req: Ruma<get_room_state::v1::Request>,
) -> RumaResult<get_room_state::v1::Response> {
    origin_in_room(&services, &req.auth.0, &req.body.room_id).await?;
    let pdu = visible_event(&services, &req.auth.0, Some(&req.body.room_id), &req.body.event_id).await?;
    let (state, auth_chain) = state_and_chain(&services, &pdu).await?;
    let json = |events: Vec<PduRef>| events.into_iter().map(|p| p.json.clone()).collect::<Vec<Box<RawValue>>>();
    let state = json(services.rooms.events.pdus(&state).await?);
    let auth_chain = json(services.rooms.events.pdus(&auth_chain).await?);
    Ok(get_room_state::v1::Response::new(auth_chain, state).into())
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`
/// <https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1event_authroomideventid>
async fn event_auth(
    State(services): State<Arc<Services>>,
    req: Ruma<get_event_authorization::v1::Request>,
) -> RumaResult<get_event_authorization::v1::Response> {
    let pdu = visible_event(&services, &req.auth.0, Some(&req.body.room_id), &req.body.event_id).await?;
    let chain = services.storage.events.auth_chain(std::slice::from_ref(&pdu.event_id)).await?;
    let events = services.rooms.events.pdus(&chain).await?;
    Ok(get_event_authorization::v1::Response::new(events.into_iter().map(|p| p.json.clone()).collect()).into())
}

/// The state before an event (IDs) and the auth chain of that state.
/// The state endpoints answer servers in the room only ("403: the requesting host is not in
/// the room, or is excluded by ACL").
async fn origin_in_room(services: &Services, origin: &ruma::ServerName, room_id: &ruma::RoomId) -> Result<()> {
    if services.rooms.members.servers_of(room_id).await?.contains(origin) {
        Ok(())
    } else {
        Err(crate::error::Error::forbidden("Your server is not in this room"))
    }
}

async fn state_and_chain(services: &Services, pdu: &PduRef) -> Result<(Vec<OwnedEventId>, Vec<OwnedEventId>)> {
    let state: Vec<OwnedEventId> = state_before(services, pdu).await?.into_values().collect();
    let auth_chain = services.storage.events.auth_chain(&state).await?;
    Ok((state, auth_chain))
}
