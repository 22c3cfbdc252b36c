//! User-interactive authentication (UIA).
//!
//! A session is bound to a scope (the endpoint, plus the user for authenticated endpoints),
//! so that stages completed for one request cannot authorise another. Sessions live in the
//! database, so they survive a restart and work across processes.

use std::sync::Arc;

use ruma::{
    UserId,
    api::{
        client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier},
        error::{ErrorKind, StandardErrorBody},
    },
};

use super::{accounts::AccountService, now_ms, secrets};
use crate::{
    error::{Error, Result},
    storage::{Storage, UiaaSession},
};

/// Sessions older than this are forgotten.
const SESSION_LIFETIME_MS: i64 = 60 * 60 * 1000;

pub struct UiaaService {
    storage: Storage,
    accounts: Arc<AccountService>,
}

/// What a completed UIA proved, beyond "the flow is complete".
#[derive(Debug, Default)]
pub struct Completed {
    /// The registration token that was presented, by hash.
    pub registration_token_hash: Option<Vec<u8>>,
}

/// The request being authorised.
pub struct UiaaRequest<'a> {
    /// Which endpoint, e.g. `register` or `delete_devices`.
    pub scope: &'a str,
    /// The user the request acts for; a password stage must prove this user.
    pub user_id: Option<&'a UserId>,
    pub flows: Vec<AuthFlow>,
    pub auth: Option<&'a AuthData>,
}

impl UiaaService {
    pub fn new(storage: Storage, accounts: Arc<AccountService>) -> Self {
        Self { storage, accounts }
    }

    /// Runs one round of UIA: returns once some flow is complete, or fails with the 401
    /// challenge (`Error::Uiaa`) that tells the client what is left.
    pub async fn authenticate(&self, request: UiaaRequest<'_>) -> Result<Completed> {
        let scope = match request.user_id {
            Some(user_id) => format!("{}|{user_id}", request.scope),
            None => request.scope.to_owned(),
        };
        let now = now_ms();
        let mut session = match request.auth.and_then(AuthData::session) {
            Some(id) => {
                let session = self.storage.registration.get_session(id).await?;
                match session {
                    Some(s) if s.scope == scope && now - s.created_at < SESSION_LIFETIME_MS => s,
                    _ => return Err(Error::bad_request("Unknown UIA session")),
                }
            }
            None => UiaaSession {
                session_id: secrets::random_base64(24),
                scope,
                completed: Vec::new(),
                registration_token_hash: None,
                created_at: now,
            },
        };

        let mut stage_error = None;
        if let Some(auth) = request.auth {
            match self.run_stage(auth, &request, &mut session).await {
                Ok(stage) => {
                    if !session.completed.contains(&stage) {
                        session.completed.push(stage);
                    }
                }
                Err(Error::Matrix { kind, message, .. }) => stage_error = Some(StandardErrorBody::new(kind, message)),
                Err(other) => return Err(other),
            }
        }

        let done = request
            .flows
            .iter()
            .any(|flow| flow.stages.iter().all(|stage| session.completed.iter().any(|c| c == stage.as_str())));
        if done {
            self.storage.registration.delete_session(&session.session_id).await?;
            return Ok(Completed { registration_token_hash: session.registration_token_hash });
        }

        self.storage.registration.put_session(&session).await?;
        if rand::random_range(0..100) == 0 {
            // Sweep now and then rather than on a timer, so nothing runs when nothing happens.
            self.storage.registration.prune_sessions(now - SESSION_LIFETIME_MS).await?;
        }
        let mut info = UiaaInfo::new(request.flows);
        info.completed = session.completed.iter().map(|s| AuthType::from(s.as_str())).collect();
        info.session = Some(session.session_id);
        info.auth_error = stage_error.map(Box::new);
        Err(Error::Uiaa(Box::new(info)))
    }

    /// Checks one stage. `Ok` names the stage completed.
    async fn run_stage(&self, auth: &AuthData, request: &UiaaRequest<'_>, session: &mut UiaaSession) -> Result<String> {
        let offered = |stage: AuthType| request.flows.iter().any(|f| f.stages.contains(&stage));
        match auth {
            AuthData::Dummy(_) if offered(AuthType::Dummy) => Ok(AuthType::Dummy.to_string()),
            AuthData::Password(password) if offered(AuthType::Password) => {
                let UserIdentifier::Matrix(id) = &password.identifier else {
                    return Err(Error::forbidden("Only the m.id.user identifier is supported"));
                };
                let claimed = self.accounts.resolve_login_name(&id.user)?;
                if let Some(expected) = request.user_id
                    && claimed != expected
                {
                    return Err(Error::forbidden("The password stage must authenticate the requesting user"));
                }
                self.accounts.check_password(&claimed, &password.password).await?;
                Ok(AuthType::Password.to_string())
            }
            AuthData::RegistrationToken(token) if offered(AuthType::RegistrationToken) => {
                let hash = secrets::sha256(&token.token);
                match self.storage.registration.get_token(&hash).await? {
                    Some(t) if t.is_usable(now_ms()) => {
                        session.registration_token_hash = Some(hash);
                        Ok(AuthType::RegistrationToken.to_string())
                    }
                    _ => Err(Error::auth_stage_failed(ErrorKind::Forbidden, "Invalid registration token")),
                }
            }
            _ => Err(Error::unsupported("Authentication stage not offered for this request")),
        }
    }
}
