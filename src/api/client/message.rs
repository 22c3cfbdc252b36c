//! Sending and reading timeline events: send, redact, /messages, /context, /event,
//! /timestamp_to_event.

use std::{collections::BTreeSet, sync::Arc};

use axum::{Router, extract::State};
use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::{
        Direction as RumaDirection,
        client::{
            context::get_context,
            message::{get_message_events, send_message_event},
            redact::redact_event,
            room::{get_event_by_timestamp, get_room_event},
        },
    },
    serde::Raw,
};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::{Error, Result},
    service::{
        Services,
        rooms::read::{MAX_PAGE, PageRequest, PageToken},
    },
    storage::Direction,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(send).ruma(redact).ruma(messages).ruma(context).ruma(event).ruma(timestamp_to_event)
}

fn direction(dir: RumaDirection) -> Direction {
    match dir {
        RumaDirection::Forward => Direction::Forward,
        RumaDirection::Backward => Direction::Backward,
    }
}

fn json_object(raw: &serde_json::value::RawValue) -> Result<serde_json::Value> {
    match serde_json::from_str(raw.get()) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        _ => Err(Error::bad_json("Event content must be a JSON object")),
    }
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3roomsroomidsendeventtypetxnid>
async fn send(
    State(services): State<Arc<Services>>,
    req: Ruma<send_message_event::v3::Request>,
) -> RumaResult<send_message_event::v3::Response> {
    let content = json_object(req.body.body.json())?;
    let pdu = services
        .rooms
        .timeline
        .send_message(
            &req.body.room_id,
            &req.auth.user_id,
            &req.auth.device_id,
            &req.body.event_type.to_string(),
            req.body.txn_id.as_str(),
            content,
        )
        .await?;
    // Sending a message ends the sender's typing notification.
    services.typing.set(&req.body.room_id, &req.auth.user_id, None).await;
    Ok(send_message_event::v3::Response::new(pdu.event_id.clone()).into())
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3roomsroomidredacteventidtxnid>
async fn redact(
    State(services): State<Arc<Services>>,
    req: Ruma<redact_event::v3::Request>,
) -> RumaResult<redact_event::v3::Response> {
    let body = &req.body;
    let pdu = services
        .rooms
        .timeline
        .redact(
            &body.room_id,
            &req.auth.user_id,
            &req.auth.device_id,
            &body.event_id,
            body.txn_id.as_str(),
            body.reason.as_deref(),
        )
        .await?;
    Ok(redact_event::v3::Response::new(pdu.event_id.clone()).into())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/messages`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidmessages>
async fn messages(
    State(services): State<Arc<Services>>,
    req: Ruma<get_message_events::v3::Request>,
) -> RumaResult<get_message_events::v3::Response> {
    let body = &req.body;
    let user = &req.auth.user_id;
    services.rooms.read.check_can_read(&body.room_id, user).await?;
    let dir = direction(body.dir);
    let from = body.from.as_deref().map(str::parse::<PageToken>).transpose()?;
    let to = body.to.as_deref().map(str::parse::<PageToken>).transpose()?;
    let limit = u32::try_from(u64::from(body.limit)).unwrap_or(MAX_PAGE);
    let page =
        services.rooms.read.paginate(user, &body.room_id, PageRequest { from, to, dir, limit }, &body.filter).await?;
    let senders: BTreeSet<_> = page.events.iter().map(|p| p.sender.clone()).collect();
    let state = match page.events.last() {
        Some(last) => services.rooms.read.lazy_members(last, senders, &body.filter).await?,
        None => Vec::new(),
    };
    let mut response = get_message_events::v3::Response::new();
    response.start = page.start.to_string();
    response.end = page.end.map(|t| t.to_string());
    response.chunk = services
        .rooms
        .read
        .client_events(req.auth.viewer(), &page.events)
        .await?
        .into_iter()
        .map(Raw::from_json)
        .collect();
    response.state =
        services.rooms.read.client_events(req.auth.viewer(), &state).await?.into_iter().map(Raw::from_json).collect();
    Ok(response.into())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidcontexteventid>
async fn context(
    State(services): State<Arc<Services>>,
    req: Ruma<get_context::v3::Request>,
) -> RumaResult<get_context::v3::Response> {
    let body = &req.body;
    let user = &req.auth.user_id;
    services.rooms.read.check_can_read(&body.room_id, user).await?;
    let event = services.rooms.read.visible_event(user, &body.room_id, &body.event_id).await?;
    let limit = u32::try_from(u64::from(body.limit)).unwrap_or(MAX_PAGE).min(MAX_PAGE);
    let (before_limit, after_limit) = (limit / 2, limit - limit / 2);
    // The events around it in the room's topological order, the order /messages reads in.
    let mut before = Vec::new();
    let mut start = PageToken::before(event.topo_point());
    if before_limit > 0 {
        let request = PageRequest { from: Some(start), to: None, dir: Direction::Backward, limit: before_limit };
        let page = services.rooms.read.paginate(user, &body.room_id, request, &body.filter).await?;
        start = page.end.unwrap_or_else(|| page.events.last().map_or(start, |p| PageToken::before(p.topo_point())));
        before = page.events;
    }
    let mut after = Vec::new();
    let mut end = PageToken::after(event.topo_point());
    if after_limit > 0 {
        let request = PageRequest { from: Some(end), to: None, dir: Direction::Forward, limit: after_limit };
        let page = services.rooms.read.paginate(user, &body.room_id, request, &body.filter).await?;
        end = page.end.unwrap_or_else(|| page.events.last().map_or(end, |p| PageToken::after(p.topo_point())));
        after = page.events;
    }
    // The state at the last event returned, lazily limited to the senders shown if asked.
    let last = after.last().unwrap_or(&event);
    let state = if matches!(body.filter.lazy_load_options, ruma::api::client::filter::LazyLoadOptions::Enabled { .. }) {
        let senders =
            before.iter().chain(after.iter()).chain(std::iter::once(&event)).map(|p| p.sender.clone()).collect();
        services.rooms.read.lazy_members(last, senders, &body.filter).await?
    } else {
        match last.group() {
            Some(group) => services.rooms.state.group_state(group).await?,
            None => Vec::new(),
        }
    };
    let viewer = req.auth.viewer();
    fn convert<T>(events: Vec<Box<serde_json::value::RawValue>>) -> Vec<Raw<T>> {
        events.into_iter().map(Raw::from_json).collect()
    }
    let mut response = get_context::v3::Response::new();
    response.start = Some(start.to_string());
    response.end = Some(end.to_string());
    response.events_before = convert(services.rooms.read.client_events(viewer, &before).await?);
    response.event = Some(Raw::from_json(services.rooms.read.client_event(viewer, &event).await?));
    response.events_after = convert(services.rooms.read.client_events(viewer, &after).await?);
    response.state = convert(services.rooms.read.client_events(viewer, &state).await?);
    Ok(response.into())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomideventeventid>
async fn event(
    State(services): State<Arc<Services>>,
    req: Ruma<get_room_event::v3::Request>,
) -> RumaResult<get_room_event::v3::Response> {
    let user = &req.auth.user_id;
    let not_found = || Error::not_found("Event not found");
    services.rooms.read.check_can_read(&req.body.room_id, user).await.map_err(|_| not_found())?;
    let pdu = services.rooms.read.visible_event(user, &req.body.room_id, &req.body.event_id).await?;
    let event = services.rooms.read.client_event(req.auth.viewer(), &pdu).await?;
    Ok(get_room_event::v3::Response::new(Raw::from_json(event)).into())
}

/// `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1roomsroomidtimestamp_to_event>
async fn timestamp_to_event(
    State(services): State<Arc<Services>>,
    req: Ruma<get_event_by_timestamp::v1::Request>,
) -> RumaResult<get_event_by_timestamp::v1::Response> {
    let body = &req.body;
    let user = &req.auth.user_id;
    services.rooms.read.check_can_read(&body.room_id, user).await?;
    let ts = i64::from(body.ts.get());
    let found = services.rooms.read.event_near_ts(user, &body.room_id, ts, direction(body.dir)).await?;
    let pdu = found.ok_or_else(|| Error::not_found("No event found in that direction"))?;
    let origin_server_ts =
        MilliSecondsSinceUnixEpoch(UInt::try_from(u64::from(pdu.origin_server_ts.get())).unwrap_or_default());
    Ok(get_event_by_timestamp::v1::Response::new(pdu.event_id.clone(), origin_server_ts).into())
}
