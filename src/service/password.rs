//! Password hashing with argon2id. Hashing is deliberately slow, so it runs on the blocking
//! pool and never stalls the async workers.

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};

use crate::error::{Error, Result};

/// Longest password accepted; argon2 itself has no practical limit, but hashing megabytes of
/// "password" is a cheap way to burn our CPU.
const MAX_PASSWORD_BYTES: usize = 1024;

pub async fn hash(password: &str) -> Result<String> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid_param("Password too long"));
    }
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| Error::internal(format!("password hashing failed: {e}")))
    })
    .await
    .map_err(|e| Error::internal(format!("password hashing task failed: {e}")))?
}

/// Whether `password` matches the stored PHC string `hash`.
pub async fn verify(password: &str, hash: &str) -> Result<bool> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Ok(false);
    }
    let (password, hash) = (password.to_owned(), hash.to_owned());
    tokio::task::spawn_blocking(move || Argon2::default().verify_password(password.as_bytes(), hash.as_str()).is_ok())
        .await
        .map_err(|e| Error::internal(format!("password verification task failed: {e}")))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn hash_then_verify() {
        let hash = super::hash("correct horse").await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(super::verify("correct horse", &hash).await.expect("verify"));
        assert!(!super::verify("wrong horse", &hash).await.expect("verify"));
    }
}
