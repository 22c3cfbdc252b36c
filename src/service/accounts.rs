//! Accounts: creation, passwords, deactivation and profiles.

use std::sync::Arc;

use ruma::{OwnedUserId, UserId, api::error::ErrorKind};
use serde_json::Value as JsonValue;

use super::{keys::DeviceLists, now_ms, password, rooms::Rooms, secrets};
use crate::{
    config::Config,
    error::{Error, Result},
    storage::{CreateUserOutcome, NewUser, RowWrite, Storage, User},
};

/// Largest profile, in bytes of JSON, as the spec's extended-profiles section suggests.
const MAX_PROFILE_BYTES: usize = 64 * 1024;

pub struct AccountService {
    config: Arc<Config>,
    storage: Storage,
    rooms: Arc<Rooms>,
    passwords: password::Passwords,
    device_lists: Arc<DeviceLists>,
}

/// What creating an account needs.
pub struct NewAccount<'a> {
    /// `None` picks a random localpart.
    pub localpart: Option<&'a str>,
    pub password: Option<&'a str>,
    pub is_admin: bool,
    /// A registration token (its hash) that authorised this registration.
    pub registration_token_hash: Option<Vec<u8>>,
}

impl AccountService {
    pub fn new(config: Arc<Config>, storage: Storage, rooms: Arc<Rooms>, device_lists: Arc<DeviceLists>) -> Self {
        Self { config, storage, rooms, device_lists, passwords: password::Passwords::default() }
    }

    /// Validates a requested localpart and makes the user ID, without checking it is free.
    pub fn user_id_for(&self, localpart: &str) -> Result<OwnedUserId> {
        let invalid = || {
            Error::matrix(
                ErrorKind::InvalidUsername,
                "User ID may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+', and must not be empty",
            )
        };
        if localpart.is_empty() || localpart.starts_with('@') || localpart.contains(':') {
            return Err(invalid());
        }
        let user_id = UserId::parse_with_server_name(localpart, &self.config.server_name).map_err(|_| invalid())?;
        user_id.validate_strict().map_err(|_| invalid())?;
        Ok(user_id)
    }

    /// Whether the localpart is valid and free; the errors are those `/register` would give.
    pub async fn check_available(&self, localpart: &str) -> Result<OwnedUserId> {
        let user_id = self.user_id_for(localpart)?;
        if self.storage.users.get(&user_id).await?.is_some() {
            return Err(user_in_use());
        }
        Ok(user_id)
    }

    pub async fn create(&self, account: NewAccount<'_>) -> Result<OwnedUserId> {
        let user_id = match account.localpart {
            Some(localpart) => self.user_id_for(localpart)?,
            None => UserId::new(&self.config.server_name),
        };
        let password_hash = match account.password {
            Some(password) => Some(self.passwords.hash(password).await?),
            None => None,
        };
        let outcome = self
            .storage
            .users
            .create(NewUser {
                user_id: user_id.clone(),
                password_hash,
                is_admin: account.is_admin,
                profile: vec![("displayname".to_owned(), JsonValue::from(user_id.localpart()))],
                registration_token_hash: account.registration_token_hash,
                now_ms: now_ms(),
            })
            .await?;
        match outcome {
            CreateUserOutcome::Created => Ok(user_id),
            CreateUserOutcome::UserIdTaken => Err(user_in_use()),
            CreateUserOutcome::TokenUnusable => {
                Err(Error::auth_stage_failed(ErrorKind::Unauthorized, "The registration token is no longer valid"))
            }
        }
    }

    /// Resolves what a user typed at login (a localpart or a full user ID) to a local user.
    /// Matching is case-insensitive on the localpart, as users expect.
    pub fn resolve_login_name(&self, name: &str) -> Result<OwnedUserId> {
        let forbidden = || Error::forbidden("Invalid username or password");
        let user_id =
            UserId::parse_with_server_name(name.to_lowercase(), &self.config.server_name).map_err(|_| forbidden())?;
        if user_id.server_name() != self.config.server_name {
            return Err(forbidden());
        }
        Ok(user_id)
    }

