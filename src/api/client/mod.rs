//! Client-Server API handlers, one file per area, mirroring ruma's endpoint modules.

mod account;
mod account_data;
mod backup;
mod device;
mod directory;
mod discovery;
mod ephemeral;
mod keys;
mod membership;
mod message;
mod profile;
mod push;
mod register;
mod room;
mod session;
mod state;
mod sync;
mod to_device;

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
    let router = account_data::routes(router);
    let router = room::routes(router);
    let router = membership::routes(router);
    let router = message::routes(router);
    let router = state::routes(router);
    let router = sync::routes(router);
    let router = push::routes(router);
    let router = ephemeral::routes(router);
    let router = keys::routes(router);
    let router = to_device::routes(router);
    let router = backup::routes(router);
    directory::routes(router)
}
