//! The server's signing key: generated on first start, stored, and loaded afterwards.

use parley_federation::SigningKey;

use super::{now_ms, secrets};
use crate::storage::Storage;

/// Loads the signing key in use, or creates and stores one on first start.
pub async fn load_or_create(storage: &Storage) -> anyhow::Result<SigningKey> {
    if let Some((version, der)) = storage.rooms.current_signing_key().await? {
        return Ok(SigningKey::from_der(&der, &version)?);
    }
    let version =
        format!("a_{}", secrets::random_string(4, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"));
    let fresh = SigningKey::generate(&version)?;
    // Another process sharing the database may have stored its key first; use whichever won.
    let (version, der) = storage.rooms.insert_signing_key(&version, fresh.der(), now_ms()).await?;
    tracing::info!(key_id = %format!("ed25519:{version}"), "signing key ready");
    Ok(SigningKey::from_der(&der, &version)?)
}