    /// Checks a password. Every failure is the same 403, so that it does not reveal which
    /// accounts exist; a deactivated account says so, as the spec asks.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<User> {
        let forbidden = || Error::forbidden("Invalid username or password");
        let user = self.storage.users.get(user_id).await?.ok_or_else(forbidden)?;
        if user.deactivated {
            return Err(Error::matrix(ErrorKind::UserDeactivated, "This account has been deactivated"));
        }
        let hash = user.password_hash.as_deref().ok_or_else(forbidden)?;
        if self.passwords.verify(password, hash).await? { Ok(user) } else { Err(forbidden()) }
    }

    pub async fn get(&self, user_id: &UserId) -> Result<Option<User>> {
        Ok(self.storage.users.get(user_id).await?)
    }

    pub async fn set_password(&self, user_id: &UserId, new_password: &str) -> Result<()> {
        let hash = self.passwords.hash(new_password).await?;
        if self.storage.users.set_password_hash(user_id, Some(&hash)).await? == RowWrite::NotFound {
            return Err(Error::not_found("No such user"));
        }
        Ok(())
    }

    /// Deactivates the account for good: it leaves its rooms, can no longer log in, its
    /// devices, tokens and keys go, and its profile is erased. The user ID is never handed out again.
    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        if self.storage.users.get(user_id).await?.is_none() {
            return Err(Error::not_found("No such user"));
        }
        self.rooms.timeline.leave_all(user_id).await?;
        let pos = self.device_lists.position_for(&[user_id]).await?;
        if self.storage.users.deactivate(user_id, &pos).await? == RowWrite::NotFound {
            return Err(Error::not_found("No such user"));
        }
        Ok(())
    }

    pub async fn profile(&self, user_id: &UserId) -> Result<Vec<(String, JsonValue)>> {
        self.storage.users.profile(user_id).await?.ok_or_else(|| Error::not_found("Profile not found"))
    }

    /// The profile to copy into a member event: the user's, or none for a user without one
    /// (remote, unknown or deactivated). A failing look-up is an error, not an empty profile.
    pub async fn member_profile(&self, user_id: &UserId) -> Result<Vec<(String, JsonValue)>> {
        Ok(self.storage.users.profile(user_id).await?.unwrap_or_default())
    }

    /// Sets or removes one profile field of a local user, keeping the whole profile under the
    /// spec's size limit.
    pub async fn set_profile_field(&self, user_id: &UserId, field: &str, value: Option<JsonValue>) -> Result<()> {
        if field.is_empty() || field.len() > 255 {
            return Err(Error::bad_json("Profile field names must be 1 to 255 bytes"));
        }
        let mut profile = self.profile(user_id).await?;
        profile.retain(|(name, _)| name != field);
        if let Some(value) = &value {
            profile.push((field.to_owned(), value.clone()));
        }
        let size: usize = profile.iter().map(|(name, value)| name.len() + value.to_string().len() + 4).sum();
        if size > MAX_PROFILE_BYTES {
            return Err(Error::matrix(ErrorKind::ProfileTooLarge, "Profile would exceed 64 KiB"));
        }
        self.storage.users.set_profile_field(user_id, field, value.as_ref()).await?;
        if field == "displayname" || field == "avatar_url" {
            // Clients render names from member events, so every joined room gets a new one.
            self.rooms.timeline.propagate_profile(user_id, &profile).await?;
        }
        Ok(())
    }

    /// Whether `token` is a registration token that can still be used.
    pub async fn registration_token_is_valid(&self, token: &str) -> Result<bool> {
        let token = self.storage.registration.get_token(&secrets::sha256(token)).await?;
        Ok(token.is_some_and(|t| t.is_usable(now_ms())))
    }

    /// A random password for an account whose password an admin resets without giving one.
    pub fn random_password() -> String {
        secrets::random_base64(18)
    }
}

fn user_in_use() -> Error {
    Error::matrix(ErrorKind::UserInUse, "User ID already taken")
}
