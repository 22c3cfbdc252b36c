//! Random secrets (access tokens, session IDs, device IDs) and their stored hashes.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest as _, Sha256};

/// A fresh access token: 32 random bytes, URL-safe base64, with a recognisable prefix so a
/// leaked token is easy to spot in logs or code.
pub fn new_access_token() -> String {
    format!("plt_{}", random_base64(32))
}

/// `bytes` random bytes as URL-safe base64 without padding.
pub fn random_base64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

/// `len` random characters from `alphabet`.
pub fn random_string(len: usize, alphabet: &[u8]) -> String {
    (0..len).map(|_| char::from(alphabet[rand::random_range(0..alphabet.len())])).collect()
}

/// A device ID in the style clients show: ten upper-case letters.
pub fn new_device_id() -> String {
    random_string(10, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
}

/// What is stored in place of a secret.
pub fn sha256(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// A short, stable, non-reversible name for a secret, for keying in-memory maps.
pub fn fingerprint(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(&Sha256::digest(secret.as_bytes())[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hash_stably() {
        let (a, b) = (new_access_token(), new_access_token());
        assert_ne!(a, b);
        assert!(a.len() >= 4 + 43, "32 bytes of entropy: {a}");
        assert_eq!(sha256(&a), sha256(&a));
        assert_ne!(sha256(&a), sha256(&b));
        assert_eq!(new_device_id().len(), 10);
    }
}
