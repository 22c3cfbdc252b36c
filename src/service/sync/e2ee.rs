//! The E2EE parts of a sync response: to-device messages, device-list changes, and the
//! device's one-time and fallback key state.

use ruma::{
    api::client::sync::sync_events::{DeviceLists, v3},
    serde::Raw,
};
use serde_json::value::RawValue;

use crate::{
    error::Result,
    service::{
        auth::AuthedUser,
        keys::{self, device_lists},
        latest::{Key, LatestIndex},
    },
    storage::Storage,
};

/// To-device messages per response. More wait for the next sync: the response then covers
/// positions only up to the last message it carries, so none is skipped.
const TO_DEVICE_LIMIT: i64 = 100;

/// Deletes the device's to-device messages at or before `since`: a sync with that token
/// proves the device received the response that carried them.
pub(super) async fn acknowledge(storage: &Storage, latest: &LatestIndex, user: &AuthedUser, since: i64) -> Result<()> {
    let sent = Key::ToDevice(user.user_id.clone(), user.device_id.clone());
    let acked = Key::ToDeviceAcked(user.user_id.clone(), user.device_id.clone());
    // Nothing was sent since the last acknowledgement: nothing to delete.
    if let (Some(sent), Some(acked)) = (latest.get(&sent), latest.get(&acked))
        && sent <= acked
    {
        return Ok(());
    }
    storage.to_device.delete_up_to(&user.user_id, &user.device_id, since).await?;
    latest.note(acked, since);
    Ok(())
}

/// The device's to-device messages in `(since, upto]`, and the position the response may
/// cover: `upto`, or less when there were more messages than fit.
pub(super) async fn to_device(
    storage: &Storage,
    latest: &LatestIndex,
    user: &AuthedUser,
    since: Option<i64>,
    upto: i64,
) -> Result<(v3::ToDevice, i64)> {
    let key = Key::ToDevice(user.user_id.clone(), user.device_id.clone());
    if let Some(since) = since
        && !latest.may_have_changed(&key, since)
    {
        return Ok((v3::ToDevice::new(), upto));
    }
    let mut messages = storage
        .to_device
        .pending(&user.user_id, &user.device_id, since.unwrap_or(0), upto, TO_DEVICE_LIMIT + 1)
        .await?;
    if let Some(since) = since {
        latest.learned(key, since, messages.iter().map(|m| m.stream_pos).max());
    }
    let mut upto = upto;
    if messages.len() > usize::try_from(TO_DEVICE_LIMIT).unwrap_or(usize::MAX)
        && let Some(first_left_out) = messages.get(usize::try_from(TO_DEVICE_LIMIT).unwrap_or(0)).map(|m| m.stream_pos)
    {
        // Messages of one send share a position; cut before it, so that all of them arrive
        // together in the next response.
        messages.retain(|m| m.stream_pos < first_left_out);
        upto = first_left_out - 1;
    }
    let mut to_device = v3::ToDevice::new();
    for message in messages {
        let json = format!(
            r#"{{"sender":{},"type":{},"content":{}}}"#,
            serde_json::to_string(message.sender.as_str())?,
            serde_json::to_string(&message.event_type)?,
            message.content
        );
        to_device.events.push(Raw::from_json(RawValue::from_string(json)?));
    }
    Ok((to_device, upto))
}

/// Fills `device_lists` (incremental syncs only), `device_one_time_keys_count` and
/// `device_unused_fallback_key_types`.
pub(super) async fn fill(
    storage: &Storage,
    latest: &LatestIndex,
    user: &AuthedUser,
    since: Option<i64>,
    upto: i64,
    response: &mut v3::Response,
) -> Result<()> {
    // Device lists change with key uploads and with memberships; when neither happened
    // since the token, there is nothing to compute.
    if let Some(since) = since
        && latest.may_have_changed(&Key::DeviceLists, since)
    {
        let (changed, left) = device_lists::changes(storage, &user.user_id, since, upto).await?;
        let mut lists = DeviceLists::new();
        lists.changed = changed;
        lists.left = left;
        response.device_lists = lists;
    }
    response.device_one_time_keys_count = keys::one_time_key_counts(storage, user).await?;
    let fallback = storage.keys.unused_fallback_algorithms(&user.user_id, &user.device_id).await?;
    response.device_unused_fallback_key_types = Some(fallback.iter().map(|a| a.as_str().into()).collect());
    Ok(())
}
