//! Clinic API keys: generated here, shown once, stored only as a SHA-256 hash.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The prefix every clinic key starts with, so leaked keys are recognisable.
const KEY_PREFIX: &str = "rk_";

/// A key as presented by a client, reduced to its hash at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiKey {
    pub hash: [u8; 32],
}

impl ApiKey {
    pub fn from_presented(key: &str) -> ApiKey {
        ApiKey {
            hash: Sha256::digest(key.as_bytes()).into(),
        }
    }
}

/// A newly generated key: the secret is returned to the caller once.
#[derive(Debug)]
pub struct IssuedKey {
    pub id: Uuid,
    pub secret: String,
    pub prefix: String,
    pub hash: [u8; 32],
}

impl IssuedKey {
    pub fn generate() -> IssuedKey {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let secret = format!(
            "{KEY_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let prefix = secret[..KEY_PREFIX.len() + 6].to_string();
        let hash = ApiKey::from_presented(&secret).hash;
        IssuedKey {
            id: Uuid::now_v7(),
            secret,
            prefix,
            hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_key_hashes_like_its_presentation() {
        let key = IssuedKey::generate();
        assert!(key.secret.starts_with("rk_"));
        assert_eq!(ApiKey::from_presented(&key.secret).hash, key.hash);
        assert_ne!(IssuedKey::generate().secret, key.secret);
    }
}
