//! Password hashing with argon2id.
//!
//! Hashing is deliberately slow and takes 19 MiB of memory per hash, so it runs on the
//! blocking pool (never stalling the async workers), and at most one hash per core runs at
//! a time: a burst of logins queues instead of taking gigabytes of memory.

use std::sync::Arc;

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// Longest password accepted; argon2 itself has no practical limit, but hashing megabytes of
/// "password" is a cheap way to burn our CPU.
const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
}

impl Default for Passwords {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self { permits: Arc::new(Semaphore::new(cores)) }
    }
}

impl Passwords {
    pub async fn hash(&self, password: &str) -> Result<String> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(Error::invalid_param("Password too long"));
        }
        let password = password.to_owned();
        self.run(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|e| Error::internal(format!("password hashing failed: {e}")))
        })
        .await?
    }

    /// Whether `password` matches the stored PHC string `hash`.
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        let (password, hash) = (password.to_owned(), hash.to_owned());
        self.run(move || Argon2::default().verify_password(password.as_bytes(), hash.as_str()).is_ok()).await
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let _permit = self.permits.acquire().await.map_err(|_| Error::internal("password hashing closed"))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::internal(format!("password hashing task failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::Passwords;

    #[tokio::test]
    async fn hash_then_verify() {
        let passwords = Passwords::default();
        let hash = passwords.hash("correct horse").await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(passwords.verify("correct horse", &hash).await.expect("verify"));
        assert!(!passwords.verify("wrong horse", &hash).await.expect("verify"));
    }
}
