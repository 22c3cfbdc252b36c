//! Inbound EDUs: each to the service it concerns, as if the remote user had acted here.
//!
//! An EDU speaks only for its origin's users (anything about another server's users is
//! ignored), and only about rooms the origin takes part in under the room's server ACL. A bad
//! EDU is logged and skipped; it never fails the transaction that carried it.

use ruma::{
    OwnedUserId, RoomId, ServerName,
    api::federation::transactions::edu::{
        DeviceListUpdateContent, DirectDeviceContent, Edu, PresenceContent, ReceiptContent, SigningKeyUpdateContent,
        TypingContent,
    },
    serde::Raw,
};

use super::{acl, own_users};
use crate::{error::Result, service::Services};

/// Hands one EDU to its service.
pub async fn receive(services: &Services, origin: &ServerName, raw: &Raw<Edu>) {
    let edu = match raw.deserialize() {
        Ok(edu) => edu,
        Err(e) => {
            tracing::info!(%origin, error = %e, "ignored an EDU that does not parse");
            return;
        }
    };
    let result = match edu {
        Edu::Typing(content) => typing(services, origin, content).await,
        Edu::Receipt(content) => receipts(services, origin, content).await,
        Edu::Presence(content) => presence(services, origin, content).await,
        Edu::DeviceListUpdate(content) => device_list(services, origin, content).await,
        Edu::SigningKeyUpdate(content) => signing_keys(services, origin, content).await,
        Edu::DirectToDevice(content) => to_device(services, origin, content).await,
        // EDU types this server does not know are ignored, as the spec asks.
        _ => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(%origin, error = %e, "could not apply an EDU");
    }
}

/// Whether `origin` may speak about `user` in `room`: its own user, joined, ACL permitting.
async fn may_act(services: &Services, origin: &ServerName, room_id: &RoomId, user_id: &OwnedUserId) -> Result<bool> {
    Ok(user_id.server_name() == origin
        && acl::allows(&services.rooms, room_id, origin).await?
        && services.rooms.members.is_joined(room_id, user_id).await?)
}

async fn typing(services: &Services, origin: &ServerName, content: TypingContent) -> Result<()> {
    if may_act(services, origin, &content.room_id, &content.user_id).await? {
        services.typing.set_remote(&content.room_id, &content.user_id, content.typing).await;
    }
    Ok(())
}

async fn receipts(services: &Services, origin: &ServerName, content: ReceiptContent) -> Result<()> {
    for (room_id, receipts) in &content.receipts {
        for (user_id, receipt) in &receipts.read {
            if !may_act(services, origin, room_id, user_id).await? {
                continue;
            }
            let ts = receipt.data.ts.map_or_else(crate::service::now_ms, |ts| i64::from(ts.get()));
            let thread = match &receipt.data.thread {
                ruma::events::receipt::ReceiptThread::Thread(id) => Some(id.as_str()),
                ruma::events::receipt::ReceiptThread::Main => Some("main"),
                _ => None,
            };
            // Several IDs mean the same thing as the last one: receipts only move forward.
            if let Some(event_id) = receipt.event_ids.last() {
                services.receipts.receive_remote(user_id, room_id, event_id, thread, ts).await?;
            }
        }
    }
    Ok(())
}

async fn presence(services: &Services, origin: &ServerName, content: PresenceContent) -> Result<()> {
    for update in &content.push {
        if own_users(origin, [&update.user_id]).is_empty() {
            continue;
        }
        // Presence of users who share no room with anyone here concerns nobody.
        if services.presence.sharing_rooms_with(&update.user_id).await?.len() <= 1 {
            continue;
        }
        services
            .presence
            .receive_remote(
                &update.user_id,
                &update.presence,
                update.status_msg.clone(),
                u64::from(update.last_active_ago),
                update.currently_active,
            )
            .await?;
    }
    Ok(())
}

async fn device_list(services: &Services, origin: &ServerName, content: DeviceListUpdateContent) -> Result<()> {
    // Only for the origin's own users, and only those who share a room with someone here
    // (others concern nobody, and would only fill the change log).
    if content.user_id.server_name() != origin
        || services.presence.sharing_rooms_with(&content.user_id).await?.len() <= 1
    {
        return Ok(());
    }
    // This server keeps no copy of other servers' device lists: it tells the local users who
    // share a room with the user that the list changed, and their clients ask again
    // (`/keys/query` reaches the user's server).
    services.keys.remote_devices_changed(&content.user_id).await
}

async fn signing_keys(services: &Services, origin: &ServerName, content: SigningKeyUpdateContent) -> Result<()> {
    if content.user_id.server_name() != origin
        || services.presence.sharing_rooms_with(&content.user_id).await?.len() <= 1
    {
        return Ok(());
    }
    services.keys.remote_devices_changed(&content.user_id).await
}

async fn to_device(services: &Services, origin: &ServerName, content: DirectDeviceContent) -> Result<()> {
    if content.sender.server_name() != origin {
        return Ok(());
    }
    let messages = content
        .messages
        .into_iter()
        .map(|(user, devices)| (user, devices.into_iter().map(|(device, raw)| (device, raw.into_json())).collect()))
        .collect();
    services
        .to_device
        .receive_remote(&content.sender, &content.ev_type.to_string(), content.message_id.as_str(), &messages)
        .await
}
