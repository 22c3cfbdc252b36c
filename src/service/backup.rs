//! Server-side key backups (spec: "Server-side key backups"). Versions hold a client's
//! backup algorithm and public auth data; keys are opaque encrypted session data.
//!
//! Each version has an etag that changes whenever its keys change, and a count of keys, so
//! that clients can tell whether their view of the backup is current.

use std::collections::BTreeMap;

use ruma::{
    OwnedRoomId, UInt, UserId,
    api::{
        client::backup::{BackupAlgorithm, KeyBackupData, RoomKeyBackup},
        error::{ErrorKind, WrongRoomKeysVersionErrorData},
    },
    serde::Raw,
};
use serde_json::{Value as JsonValue, value::RawValue};

use crate::{
    error::{Error, Result},
    storage::{
        RowWrite, Storage,
        backup::{BackupKey, BackupVersion, KeyScope, PutKeysOutcome},
    },
};

pub struct BackupService {
    storage: Storage,
}

/// A version as the API shows it.
pub struct VersionInfo {
    pub version: String,
    pub algorithm: Raw<BackupAlgorithm>,
    pub etag: String,
    pub count: UInt,
}

impl BackupService {
    pub fn new(storage: Storage) -> Self {
        Self { storage }
    }

    pub async fn create_version(&self, user_id: &UserId, algorithm: &Raw<BackupAlgorithm>) -> Result<String> {
        let algorithm = checked_algorithm(algorithm)?;
        Ok(self.storage.backup.create_version(user_id, &algorithm).await?.to_string())
    }

    /// A version, or the current one for `None`.
    pub async fn version(&self, user_id: &UserId, version: Option<&str>) -> Result<VersionInfo> {
        let number = version.map(parse_version).transpose()?;
        let found = self.storage.backup.version(user_id, number).await?.ok_or_else(no_backup)?;
        info(found)
    }

    /// Replaces a version's auth data; its algorithm cannot change.
    pub async fn update_version(
        &self,
        user_id: &UserId,
        version: &str,
        algorithm: &Raw<BackupAlgorithm>,
    ) -> Result<()> {
        let number = parse_version(version)?;
        let current = self.storage.backup.version(user_id, Some(number)).await?.ok_or_else(no_backup)?;
        let new = checked_algorithm(algorithm)?;
        // The stored auth data was checked when stored: if it does not parse, that is an
        // internal error, not a match.
        let name =
            |json: &str| -> Result<JsonValue> { Ok(serde_json::from_str::<JsonValue>(json)?["algorithm"].clone()) };
        if name(&new)? != name(&current.algorithm)? {
            return Err(Error::invalid_param("A backup version's algorithm cannot change"));
        }
        // A `version` in the body, if any, must name the version being updated.
        let body: JsonValue = serde_json::from_str(algorithm.json().get())?;
        if let Some(v) = body.get("version")
            && v.as_str() != Some(version)
        {
            return Err(Error::invalid_param("The version in the body does not match the path"));
        }
        if self.storage.backup.update_version(user_id, number, &new).await? == RowWrite::NotFound {
            return Err(no_backup());
        }
        Ok(())
    }

    pub async fn delete_version(&self, user_id: &UserId, version: &str) -> Result<()> {
        if self.storage.backup.delete_version(user_id, parse_version(version)?).await? == RowWrite::NotFound {
            return Err(no_backup());
        }
        Ok(())
    }

