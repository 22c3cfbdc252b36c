//! Evaluating push rules for an event, for each recipient, with ruma's evaluator.

use ruma::{
    OwnedUserId, UInt,
    events::{AnySyncTimelineEvent, TimelineEventType},
    push::{Action, PushConditionPowerLevelsCtx, PushConditionRoomCtx},
    serde::Raw,
};
use serde_json::Value as JsonValue;

use super::PushService;
use crate::{
    error::Result,
    service::{
        account_data::AccountDataService,
        rooms::{ClientExtras, Pdu, PushOutcome, RoomHead},
    },
    storage::push::{NewQueuedPush, PushActionRow},
};

impl PushService {
    /// What the push rules say about `pdu` to each member who did not send it (and to an
    /// invitee, for an invite), and the notifications to queue for their pushers.
    pub(crate) async fn evaluate_event(
        &self,
        account_data: &AccountDataService,
        head: &RoomHead,
        pdu: &Pdu,
    ) -> Result<PushOutcome> {
        let mut recipients: Vec<OwnedUserId> =
            self.storage.state.room_members(&head.room_id, &["join"]).await?.into_iter().map(|m| m.user_id).collect();
        let member_count = UInt::try_from(recipients.len()).unwrap_or_default();
        if pdu.event_type == TimelineEventType::RoomMember
            && pdu.membership().as_deref() == Some("invite")
            && let Some(invitee) = pdu.state_key.as_deref().and_then(|k| OwnedUserId::try_from(k).ok())
        {
            recipients.push(invitee);
        }
        recipients.retain(|user| *user != pdu.sender && user.server_name() == self.config.server_name);
        if recipients.is_empty() {
            return Ok(PushOutcome::default());
        }

        let mut event = pdu.to_client(ClientExtras::now());
        if let JsonValue::Object(object) = &mut event {
            object.remove("unsigned");
        }
        let raw: Raw<AnySyncTimelineEvent> = Raw::from_json(serde_json::value::to_raw_value(&event)?);
        let power_levels: PushConditionPowerLevelsCtx = self.rooms.state.power_levels(&head.room_id).await?.into();
        let thread_id = thread_of(&event);

        let mut outcome = PushOutcome::default();
        for user_id in recipients {
            // One member's unreadable rules (a bug, logged) must not stop the room: that member
            // is evaluated with the server's defaults until it is fixed.
            let ruleset = match self.ruleset(account_data, &user_id).await {
                Ok(ruleset) => ruleset,
                Err(e) => {
                    tracing::error!(%user_id, error = %e, "push rules unreadable; using the server defaults");
                    std::sync::Arc::new(ruma::push::Ruleset::server_default(&user_id))
                }
            };
            let display_name = self.display_name(head, &user_id).await?;
            let mut context =
                PushConditionRoomCtx::new(head.room_id.clone(), member_count, user_id.clone(), display_name);
            context.power_levels = Some(power_levels.clone());
            let actions = ruleset.get_actions(&raw, &context).await;
            if !actions.iter().any(Action::should_notify) {
                continue;
            }
            let highlight = actions.iter().any(Action::is_highlight);
            let actions_json = serde_json::to_string(actions)?;
            for pusher in self.pushers_of(&user_id).await?.iter() {
                outcome.queue.push(NewQueuedPush {
                    user_id: user_id.clone(),
                    app_id: pusher.app_id.clone(),
                    pushkey: pusher.pushkey.clone(),
                    highlight,
                    actions: actions_json.clone(),
                });
            }
            outcome.actions.push(PushActionRow {
                user_id,
                thread_id: thread_id.clone(),
                highlight,
                actions: actions_json,
            });
        }
        Ok(outcome)
    }

    /// The name a user goes by in the room: their member event's displayname, or their ID.
    async fn display_name(&self, head: &RoomHead, user_id: &OwnedUserId) -> Result<String> {
        let name = match head.state_event("m.room.member", user_id.as_str()) {
            Some(id) => self
                .rooms
                .events
                .pdu(id)
                .await?
                .and_then(|pdu| pdu.content_as::<JsonValue>())
                .and_then(|c| c.get("displayname").and_then(JsonValue::as_str).map(str::to_owned)),
            None => None,
        };
        Ok(name.unwrap_or_else(|| user_id.localpart().to_owned()))
    }
}

/// The thread an event belongs to (`""` for the main timeline).
fn thread_of(event: &JsonValue) -> String {
    let relates = &event["content"]["m.relates_to"];
    if relates["rel_type"] == "m.thread" {
        relates["event_id"].as_str().unwrap_or_default().to_owned()
    } else {
        String::new()
    }
}
