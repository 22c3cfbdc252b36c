//! Accounts and profiles.

use async_trait::async_trait;
use ruma::{OwnedUserId, UserId};
use serde_json::Value as JsonValue;

use super::{RowWrite, StorageResult, StreamPosition};

/// A stored account.
#[derive(Clone, Debug)]
pub struct User {
    pub user_id: OwnedUserId,
    /// An argon2 PHC string; `None` for accounts that cannot log in with a password.
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub deactivated: bool,
    pub created_at: i64,
}

#[derive(Clone, Debug)]
pub struct NewUser {
    pub user_id: OwnedUserId,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    /// Fields the profile starts with, e.g. `displayname` = the localpart.
    pub profile: Vec<(String, JsonValue)>,
    /// A registration token (its hash) to count this registration against, in the same
    /// transaction, so that a token can never be used more often than it allows.
    pub registration_token_hash: Option<Vec<u8>>,
    pub now_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateUserOutcome {
    Created,
    /// The user ID is taken, by a live or a deactivated account.
    UserIdTaken,
    /// The registration token was used up or expired in the meantime.
    TokenUnusable,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates the account with its initial profile, consuming the registration token if any.
    /// Anything but `Created` changes nothing.
    async fn create(&self, user: NewUser) -> StorageResult<CreateUserOutcome>;

    async fn get(&self, user_id: &UserId) -> StorageResult<Option<User>>;

    /// Replaces the password hash.
    async fn set_password_hash(&self, user_id: &UserId, hash: Option<&str>) -> StorageResult<RowWrite>;

    /// Marks the account deactivated and erases what it held: password, profile, devices,
    /// access tokens and all E2EE data, in one transaction, recording a device-list change at
    /// `pos`.
    async fn deactivate(&self, user_id: &UserId, pos: &StreamPosition) -> StorageResult<RowWrite>;

    /// The whole profile, or `None` when there is no such live account.
    async fn profile(&self, user_id: &UserId) -> StorageResult<Option<Vec<(String, JsonValue)>>>;

    /// Sets (`Some`) or removes (`None`) one profile field.
    async fn set_profile_field(&self, user_id: &UserId, field: &str, value: Option<&JsonValue>) -> StorageResult<()>;

    /// How many accounts exist, deactivated ones included.
    async fn count(&self) -> StorageResult<i64>;
}

/// The columns both backends select for a [`User`], in order.
pub(super) type UserRow = (String, Option<String>, bool, bool, i64);

pub(super) fn user_from_row(
    (user_id, password_hash, is_admin, deactivated, created_at): UserRow,
) -> anyhow::Result<User> {
    Ok(User { user_id: user_id.try_into()?, password_hash, is_admin, deactivated, created_at })
}

pub(super) fn profile_from_rows(rows: Vec<(String, String)>) -> anyhow::Result<Vec<(String, JsonValue)>> {
    rows.into_iter().map(|(field, value)| Ok((field, serde_json::from_str(&value)?))).collect()
}
