//! End-to-end encryption keys: device keys, one-time and fallback keys, cross-signing keys,
//! the signatures uploaded on them, and the device-list changes that tell other users to
//! fetch a user's keys again.
//!
//! Key objects are stored as the client uploaded them; the server relays them and checks
//! signatures, never decrypts. Device-list changes are rows `(user, stream position)`, so
//! `/sync` and `/keys/changes` can ask "whose keys changed in `(since, upto]`" like any other
//! stream. Who may learn of a change is decided in SQL from the `memberships` table: users who
//! share a joined room (see the `device_list_*` methods).

use async_trait::async_trait;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};

use super::{StorageResult, StreamPosition};

/// One one-time or fallback key to store.
#[derive(Clone, Debug)]
pub struct NewKey<'a> {
    pub algorithm: &'a str,
    /// `<algorithm>:<name>`.
    pub key_id: &'a str,
    pub json: &'a str,
}

/// What one `/keys/upload` stores.
#[derive(Clone, Debug, Default)]
pub struct KeyUpload<'a> {
    pub device_keys: Option<&'a str>,
    pub one_time_keys: Vec<NewKey<'a>>,
    pub fallback_keys: Vec<NewKey<'a>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadOutcome {
    Stored {
        /// The device keys differ from those stored before, and a change was recorded.
        device_keys_changed: bool,
    },
    /// A one-time key ID is already stored with different content; nothing was written.
    OneTimeKeyConflict(String),
    /// The device does not exist (any more); nothing was written.
    NoDevice,
}

/// A device's identity keys as stored, with the device's display name.
#[derive(Clone, Debug)]
pub struct DeviceKeysRow {
    pub device_id: OwnedDeviceId,
    pub json: String,
    pub display_name: Option<String>,
}

/// A claimed one-time or fallback key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedKey {
    pub key_id: String,
    pub json: String,
}

/// A cross-signing key: `key_type` is `master`, `self_signing` or `user_signing`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrossSigningKeyRow {
    pub key_type: String,
    pub key_id: String,
    pub json: String,
}

/// What the stored master key must be for a cross-signing upload to go ahead.
#[derive(Clone, Copy, Debug)]
pub enum MasterKeyCheck<'a> {
    /// The upload was authorised (UIA): replace whatever is there.
    Any,
    /// Unauthorised uploads are allowed only against the state they were checked against; a
    /// concurrent upload in between must not be overwritten without UIA.
    Is(Option<&'a str>),
}

/// A signature uploaded on someone's key after the key itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySignature {
    pub target_user_id: OwnedUserId,
    /// A device ID, or a master key's public key.
    pub target_key_id: String,
    pub signer_user_id: OwnedUserId,
    /// `ed25519:<device ID or public key>`.
    pub signer_key_id: String,
    pub signature: String,
}

