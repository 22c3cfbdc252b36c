//! Server-Server API handlers, one file per area. Every endpoint but keys, version and
//! `.well-known` is signed with X-Matrix (`Ruma<Req>` checks it; `req.auth.0` is the origin).

mod discovery;
mod event;
mod keys;
mod membership;
mod query;
mod send;
mod user;

use std::sync::Arc;

use axum::Router;

use crate::service::Services;

/// What both listeners serve: this server's keys (and notary answers) and `.well-known`.
pub fn public_routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    discovery::routes(keys::routes(router))
}

/// The federation listener's own endpoints.
pub fn federation_routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    user::routes(query::routes(membership::routes(event::routes(send::routes(router)))))
}
