//! Sending to-device messages.

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::api::client::to_device::send_event_to_device;

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(send)
}

/// `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3sendtodeviceeventtypetxnid>
async fn send(
    State(services): State<Arc<Services>>,
    req: Ruma<send_event_to_device::v3::Request>,
) -> RumaResult<send_event_to_device::v3::Response> {
    let body = &req.body;
    services.to_device.send(&req.auth, &body.event_type.to_string(), body.txn_id.as_str(), &body.messages).await?;
    Ok(send_event_to_device::v3::Response::new().into())
}
