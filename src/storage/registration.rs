//! Registration tokens and user-interactive authentication sessions.

use async_trait::async_trait;

use super::StorageResult;

#[derive(Clone, Debug)]
pub struct RegistrationToken {
    /// The first characters of the token, kept in clear so admins can tell tokens apart.
    pub prefix: String,
    pub uses_allowed: Option<i64>,
    pub completed: i64,
    pub expiry_ts: Option<i64>,
    pub created_at: i64,
}

impl RegistrationToken {
    pub fn is_usable(&self, now_ms: i64) -> bool {
        self.uses_allowed.is_none_or(|allowed| self.completed < allowed)
            && self.expiry_ts.is_none_or(|expiry| now_ms < expiry)
    }
}

/// One user-interactive authentication session.
#[derive(Clone, Debug)]
pub struct UiaaSession {
    pub session_id: String,
    /// Which endpoint (and, for authenticated ones, which user) the session belongs to;
    /// a session is only valid for the request that started it.
    pub scope: String,
    pub completed: Vec<String>,
    /// Registration token hash the session validated, consumed when registration completes.
    pub registration_token_hash: Option<Vec<u8>>,
    pub created_at: i64,
}

/// What [`RegistrationStore::consume_token`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum TokenUse {
    Consumed,
    /// Unknown, used up or expired; nothing changed.
    Unusable,
}

#[async_trait]
pub trait RegistrationStore: Send + Sync {
    async fn create_token(&self, hash: &[u8], token: RegistrationToken) -> StorageResult<()>;

    async fn get_token(&self, hash: &[u8]) -> StorageResult<Option<RegistrationToken>>;

    async fn list_tokens(&self) -> StorageResult<Vec<RegistrationToken>>;

    /// Deletes the tokens whose clear prefix is `prefix`. Returns how many went.
    async fn delete_tokens_by_prefix(&self, prefix: &str) -> StorageResult<u64>;

    /// Counts one completed registration against the token, if it is still usable at `now_ms`.
    async fn consume_token(&self, hash: &[u8], now_ms: i64) -> StorageResult<TokenUse>;

    async fn put_session(&self, session: &UiaaSession) -> StorageResult<()>;

    async fn get_session(&self, session_id: &str) -> StorageResult<Option<UiaaSession>>;

    async fn delete_session(&self, session_id: &str) -> StorageResult<()>;

    /// Deletes sessions created before `before_ms`.
    async fn prune_sessions(&self, before_ms: i64) -> StorageResult<u64>;
}

pub(super) type TokenRow = (String, Option<i64>, i64, Option<i64>, i64);

pub(super) fn token_from_row((prefix, uses_allowed, completed, expiry_ts, created_at): TokenRow) -> RegistrationToken {
    RegistrationToken { prefix, uses_allowed, completed, expiry_ts, created_at }
}

pub(super) type SessionRow = (String, String, String, Option<Vec<u8>>, i64);

pub(super) fn session_from_row(
    (session_id, scope, completed, registration_token_hash, created_at): SessionRow,
) -> anyhow::Result<UiaaSession> {
    Ok(UiaaSession {
        session_id,
        scope,
        completed: serde_json::from_str(&completed)?,
        registration_token_hash,
        created_at,
    })
}
