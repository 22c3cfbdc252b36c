//! Server keys: this server's ed25519 signing key ([`SigningKey`]), and other servers' keys,
//! fetched ([`KeyFetcher`]), verified ([`verify_server_keys`], [`verify_notary_keys`]) and
//! relayed as a notary ([`sign_as_notary`]).

mod fetcher;
mod notary;
mod remote;

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedServerSigningKeyId, ServerName, ServerSigningKeyId,
    ServerSigningKeyVersion, SigningKeyAlgorithm, UInt,
    api::federation::discovery::{ServerSigningKeys, VerifyKey},
    serde::{Base64, Raw},
    signatures::{Ed25519KeyPair, KeyPair as _, sign_json},
};

pub use self::{
    fetcher::{KeyCache, KeyCacheError, KeyFetchError, KeyFetcher, KeyFetcherConfig, StoredResponse, TrustedNotary},
    notary::sign_as_notary,
    remote::{
        CachedKey, DEFAULT_MAX_VALIDITY, KeyVerifyError, VerifiedKeys, signers_of, verify_notary_keys,
        verify_server_keys,
    },
};

/// An ed25519 key pair with its key ID (`ed25519:<version>`).
pub struct SigningKey {
    pair: Ed25519KeyPair,
    der: Vec<u8>,
    key_id: OwnedServerSigningKeyId,
}

/// What went wrong with a signing key. The underlying error stays attached as the source, so
/// a caller that reports the chain (e.g. anyhow's `{:#}`) says why.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("invalid key version `{0}`: use letters, digits and underscores")]
    InvalidVersion(String),
    #[error("invalid key material")]
    Invalid(#[source] ruma::signatures::Ed25519KeyPairParseError),
    #[error("signing failed")]
    Sign(#[source] ruma::signatures::JsonError),
    #[error("server keys could not be serialized")]
    Serialize(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl SigningKey {
    /// A fresh random key. `version` names it, e.g. `a_Xy3z`; the key ID is `ed25519:<version>`.
    pub fn generate(version: &str) -> Result<Self, KeyError> {
        let der = Ed25519KeyPair::generate();
        Self::from_der(&der, version)
    }

    /// Loads a key stored as PKCS#8 DER by [`SigningKey::der`].
    pub fn from_der(der: &[u8], version: &str) -> Result<Self, KeyError> {
        if version.is_empty() || !version.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(KeyError::InvalidVersion(version.to_owned()));
        }
        let pair = Ed25519KeyPair::from_der(der, version.to_owned()).map_err(KeyError::Invalid)?;
        let version_id: &ServerSigningKeyVersion =
            version.try_into().map_err(|_| KeyError::InvalidVersion(version.to_owned()))?;
        let key_id = ServerSigningKeyId::from_parts(SigningKeyAlgorithm::Ed25519, version_id);
        Ok(Self { pair, der: der.to_vec(), key_id })
    }

    /// The key as PKCS#8 DER, for storage. Secret: keep it out of logs.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn key_id(&self) -> &ServerSigningKeyId {
        &self.key_id
    }

    pub fn version(&self) -> &str {
        self.pair.version()
    }

    /// The public key, unpadded standard base64 as the spec writes keys.
    pub fn public_key_base64(&self) -> String {
        STANDARD_NO_PAD.encode(self.pair.public_key())
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.pair.public_key()
    }

    /// The underlying ruma key pair, for ruma's signing functions.
    pub fn pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    /// Signs `object` in place as `server_name`, per the spec's JSON signing algorithm.
    pub fn sign_json(&self, server_name: &ServerName, object: &mut CanonicalJsonObject) -> Result<(), KeyError> {
        sign_json(server_name.as_str(), &self.pair, object).map_err(KeyError::Sign)
    }

    /// Signs raw bytes (for tests and for callers that build their own signing input).
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_bytes().to_vec()
    }

    /// The body of `GET /_matrix/key/v2/server`: this key, valid for `validity`, signed by itself.
    pub fn server_keys(
        &self,
        server_name: &ServerName,
        now: MilliSecondsSinceUnixEpoch,
        validity: Duration,
    ) -> Result<Raw<ServerSigningKeys>, KeyError> {
        let valid_until = now.get().saturating_add(UInt::try_from(validity.as_millis()).unwrap_or(UInt::MAX));
        let mut keys = ServerSigningKeys::new(server_name.to_owned(), MilliSecondsSinceUnixEpoch(valid_until));
        keys.verify_keys.insert(self.key_id.clone(), VerifyKey::new(Base64::new(self.public_key().to_vec())));
        let serialize = |e| KeyError::Serialize(Box::new(e));
        let mut object = match ruma::canonical_json::to_canonical_value(&keys).map_err(serialize)? {
            ruma::CanonicalJsonValue::Object(object) => object,
            _ => return Err(KeyError::Serialize("server keys did not serialize to an object".into())),
        };
        object.remove("signatures");
        self.sign_json(server_name, &mut object)?;
        let json = serde_json::to_string(&object).map_err(|e| KeyError::Serialize(Box::new(e)))?;
        Raw::from_json_string(json).map_err(|e| KeyError::Serialize(Box::new(e)))
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ruma::{server_name, signatures::verify_json};

    use super::*;

    #[test]
    fn round_trips_through_der_and_signs_verifiably() {
        let key = SigningKey::generate("a_1").expect("generate");
        let again = SigningKey::from_der(key.der(), "a_1").expect("load");
        assert_eq!(key.public_key(), again.public_key());
        assert_eq!(key.key_id().as_str(), "ed25519:a_1");

        let server = server_name!("example.org");
        let raw = key.server_keys(server, MilliSecondsSinceUnixEpoch::now(), Duration::from_secs(3600)).expect("keys");
        let object: CanonicalJsonObject = serde_json::from_str(raw.json().get()).expect("object");
        let mut public = BTreeMap::new();
        public.insert(key.key_id().to_string(), Base64::new(key.public_key().to_vec()));
        let mut map = BTreeMap::new();
        map.insert(server.to_string(), public);
        verify_json(&map, &object).expect("self-signed server keys verify");
    }

    #[test]
    fn errors_keep_their_cause() {
        use std::error::Error as _;
        let error = SigningKey::from_der(b"not a key", "a_1").expect_err("not DER");
        assert!(error.source().is_some(), "{error:?}");
    }

    #[test]
    fn rejects_bad_versions() {
        assert!(SigningKey::generate("").is_err());
        assert!(SigningKey::generate("a:b").is_err());
    }
}
