//! Push rules, pushers and notifications.

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::client::push::{
        delete_pushrule, get_notifications, get_pushers, get_pushrule, get_pushrule_actions, get_pushrule_enabled,
        get_pushrules_all, get_pushrules_global_scope,
        set_pusher::{
            self,
            v3::{PusherAction, PusherPostData},
        },
        set_pushrule, set_pushrule_actions, set_pushrule_enabled,
    },
    serde::Raw,
};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::Error,
    service::{Services, rooms::Viewer},
};

/// Notifications per page when the client does not say.
const DEFAULT_NOTIFICATIONS: i64 = 20;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(get_all)
        .ruma(get_global)
        .ruma(get_rule)
        .ruma(set_rule)
        .ruma(delete_rule)
        .ruma(get_enabled)
        .ruma(set_enabled)
        .ruma(get_actions)
        .ruma(set_actions)
        .ruma(list_pushers)
        .ruma(set_pusher_handler)
        .ruma(notifications)
}

/// `GET /_matrix/client/v3/pushrules/`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrules>
async fn get_all(
    State(services): State<Arc<Services>>,
    req: Ruma<get_pushrules_all::v3::Request>,
) -> RumaResult<get_pushrules_all::v3::Response> {
    let global = (*services.push.ruleset(&services.account_data, &req.auth.user_id).await?).clone();
    Ok(get_pushrules_all::v3::Response::new(global).into())
}

