//! Pushers: where a user's notifications go.

use ruma::{
    UserId,
    api::client::push::{Pusher, PusherIds, PusherInit, PusherKind},
    push::HttpPusherData,
};

use super::{PushService, gateway::GatewayClient};
use crate::{
    error::{Error, Result},
    service::now_ms,
    storage::{RowWrite, push::PusherRow},
};

impl PushService {
    /// `POST /pushers/set` with a pusher: creates or replaces it. Only `http` pushers are
    /// supported; their URL must be a gateway's notify endpoint this server may reach.
    pub async fn set_pusher(
        &self,
        gateway: &GatewayClient,
        user_id: &UserId,
        pusher: Pusher,
        append: bool,
    ) -> Result<()> {
        let PusherKind::Http(http) = &pusher.kind else {
            return Err(Error::invalid_param("Only http pushers are supported"));
        };
        gateway.check_url(&http.url)?;
        if pusher.ids.pushkey.len() > 512 || pusher.ids.app_id.len() > 64 {
            return Err(Error::invalid_param("pushkey or app_id too long"));
        }
        let data = serde_json::to_string(http)?;
        let row = PusherRow {
            user_id: user_id.to_owned(),
            app_id: pusher.ids.app_id.clone(),
            pushkey: pusher.ids.pushkey.clone(),
            kind: "http".to_owned(),
            app_display_name: pusher.app_display_name.clone(),
            device_display_name: pusher.device_display_name.clone(),
            profile_tag: pusher.profile_tag.clone(),
            lang: pusher.lang.clone(),
            data,
            created_at: now_ms(),
        };
        self.storage.push.set_pusher(&row, append).await?;
        self.forget_pushers();
        Ok(())
    }

    /// `POST /pushers/set` with `kind: null`: removes the pusher.
    pub async fn delete_pusher(&self, user_id: &UserId, ids: &PusherIds) -> Result<()> {
        match self.storage.push.delete_pusher(user_id, &ids.app_id, &ids.pushkey).await? {
            // Removing a pusher that is not there leaves what the client asked for: success.
            RowWrite::Written | RowWrite::NotFound => {}
        }
        self.forget_pushers();
        Ok(())
    }

    /// A gateway rejected this pushkey: every pusher with it goes.
    pub async fn reject_pushkey(&self, app_id: &str, pushkey: &str) -> Result<()> {
        let removed = self.storage.push.delete_pushkey(app_id, pushkey).await?;
        tracing::info!(app_id, removed, "pushkey rejected by its gateway");
        self.forget_pushers();
        Ok(())
    }

    /// `GET /pushers`.
    pub async fn list_pushers(&self, user_id: &UserId) -> Result<Vec<Pusher>> {
        self.pushers_of(user_id).await?.iter().map(to_ruma).collect()
    }
}

pub(super) fn http_data(row: &PusherRow) -> Result<HttpPusherData> {
    Ok(serde_json::from_str(&row.data)?)
}

fn to_ruma(row: &PusherRow) -> Result<Pusher> {
    Ok(PusherInit {
        ids: PusherIds::new(row.pushkey.clone(), row.app_id.clone()),
        kind: PusherKind::Http(http_data(row)?),
        app_display_name: row.app_display_name.clone(),
        device_display_name: row.device_display_name.clone(),
        profile_tag: row.profile_tag.clone(),
        lang: row.lang.clone(),
    }
    .into())
}
