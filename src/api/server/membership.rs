//! Joining a room this server is in, for users of other servers, and invites to this
//! server's users.

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::api::federation::membership::{create_invite, create_join_event, prepare_join_event};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    service::{
        Services,
        federation::{invite as service_invite, membership},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(make_join).ruma(send_join).ruma(invite)
}

/// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
/// <https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1make_joinroomiduserid>
async fn make_join(
    State(services): State<Arc<Services>>,
    req: Ruma<prepare_join_event::v1::Request>,
) -> RumaResult<prepare_join_event::v1::Response> {
    let body = &req.body;
    let (version, event) =
        membership::answer_make(&services, &req.auth.0, &body.room_id, &body.user_id, "join", Some(&body.ver)).await?;
    let mut response = prepare_join_event::v1::Response::new(event);
    response.room_version = Some(version);
    Ok(response.into())
}

/// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`
/// <https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv2send_joinroomideventid>
async fn send_join(
    State(services): State<Arc<Services>>,
    req: Ruma<create_join_event::v2::Request>,
) -> RumaResult<create_join_event::v2::Response> {
    let body = &req.body;
    let state = membership::answer_send_join(&services, &req.auth.0, &body.room_id, &body.event_id, &body.pdu).await?;
    Ok(create_join_event::v2::Response::new(state).into())
}

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`
/// <https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv2inviteroomideventid>
async fn invite(
    State(services): State<Arc<Services>>,
    req: Ruma<create_invite::v2::Request>,
) -> RumaResult<create_invite::v2::Response> {
    let body = &req.body;
    let event = service_invite::receive(
        &services,
        &req.auth.0,
        &body.room_id,
        &body.event_id,
        &body.room_version,
        &body.event,
        &body.invite_room_state,
    )
    .await?;
    Ok(create_invite::v2::Response::new(event).into())
}
