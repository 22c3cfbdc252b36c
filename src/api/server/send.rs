//! Transactions from other servers.

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::api::federation::transactions::send_transaction_message;

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::Error,
    service::{Services, federation::transaction},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(send)
}

/// `PUT /_matrix/federation/v1/send/{txnId}`
/// <https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv1sendtxnid>
async fn send(
    State(services): State<Arc<Services>>,
    req: Ruma<send_transaction_message::v1::Request>,
) -> RumaResult<send_transaction_message::v1::Response> {
    let origin = &req.auth.0;
    if req.body.origin != *origin {
        return Err(Error::forbidden("The transaction's origin is not the server that signed it"));
    }
    let results =
        transaction::receive(&services, origin, req.body.transaction_id.as_str(), &req.body.pdus, &req.body.edus)
            .await?;
    Ok(send_transaction_message::v1::Response::new(results).into())
}
