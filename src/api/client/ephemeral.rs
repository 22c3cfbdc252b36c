//! Presence, typing notifications, read receipts and read markers.

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::State};
use ruma::{
    api::client::{
        presence::{get_presence, set_presence},
        read_marker::set_read_marker,
        receipt::create_receipt,
        typing::create_typing_event::{self, v3::Typing},
    },
    presence::PresenceState,
};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::Error,
    service::{Services, ephemeral::receipts},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(put_presence).ruma(get_presence_handler).ruma(typing).ruma(receipt).ruma(read_markers)
}

/// `PUT /_matrix/client/v3/presence/{userId}/status`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3presenceuseridstatus>
async fn put_presence(
    State(services): State<Arc<Services>>,
    req: Ruma<set_presence::v3::Request>,
) -> RumaResult<set_presence::v3::Response> {
    if req.body.user_id != req.auth.user_id {
        return Err(Error::forbidden("You may only set your own presence"));
    }
    let state = match &req.body.presence {
        PresenceState::Online => "online",
        PresenceState::Unavailable => "unavailable",
        PresenceState::Offline => "offline",
        other => return Err(Error::invalid_param(format!("Unknown presence {}", other.as_str()))),
    };
    services.presence.set_status(&req.auth.user_id, state, req.body.status_msg.clone()).await?;
    Ok(set_presence::v3::Response::new().into())
}

/// `GET /_matrix/client/v3/presence/{userId}/status`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3presenceuseridstatus>
///
/// Only for users who share a room with the requester (or the requester themself).
async fn get_presence_handler(
    State(services): State<Arc<Services>>,
    req: Ruma<get_presence::v3::Request>,
) -> RumaResult<get_presence::v3::Response> {
    let target = &req.body.user_id;
    // Users of other servers have no account here; sharing a room is what counts for them.
    if target.server_name() == services.config.server_name && services.accounts.get(target).await?.is_none() {
        return Err(Error::not_found("No such user"));
    }
    if !services.presence.may_see(&req.auth.user_id, target).await? {
        return Err(Error::forbidden("You do not share a room with this user"));
    }
    let view = services.presence.get(target).await?;
    let mut response = get_presence::v3::Response::new(PresenceState::from(view.state.as_str()));
    response.status_msg = view.status_msg;
    response.currently_active = Some(view.currently_active);
    response.last_active_ago = view.last_active_ago.map(Duration::from_millis);
    Ok(response.into())
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3roomsroomidtypinguserid>
async fn typing(
    State(services): State<Arc<Services>>,
    req: Ruma<create_typing_event::v3::Request>,
) -> RumaResult<create_typing_event::v3::Response> {
    let body = &req.body;
    if body.user_id != req.auth.user_id {
        return Err(Error::forbidden("You may only set your own typing state"));
    }
    if !services.rooms.members.is_joined(&body.room_id, &body.user_id).await? {
        return Err(Error::forbidden("You are not in this room"));
    }
    let timeout = match &body.state {
        Typing::Yes(info) => Some(info.timeout),
        _ => None,
    };
    services.typing.set(&body.room_id, &body.user_id, timeout).await;
    Ok(create_typing_event::v3::Response::new().into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidreceiptreceipttypeeventid>
async fn receipt(
    State(services): State<Arc<Services>>,
    req: Ruma<create_receipt::v3::Request>,
) -> RumaResult<create_receipt::v3::Response> {
    let body = &req.body;
    let receipt_type = body.receipt_type.to_string();
    if receipt_type == receipts::FULLY_READ && body.thread.as_str().is_some() {
        return Err(Error::invalid_param("m.fully_read takes no thread_id"));
    }
    services
        .receipts
        .set_receipt(
            &services.account_data,
            &req.auth.user_id,
            &body.room_id,
            &receipt_type,
            &body.event_id,
            body.thread.as_str(),
        )
        .await?;
    Ok(create_receipt::v3::Response::new().into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidread_markers>
async fn read_markers(
    State(services): State<Arc<Services>>,
    req: Ruma<set_read_marker::v3::Request>,
) -> RumaResult<set_read_marker::v3::Response> {
    let body = &req.body;
    let user = &req.auth.user_id;
    for (kind, event) in [
        (receipts::FULLY_READ, &body.fully_read),
        (receipts::READ, &body.read_receipt),
        (receipts::READ_PRIVATE, &body.private_read_receipt),
    ] {
        if let Some(event_id) = event {
            services.receipts.set_receipt(&services.account_data, user, &body.room_id, kind, event_id, None).await?;
        }
    }
    Ok(set_read_marker::v3::Response::new().into())
}
