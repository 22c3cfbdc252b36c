//! `/sync` and the filters it uses.

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::State};
use ruma::api::client::{
    filter::{FilterDefinition, create_filter, get_filter},
    sync::sync_events::{self, v3::Filter},
};

use crate::{
    api::{
        client::account_data::own_data,
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::{Error, Result},
    service::{Services, auth::AuthedUser, secrets, sync::SyncRequest},
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
    let filter = match &body.filter {
        None => FilterDefinition::default(),
        Some(Filter::FilterDefinition(filter)) => filter.clone(),
        Some(Filter::FilterId(id)) => load_filter(&services, &req.auth, id).await?,
        Some(_) => return Err(Error::invalid_param("Unsupported filter")),
    };
    let max = services.config.http.max_sync_timeout();
    let request = SyncRequest {
        user: req.auth.clone(),
        since: body.since.as_deref().map(str::parse).transpose()?,
        full_state: body.full_state,
        filter,
        timeout: body.timeout.unwrap_or(Duration::ZERO).min(max),
        use_state_after: body.use_state_after,
        set_presence: body.set_presence.clone(),
    };
    Ok(services.sync.sync(&request).await?.into())
}

async fn load_filter(services: &Services, user: &AuthedUser, id: &str) -> Result<FilterDefinition> {
    let json = services
        .storage
        .filters
        .get(&user.user_id, id)
        .await?
        .ok_or_else(|| Error::not_found(format!("Unknown filter {id}")))?;
    Ok(serde_json::from_str(&json)?)
}

/// `POST /_matrix/client/v3/user/{userId}/filter`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3useruseridfilter>
async fn create(
    State(services): State<Arc<Services>>,
    req: Ruma<create_filter::v3::Request>,
) -> RumaResult<create_filter::v3::Response> {
    own_data(&req.auth, &req.body.user_id)?;
    let id = secrets::random_string(12, b"abcdefghijklmnopqrstuvwxyz0123456789");
    let json = serde_json::to_string(&req.body.filter)?;
    services.storage.filters.put(&req.auth.user_id, &id, &json).await?;
    Ok(create_filter::v3::Response::new(id).into())
}

/// `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3useruseridfilterfilterid>
async fn get(
    State(services): State<Arc<Services>>,
    req: Ruma<get_filter::v3::Request>,
) -> RumaResult<get_filter::v3::Response> {
    own_data(&req.auth, &req.body.user_id)?;
    let filter = load_filter(&services, &req.auth, &req.body.filter_id).await?;
    Ok(get_filter::v3::Response::new(filter).into())
}
