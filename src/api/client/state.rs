//! Room state: reading it, and sending state events.

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::{
    api::client::state::{
        get_state_event_for_key::{self, v3::StateEventFormat},
        get_state_events, send_state_event,
    },
    serde::Raw,
};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::Error,
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(get_all).ruma(get_one).ruma(send)
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidstate>
async fn get_all(
    State(services): State<Arc<Services>>,
    req: Ruma<get_state_events::v3::Request>,
) -> RumaResult<get_state_events::v3::Response> {
    let state = services.rooms.read.readable_state(&req.body.room_id, &req.auth.user_id, None).await?;
    let events = services.rooms.read.client_events(req.auth.viewer(), &state).await?;
    Ok(get_state_events::v3::Response::new(events.into_iter().map(Raw::from_json).collect()).into())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidstateeventtypestatekey>
async fn get_one(
    State(services): State<Arc<Services>>,
    req: Ruma<get_state_event_for_key::v3::Request>,
) -> RumaResult<get_state_event_for_key::v3::Response> {
    let body = &req.body;
    let event_type = body.event_type.to_string();
    let state = services.rooms.read.readable_state(&body.room_id, &req.auth.user_id, None).await?;
    let pdu = state
        .into_iter()
        .find(|p| p.event_type.to_string() == event_type && p.state_key.as_deref() == Some(body.state_key.as_str()))
        .ok_or_else(|| Error::not_found("State event not found"))?;
    let body = match body.format {
        StateEventFormat::Event => services.rooms.read.client_event(req.auth.viewer(), &pdu).await?,
        _ => pdu.content.clone(),
    };
    Ok(get_state_event_for_key::v3::Response::new(body).into())
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3roomsroomidstateeventtypestatekey>
async fn send(
    State(services): State<Arc<Services>>,
    req: Ruma<send_state_event::v3::Request>,
) -> RumaResult<send_state_event::v3::Response> {
    let body = &req.body;
    let content: serde_json::Value = match serde_json::from_str(body.body.json().get()) {
        Ok(value @ serde_json::Value::Object(_)) => value,
        _ => return Err(Error::bad_json("State event content must be a JSON object")),
    };
    let pdu = services
        .rooms
        .timeline
        .send_state(&body.room_id, &req.auth.user_id, &body.event_type.to_string(), &body.state_key, content)
        .await?;
    Ok(send_state_event::v3::Response::new(pdu.event_id.clone()).into())
}
