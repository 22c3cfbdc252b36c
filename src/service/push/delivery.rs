//! Delivering queued notifications to push gateways.
//!
//! One worker drains the queue, oldest first. A notification leaves the queue only once the
//! gateway accepted it; failures are retried with exponential backoff (up to a day), and the
//! queue lives in the database, so a restart loses nothing and resends nothing delivered.

use std::{sync::Arc, time::Duration};

use ruma::{
    OwnedEventId, OwnedUserId, UInt,
    api::{
        OutgoingRequestExt as _,
        push_gateway::send_event_notification::v1::{
            Device, Notification, NotificationCounts, NotificationPriority, Request,
        },
    },
    events::TimelineEventType,
    push::{Action, PushFormat, Tweak},
};
use serde_json::Value as JsonValue;
use tokio::sync::watch;

use super::{
    PushService,
    gateway::{GatewayClient, NOTIFY_PATH},
    pushers::http_data,
};
use crate::{
    error::{Error, Result},
    service::now_ms,
    storage::push::QueuedPush,
};

/// Notifications fetched per round.
const BATCH: i64 = 100;
/// Give up on a notification after this many failed attempts (about a day of backoff).
const MAX_ATTEMPTS: i32 = 17;

impl PushService {
    /// Runs until shutdown: delivers what is due, then sleeps until something is queued or the
    /// next retry is due.
    pub async fn run_delivery(self: Arc<Self>, gateway: GatewayClient, mut shutdown: watch::Receiver<bool>) {
        loop {
            let pause = match self.deliver_due(&gateway).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "push delivery round failed");
                    Some(Duration::from_secs(5))
                }
            };
            let sleep = async {
                match pause {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                () = self.queued.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Delivers every due notification. Returns how long until the next one is due.
    async fn deliver_due(&self, gateway: &GatewayClient) -> Result<Option<Duration>> {
        loop {
            let due = self.storage.push.due(now_ms(), BATCH).await?;
            if due.is_empty() {
                break;
            }
            for push in &due {
                self.deliver_one(gateway, push).await?;
            }
            if due.len() < usize::try_from(BATCH).unwrap_or(usize::MAX) {
                break;
            }
        }
        Ok(self
            .storage
            .push
            .next_due()
            .await?
            .map(|at| Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0).max(10))))
    }

    async fn deliver_one(&self, gateway: &GatewayClient, push: &QueuedPush) -> Result<()> {
        let Some(pusher) = self.storage.push.pusher(&push.user_id, &push.app_id, &push.pushkey).await? else {
            // The pusher went away since: nothing to deliver to.
            return Ok(self.storage.push.delete_queued(push.id).await?);
        };
        match self.send(gateway, push, &pusher).await {
            Ok(rejected) => {
                self.storage.push.delete_queued(push.id).await?;
                for pushkey in rejected {
                    self.reject_pushkey(&push.app_id, &pushkey).await?;
                }
            }
            Err(e) => {
                let attempts = push.attempts + 1;
                if attempts >= MAX_ATTEMPTS {
                    tracing::warn!(pushkey = %push.pushkey, error = %e, "giving up on a notification");
                    self.storage.push.delete_queued(push.id).await?;
                } else {
                    let backoff = 1000_i64 << attempts.min(16);
                    tracing::info!(pushkey = %push.pushkey, attempts, error = %e, "push failed; will retry");
                    self.storage.push.reschedule(push.id, attempts, now_ms() + backoff).await?;
                }
            }
        }
        Ok(())
    }

    /// POSTs the notification; returns the pushkeys the gateway rejected.
    async fn send(
        &self,
        gateway: &GatewayClient,
        push: &QueuedPush,
        pusher: &crate::storage::push::PusherRow,
    ) -> Result<Vec<String>> {
        let data = http_data(pusher)?;
        let url = gateway.check_url(&data.url)?;
        let base = url.as_str().strip_suffix(NOTIFY_PATH).unwrap_or(url.as_str()).to_owned();
        let notification = self.notification(push, pusher, &data).await?;
        let request = Request::new(notification)
            .try_into_http_request::<Vec<u8>>(&base, (), ())
            .map_err(|e| Error::internal(format!("building the push request: {e}")))?;
        let response = gateway
            .http
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(request.into_body())
            .send()
            .await
            .map_err(|e| Error::internal(format!("gateway unreachable: {e}")))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| Error::internal(format!("reading gateway response: {e}")))?;
        if !status.is_success() {
            return Err(Error::internal(format!("gateway answered {status}")));
        }
        // `{"rejected": [pushkey, ...]}`. The gateway accepted the notification (2xx); a body
        // that says nothing usable rejected nothing, but is worth a warning.
        let rejected = match serde_json::from_slice::<JsonValue>(&body) {
            Ok(answer) => answer.get("rejected").and_then(JsonValue::as_array).cloned().unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "push gateway answered with a body that is not JSON");
                Vec::new()
            }
        };
        Ok(rejected.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect())
    }

    /// The spec's notification body for one event and one device.
    async fn notification(
        &self,
        push: &QueuedPush,
        pusher: &crate::storage::push::PusherRow,
        data: &ruma::push::HttpPusherData,
    ) -> Result<Notification> {
        let actions: Vec<Action> = serde_json::from_str(&push.actions)?;
        let tweaks: Vec<Tweak> = actions
            .iter()
            .filter_map(|a| match a {
                Action::SetTweak(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        let mut device = Device::new(pusher.app_id.clone(), pusher.pushkey.clone());
        device.tweaks = tweaks;
        let mut device_data = data.data.clone();
        device_data.remove("url");
        device_data.remove("format");
        device.data = serde_json::from_value(JsonValue::Object(device_data))?;

        let mut notification = Notification::new(vec![device]);
        let unread = UInt::try_from(self.storage.push.total_unread(&push.user_id).await?).unwrap_or_default();
        notification.counts = NotificationCounts::new(unread, UInt::MIN);
        notification.event_id = OwnedEventId::try_from(push.event_id.as_str()).ok();
        notification.room_id = Some(push.room_id.clone());
        let sound = actions.iter().any(|a| matches!(a, Action::SetTweak(Tweak::Sound(_))));
        notification.prio =
            if push.highlight || sound { NotificationPriority::High } else { NotificationPriority::Low };
        if data.format == Some(PushFormat::EventIdOnly) {
            return Ok(notification);
        }
        let event = match &notification.event_id {
            Some(event_id) => self.rooms.events.pdu(event_id).await?,
            None => None,
        };
        if let Some(event) = event {
            notification.event_type = Some(event.event_type.clone());
            notification.sender = Some(event.sender.clone());
            notification.content = Some(event.content.clone());
            notification.user_is_target = event.event_type == TimelineEventType::RoomMember
                && event.state_key.as_deref() == Some(push.user_id.as_str());
            notification.sender_display_name = self.sender_name(&push.room_id, &event.sender).await?;
        }
        let name: Option<JsonValue> = self.rooms.state.state_content(&push.room_id, "m.room.name", "").await?;
        notification.room_name = name.and_then(|n| n["name"].as_str().map(str::to_owned));
        Ok(notification)
    }

    async fn sender_name(&self, room_id: &ruma::RoomId, sender: &OwnedUserId) -> Result<Option<String>> {
        let member: Option<JsonValue> =
            self.rooms.state.state_content(room_id, "m.room.member", sender.as_str()).await?;
        Ok(member.and_then(|m| m["displayname"].as_str().map(str::to_owned)))
    }
}