/// What [`KeyStore::put_cross_signing_keys`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum CrossSigningWrite {
    Stored,
    /// The master key was not what the caller decided against; nothing was written.
    MasterKeyChanged,
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores one upload in one transaction: the device keys (recording a device-list change
    /// at `pos` when they differ from the stored ones), new one-time keys (a key ID already
    /// stored with the same content is skipped, so retries are harmless), and the device's
    /// fallback key per algorithm (re-uploading the same key keeps its `used` flag).
    async fn upload(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        upload: &KeyUpload<'_>,
        pos: &StreamPosition,
    ) -> StorageResult<UploadOutcome>;

    /// Unclaimed one-time keys per algorithm.
    async fn one_time_key_counts(&self, user_id: &UserId, device_id: &DeviceId) -> StorageResult<Vec<(String, i64)>>;

    /// Algorithms of the device's fallback keys that have not been claimed.
    async fn unused_fallback_algorithms(&self, user_id: &UserId, device_id: &DeviceId) -> StorageResult<Vec<String>>;

    /// The identity keys of the user's existing devices.
    async fn device_keys(&self, user_id: &UserId) -> StorageResult<Vec<DeviceKeysRow>>;

    /// Claims one one-time key of `algorithm`, atomically: concurrent claims never get the
    /// same key. Falls back to the fallback key (marked used, kept) when none is left.
    async fn claim(&self, user_id: &UserId, device_id: &DeviceId, algorithm: &str)
    -> StorageResult<Option<ClaimedKey>>;

    async fn cross_signing_keys(&self, user_id: &UserId) -> StorageResult<Vec<CrossSigningKeyRow>>;

    /// Stores cross-signing keys (replacing those of the same types) and records a
    /// device-list change at `pos`, unless `check` fails.
    async fn put_cross_signing_keys(
        &self,
        user_id: &UserId,
        keys: &[CrossSigningKeyRow],
        check: MasterKeyCheck<'_>,
        pos: &StreamPosition,
    ) -> StorageResult<CrossSigningWrite>;

    /// Signatures uploaded on the user's keys.
    async fn signatures(&self, target_user_id: &UserId) -> StorageResult<Vec<KeySignature>>;

    /// Stores signatures and records a device-list change at `pos` for each of `changed`.
    async fn add_signatures(
        &self,
        signatures: &[KeySignature],
        changed: &[OwnedUserId],
        pos: &StreamPosition,
    ) -> StorageResult<()>;

    /// Users `user_id` should re-fetch keys of, for positions `(after, up_to]`: those whose
    /// device list changed there and who share a joined room with them (themselves included),
    /// and those who began sharing a joined room with them there.
    async fn device_list_changed(&self, user_id: &UserId, after: i64, up_to: i64) -> StorageResult<Vec<OwnedUserId>>;

    /// Users who stopped sharing any joined room with `user_id` in `(after, up_to]`.
    async fn device_list_left(&self, user_id: &UserId, after: i64, up_to: i64) -> StorageResult<Vec<OwnedUserId>>;

    /// Everyone who shares a joined room with the user, the user included: whose syncs a
    /// change to the user's device list wakes.
    async fn users_sharing_room(&self, user_id: &UserId) -> StorageResult<Vec<OwnedUserId>>;

    /// The highest position used, for seeding the stream allocator.
    async fn max_stream_pos(&self) -> StorageResult<i64>;

    /// Records that another server's user's device list changed (learnt over federation).
    async fn record_device_list_change(&self, user_id: &UserId, pos: &StreamPosition) -> StorageResult<()>;
}

/// Deleting one device (`$1` user, `$2` device) deletes its E2EE data too. The same SQL on
/// both backends; run inside the transaction that deletes the device.
pub(super) const PURGE_DEVICE: [&str; 5] = [
    "DELETE FROM device_keys WHERE user_id = $1 AND device_id = $2",
    "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2",
    "DELETE FROM fallback_keys WHERE user_id = $1 AND device_id = $2",
    "DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key_id = $2",
    "DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2",
];

/// As [`PURGE_DEVICE`], for every device of `$1` except `$2`.
pub(super) const PURGE_DEVICES_EXCEPT: [&str; 5] = [
    "DELETE FROM device_keys WHERE user_id = $1 AND device_id <> $2",
    "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id <> $2",
    "DELETE FROM fallback_keys WHERE user_id = $1 AND device_id <> $2",
    "DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key_id <> $2 \
     AND target_key_id IN (SELECT device_id FROM devices WHERE user_id = $1)",
    "DELETE FROM to_device_messages WHERE user_id = $1 AND device_id <> $2",
];

/// A deactivated account (`$1`) loses all its E2EE data, backups included. (Its to-device
/// transaction IDs stay: they hold stream positions, see the migration.)
pub(super) const PURGE_USER: [&str; 8] = [
    "DELETE FROM device_keys WHERE user_id = $1",
    "DELETE FROM one_time_keys WHERE user_id = $1",
    "DELETE FROM fallback_keys WHERE user_id = $1",
    "DELETE FROM cross_signing_keys WHERE user_id = $1",
    "DELETE FROM key_signatures WHERE target_user_id = $1",
    "DELETE FROM to_device_messages WHERE user_id = $1",
    "DELETE FROM backup_keys WHERE user_id = $1",
    "DELETE FROM backup_versions WHERE user_id = $1",
];

