//! Push rules.

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::api::client::push::get_pushrules_all;

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    service::{Services, push::rules},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(get_all)
}

/// `GET /_matrix/client/v3/pushrules/`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrules>
async fn get_all(
    State(services): State<Arc<Services>>,
    req: Ruma<get_pushrules_all::v3::Request>,
) -> RumaResult<get_pushrules_all::v3::Response> {
    let global = rules::ruleset(&services.account_data, &req.auth.user_id).await?;
    Ok(get_pushrules_all::v3::Response::new(global).into())
}
