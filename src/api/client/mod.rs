//! Client-Server API handlers, one file per area, mirroring ruma's endpoint modules.

mod account;
mod account_data;
mod device;
mod discovery;
mod profile;
mod register;
mod session;

use std::sync::Arc;

use axum::Router;

use crate::service::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = discovery::routes(router);
    let router = session::routes(router);
    let router = register::routes(router);
    let router = account::routes(router);
    let router = device::routes(router);
    let router = profile::routes(router);
    account_data::routes(router)
}
