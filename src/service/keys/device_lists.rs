//! Device-list tracking: which users learn that someone's keys changed.
//!
//! A change (device keys uploaded or changed, cross-signing keys or signatures uploaded, a
//! device deleted) is a row `(user, position)` written in the same transaction as the change
//! itself. Readers compute, for their positions `(since, upto]`, the users whose changes they
//! may see: those who share a joined room with them. The spec narrows this to encrypted rooms;
//! Parley uses any joined room, because a room can become encrypted at any time (and clients
//! then need keys they have been tracking all along), and because device keys are public to
//! any user through `/keys/query` anyway, so telling a room-mate of a change reveals nothing
//! they could not ask for. Users who share no room with a user never hear of their changes.

use std::sync::Arc;

use ruma::{OwnedDeviceId, OwnedUserId, UserId};

use crate::{
    error::Result,
    service::{latest::Key, notifier::Notifier},
    storage::{Storage, StreamAllocator, StreamPosition},
};

/// Hands out positions for device-list changes, set to wake the right syncs.
pub struct DeviceLists {
    storage: Storage,
    stream: Arc<StreamAllocator>,
    notifier: Arc<Notifier>,
}

impl DeviceLists {
    pub fn new(storage: Storage, stream: Arc<StreamAllocator>, notifier: Arc<Notifier>) -> Self {
        Self { storage, stream, notifier }
    }

    /// A position for a change to the device lists of `users`. Once the write at it is
    /// visible, the syncs of everyone sharing a room with any of them (and their own) wake.
    /// Dropping the position unused (nothing changed, or the write failed) only costs a
    /// spurious wake-up.
    pub async fn position_for(&self, users: &[&UserId]) -> Result<StreamPosition> {
        let mut targets: Vec<OwnedUserId> = Vec::new();
        for user_id in users {
            targets.extend(self.storage.keys.users_sharing_room(user_id).await?);
            targets.push((*user_id).to_owned());
        }
        targets.sort();
        targets.dedup();
        let mut pos = self.stream.allocate();
        self.notifier.latest().note(Key::DeviceLists, pos.get());
        let notifier = Arc::clone(&self.notifier);
        pos.on_visible(move || notifier.notify_users(targets.iter().map(|u| &**u)));
        Ok(pos)
    }

    /// The devices are gone: their entries in the latest-position index go too.
    pub fn forget_devices(&self, user_id: &UserId, device_ids: &[OwnedDeviceId]) {
        for device_id in device_ids {
            self.notifier.latest().forget_device(user_id, device_id);
        }
    }
}

/// Users whose keys `user_id` should fetch again, and users who no longer share a room with
/// them, for positions `(since, upto]`. A user who left one room but still shares another is
/// not `left`; the storage query excludes them.
pub async fn changes(
    storage: &Storage,
    user_id: &UserId,
    since: i64,
    upto: i64,
) -> Result<(Vec<OwnedUserId>, Vec<OwnedUserId>)> {
    if since >= upto {
        return Ok((Vec::new(), Vec::new()));
    }
    let changed = storage.keys.device_list_changed(user_id, since, upto).await?;
    let left = storage.keys.device_list_left(user_id, since, upto).await?;
    Ok((changed, left))
}