    /// Stores keys in the current version. Returns the etag and count afterwards.
    pub async fn put_keys(
        &self,
        user_id: &UserId,
        version: &str,
        keys: Vec<(OwnedRoomId, String, &Raw<KeyBackupData>)>,
    ) -> Result<(String, UInt)> {
        let number = parse_version(version)?;
        let keys = keys
            .into_iter()
            .map(|(room_id, session_id, raw)| {
                let data: KeyBackupData = raw
                    .deserialize()
                    .map_err(|e| Error::bad_json(format!("Invalid key data for {session_id}: {e}")))?;
                Ok(BackupKey {
                    room_id,
                    session_id,
                    first_message_index: i64::from(data.first_message_index),
                    forwarded_count: i64::from(data.forwarded_count),
                    is_verified: data.is_verified,
                    json: raw.json().get().to_owned(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        match self.storage.backup.put_keys(user_id, number, &keys).await? {
            PutKeysOutcome::Stored { etag, count } => Ok((etag.to_string(), count_of(count))),
            PutKeysOutcome::NoSuchVersion => Err(no_backup()),
            PutKeysOutcome::NotCurrent { current } => Err(Error::matrix(
                ErrorKind::WrongRoomKeysVersion(WrongRoomKeysVersionErrorData::new(current.to_string())),
                "Keys can only be added to the current backup version",
            )),
        }
    }

    /// All keys of a version, by room.
    pub async fn all_keys(&self, user_id: &UserId, version: &str) -> Result<BTreeMap<OwnedRoomId, RoomKeyBackup>> {
        let mut rooms: BTreeMap<OwnedRoomId, BTreeMap<String, Raw<KeyBackupData>>> = BTreeMap::new();
        for key in self.keys(user_id, version, KeyScope::All).await? {
            rooms.entry(key.room_id).or_default().insert(key.session_id, raw(key.json)?);
        }
        Ok(rooms.into_iter().map(|(room, sessions)| (room, RoomKeyBackup::new(sessions))).collect())
    }

    pub async fn room_keys(
        &self,
        user_id: &UserId,
        version: &str,
        room_id: &ruma::RoomId,
    ) -> Result<BTreeMap<String, Raw<KeyBackupData>>> {
        self.keys(user_id, version, KeyScope::Room(room_id))
            .await?
            .into_iter()
            .map(|key| Ok((key.session_id, raw(key.json)?)))
            .collect()
    }

    pub async fn session_key(
        &self,
        user_id: &UserId,
        version: &str,
        room_id: &ruma::RoomId,
        session_id: &str,
    ) -> Result<Raw<KeyBackupData>> {
        let key = self.keys(user_id, version, KeyScope::Session(room_id, session_id)).await?.into_iter().next();
        raw(key.ok_or_else(|| Error::not_found("No key backed up for this session"))?.json)
    }

    async fn keys(&self, user_id: &UserId, version: &str, scope: KeyScope<'_>) -> Result<Vec<BackupKey>> {
        self.storage.backup.keys(user_id, parse_version(version)?, scope).await?.ok_or_else(no_backup)
    }

    /// Deletes keys; returns the etag and count afterwards.
    pub async fn delete_keys(&self, user_id: &UserId, version: &str, scope: KeyScope<'_>) -> Result<(String, UInt)> {
        let (etag, count) =
            self.storage.backup.delete_keys(user_id, parse_version(version)?, scope).await?.ok_or_else(no_backup)?;
        Ok((etag.to_string(), count_of(count)))
    }
}

fn info(version: BackupVersion) -> Result<VersionInfo> {
    Ok(VersionInfo {
        version: version.version.to_string(),
        algorithm: raw(version.algorithm)?,
        etag: version.etag.to_string(),
        count: count_of(version.count),
    })
}

/// Checks an uploaded algorithm and returns `{"algorithm", "auth_data"}` to store.
fn checked_algorithm(algorithm: &Raw<BackupAlgorithm>) -> Result<String> {
    algorithm.deserialize().map_err(|e| Error::bad_json(format!("Invalid backup algorithm: {e}")))?;
    // Kept as sent (not re-serialised from ruma's type), so that fields ruma does not know
    // survive in `auth_data`.
    let body: JsonValue = serde_json::from_str(algorithm.json().get())?;
    if !body["auth_data"].is_object() {
        return Err(Error::bad_json("auth_data must be an object"));
    }
    let stored = serde_json::json!({"algorithm": body["algorithm"], "auth_data": body["auth_data"]});
    Ok(stored.to_string())
}

/// Versions are the decimal numbers Parley hands out; anything else names no version.
fn parse_version(version: &str) -> Result<i64> {
    version.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(no_backup)
}

fn no_backup() -> Error {
    Error::not_found("Unknown backup version")
}

fn count_of(count: i64) -> UInt {
    UInt::try_from(count).unwrap_or(UInt::MAX)
}

fn raw<T>(json: String) -> Result<Raw<T>> {
    Ok(Raw::from_json(RawValue::from_string(json)?))
}