/// Records that `$1`'s device list changed at position `$2`.
pub(super) const RECORD_CHANGE: &str =
    "INSERT INTO device_list_changes (user_id, stream_pos) VALUES ($1, $2) ON CONFLICT DO NOTHING";

/// `$1`'s fellow members of joined rooms, `$1` included.
pub(super) const SHARING_SQL: &str = "SELECT DISTINCT b.user_id FROM memberships a \
     JOIN memberships b ON b.room_id = a.room_id \
     WHERE a.user_id = $1 AND a.membership = 'join' AND b.membership = 'join'";

/// See [`KeyStore::device_list_changed`]. A member event that is not a join (a profile
/// change) also counts as "began sharing"; that over-reports, which costs the client one
/// `/keys/query` and is never wrong.
pub(super) const CHANGED_SQL: &str = "SELECT c.user_id FROM device_list_changes c \
     WHERE c.stream_pos > $2 AND c.stream_pos <= $3 AND (c.user_id = $1 OR EXISTS ( \
       SELECT 1 FROM memberships a JOIN memberships b ON b.room_id = a.room_id \
       WHERE a.user_id = $1 AND a.membership = 'join' AND b.user_id = c.user_id AND b.membership = 'join')) \
     UNION \
     SELECT b.user_id FROM memberships a JOIN memberships b ON b.room_id = a.room_id \
     WHERE a.user_id = $1 AND a.membership = 'join' AND b.membership = 'join' AND b.user_id <> $1 \
       AND a.stream_pos <= $3 AND b.stream_pos <= $3 AND (a.stream_pos > $2 OR b.stream_pos > $2)";

/// See [`KeyStore::device_list_left`]: someone left a room `$1` is in, or `$1` left a room,
/// in `(after, up_to]`, and they share no joined room any more.
pub(super) const LEFT_SQL: &str = "SELECT DISTINCT b.user_id FROM memberships a \
     JOIN memberships b ON b.room_id = a.room_id \
     WHERE a.user_id = $1 AND b.user_id <> $1 AND ( \
       (a.membership = 'join' AND b.membership IN ('leave', 'ban') AND b.stream_pos > $2 AND b.stream_pos <= $3) \
       OR (a.membership IN ('leave', 'ban') AND a.stream_pos > $2 AND a.stream_pos <= $3 \
           AND b.membership IN ('join', 'leave', 'ban'))) \
     AND NOT EXISTS ( \
       SELECT 1 FROM memberships x JOIN memberships y ON y.room_id = x.room_id \
       WHERE x.user_id = $1 AND x.membership = 'join' AND y.user_id = b.user_id AND y.membership = 'join')";

pub(super) fn user_ids(rows: Vec<String>) -> anyhow::Result<Vec<OwnedUserId>> {
    let mut ids: Vec<OwnedUserId> = rows.into_iter().map(OwnedUserId::try_from).collect::<Result<_, _>>()?;
    ids.sort();
    ids.dedup();
    Ok(ids)
}

pub(super) type DeviceKeysSqlRow = (String, String, Option<String>);

pub(super) fn device_keys_from_row((device_id, json, display_name): DeviceKeysSqlRow) -> DeviceKeysRow {
    DeviceKeysRow { device_id: device_id.into(), json, display_name }
}

pub(super) type SignatureRow = (String, String, String, String, String);

pub(super) fn signature_from_row(
    (target_user_id, target_key_id, signer_user_id, signer_key_id, signature): SignatureRow,
) -> anyhow::Result<KeySignature> {
    Ok(KeySignature {
        target_user_id: target_user_id.try_into()?,
        target_key_id,
        signer_user_id: signer_user_id.try_into()?,
        signer_key_id,
        signature,
    })
}
