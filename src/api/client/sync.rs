//! `/sync` and the filters it uses.

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::State};
use ruma::{
    api::client::{
        filter::{create_filter, get_filter},
        sync::sync_events,
    },
    presence::PresenceState,
};

use crate::{
    api::{
        client::account_data::own_data,
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::Error,
    service::{Services, sync::SyncRequest},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(sync).ruma(create).ruma(get)
}

/// `GET /_matrix/client/v3/sync`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3sync>
async fn sync(
    State(services): State<Arc<Services>>,
    req: Ruma<sync_events::v3::Request>,
) -> RumaResult<sync_events::v3::Response> {
    let body = &req.body;
    // ruma takes any string; the spec knows three.
    let set_presence = match &body.set_presence {
        state @ (PresenceState::Online | PresenceState::Offline | PresenceState::Unavailable) => state.clone(),
        other => return Err(Error::invalid_param(format!("Unknown set_presence `{other}`"))),
    };
    let since = body.since.as_deref().map(str::parse).transpose()?;
    let filter = services.filters.for_sync(&req.auth.user_id, body.filter.as_ref()).await?;
    let max = services.config.http.max_sync_timeout();
    let request = SyncRequest {
        user: req.auth.clone(),
        since,
        full_state: body.full_state,
        filter,
        timeout: body.timeout.unwrap_or(Duration::ZERO).min(max),
        use_state_after: body.use_state_after,
        set_presence,
    };
    Ok(services.sync.sync(&request).await?.into())
}

/// `POST /_matrix/client/v3/user/{userId}/filter`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3useruseridfilter>
async fn create(
    State(services): State<Arc<Services>>,
    req: Ruma<create_filter::v3::Request>,
) -> RumaResult<create_filter::v3::Response> {
    own_data(&req.auth, &req.body.user_id)?;
    let id = services.filters.create(&req.auth.user_id, &req.body.filter).await?;
    Ok(create_filter::v3::Response::new(id).into())
}

/// `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3useruseridfilterfilterid>
async fn get(
    State(services): State<Arc<Services>>,
    req: Ruma<get_filter::v3::Request>,
) -> RumaResult<get_filter::v3::Response> {
    own_data(&req.auth, &req.body.user_id)?;
    let filter = services.filters.get(&req.auth.user_id, &req.body.filter_id).await?;
    Ok(get_filter::v3::Response::new(filter).into())
}