/// `GET /_matrix/client/v3/pushrules/global/`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesglobal>
async fn get_global(
    State(services): State<Arc<Services>>,
    req: Ruma<get_pushrules_global_scope::v3::Request>,
) -> RumaResult<get_pushrules_global_scope::v3::Response> {
    let global = (*services.push.ruleset(&services.account_data, &req.auth.user_id).await?).clone();
    Ok(get_pushrules_global_scope::v3::Response::new(global).into())
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesglobalkindruleid>
async fn get_rule(
    State(services): State<Arc<Services>>,
    req: Ruma<get_pushrule::v3::Request>,
) -> RumaResult<get_pushrule::v3::Response> {
    let rule =
        services.push.rule(&services.account_data, &req.auth.user_id, req.body.kind.clone(), &req.body.rule_id).await?;
    Ok(get_pushrule::v3::Response::new(rule).into())
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesglobalkindruleid>
async fn set_rule(
    State(services): State<Arc<Services>>,
    req: Ruma<set_pushrule::v3::Request>,
) -> RumaResult<set_pushrule::v3::Response> {
    let body = &req.body;
    services
        .push
        .put_rule(
            &services.account_data,
            &req.auth.user_id,
            body.rule.clone(),
            body.before.as_deref(),
            body.after.as_deref(),
        )
        .await?;
    Ok(set_pushrule::v3::Response::new().into())
}

/// `DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3pushrulesglobalkindruleid>
async fn delete_rule(
    State(services): State<Arc<Services>>,
    req: Ruma<delete_pushrule::v3::Request>,
) -> RumaResult<delete_pushrule::v3::Response> {
    services
        .push
        .delete_rule(&services.account_data, &req.auth.user_id, req.body.kind.clone(), &req.body.rule_id)
        .await?;
    Ok(delete_pushrule::v3::Response::new().into())
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesglobalkindruleidenabled>
async fn get_enabled(
    State(services): State<Arc<Services>>,
    req: Ruma<get_pushrule_enabled::v3::Request>,
) -> RumaResult<get_pushrule_enabled::v3::Response> {
    let rule =
        services.push.rule(&services.account_data, &req.auth.user_id, req.body.kind.clone(), &req.body.rule_id).await?;
    Ok(get_pushrule_enabled::v3::Response::new(rule.enabled).into())
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesglobalkindruleidenabled>
async fn set_enabled(
    State(services): State<Arc<Services>>,
    req: Ruma<set_pushrule_enabled::v3::Request>,
) -> RumaResult<set_pushrule_enabled::v3::Response> {
    let body = &req.body;
    services
        .push
        .set_rule_enabled(&services.account_data, &req.auth.user_id, body.kind.clone(), &body.rule_id, body.enabled)
        .await?;
    Ok(set_pushrule_enabled::v3::Response::new().into())
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesglobalkindruleidactions>
async fn get_actions(
    State(services): State<Arc<Services>>,
    req: Ruma<get_pushrule_actions::v3::Request>,
) -> RumaResult<get_pushrule_actions::v3::Response> {
    let rule =
        services.push.rule(&services.account_data, &req.auth.user_id, req.body.kind.clone(), &req.body.rule_id).await?;
    Ok(get_pushrule_actions::v3::Response::new(rule.actions).into())
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesglobalkindruleidactions>
async fn set_actions(
    State(services): State<Arc<Services>>,
    req: Ruma<set_pushrule_actions::v3::Request>,
) -> RumaResult<set_pushrule_actions::v3::Response> {
    let body = &req.body;
    services
        .push
        .set_rule_actions(
            &services.account_data,
            &req.auth.user_id,
            body.kind.clone(),
            &body.rule_id,
            body.actions.clone(),
        )
        .await?;
    Ok(set_pushrule_actions::v3::Response::new().into())
}

/// `GET /_matrix/client/v3/pushers`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushers>
async fn list_pushers(
    State(services): State<Arc<Services>>,
    req: Ruma<get_pushers::v3::Request>,
) -> RumaResult<get_pushers::v3::Response> {
    let pushers = services.push.list_pushers(&req.auth.user_id).await?;
    Ok(get_pushers::v3::Response::new(pushers).into())
}

/// `POST /_matrix/client/v3/pushers/set`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3pushersset>
async fn set_pusher_handler(
    State(services): State<Arc<Services>>,
    req: Ruma<set_pusher::v3::Request>,
) -> RumaResult<set_pusher::v3::Response> {
    let user = &req.auth.user_id;
    match &req.body.action {
        PusherAction::Post(PusherPostData { pusher, append, .. }) => {
            services.push.set_pusher(&services.gateway, user, pusher.clone(), *append).await?;
        }
        PusherAction::Delete(ids) => services.push.delete_pusher(user, ids).await?,
        _ => return Err(Error::invalid_param("Unsupported pusher action")),
    }
    Ok(set_pusher::v3::Response::new().into())
}

/// `GET /_matrix/client/v3/notifications`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3notifications>
async fn notifications(
    State(services): State<Arc<Services>>,
    req: Ruma<get_notifications::v3::Request>,
) -> RumaResult<get_notifications::v3::Response> {
    let body = &req.body;
    let user = &req.auth.user_id;
    let before = match &body.from {
        Some(from) => from.parse::<i64>().map_err(|_| Error::invalid_param("Invalid from token"))?,
        None => i64::MAX,
    };
    let limit = body
        .limit
        .map_or(DEFAULT_NOTIFICATIONS, |l| i64::try_from(u64::from(l)).unwrap_or(DEFAULT_NOTIFICATIONS))
        .clamp(1, 100);
    let only_highlight = body.only.as_deref() == Some("highlight");
    let rows = services.push.notifications(user, before, limit, only_highlight).await?;
    let next_token = (rows.len() == usize::try_from(limit).unwrap_or(usize::MAX))
        .then(|| rows.last().map(|(r, _)| r.stream_pos.to_string()))
        .flatten();
    let viewer = Viewer { user_id: user, device_id: Some(&req.auth.device_id) };
    let mut list = Vec::with_capacity(rows.len());
    for (row, read) in rows {
        let Ok(event_id) = ruma::OwnedEventId::try_from(row.event_id.as_str()) else { continue };
        let Some(pdu) = services.rooms.events.pdu(&event_id).await? else { continue };
        let event = services.rooms.read.client_event(viewer, &pdu).await?;
        let actions = serde_json::from_str(&row.actions)?;
        let ts = MilliSecondsSinceUnixEpoch(UInt::try_from(row.ts).unwrap_or_default());
        list.push(get_notifications::v3::Notification::new(actions, Raw::from_json(event), read, row.room_id, ts));
    }
    let mut response = get_notifications::v3::Response::new(list);
    response.next_token = next_token;
    Ok(response.into())
}
