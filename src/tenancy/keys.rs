//! Clinic API keys: generated here, shown once, stored only as a SHA-256
//! hash, and tagged so that a forged key is recognised without a lookup.
//!
//! A key is `rk_<random>.<tag>`: 32 random bytes and the first 16 bytes of
//! HMAC-SHA256 of them under `clinic.key_secret`, both base64url without
//! padding. Every recept host shares the secret, so each can tell a key it
//! issued (or another host issued) from a guess by computing the tag in
//! memory; during a rotation `clinic.previous_key_secret` is accepted too.
//! Keys issued before tags existed (`rk_<random>`, no tag) are *legacy*:
//! they are recognised by their hash among the unrevoked legacy keys the
//! resolver holds in memory ([`super::KeyResolver`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The prefix every clinic key starts with, so leaked keys are recognisable.
const KEY_PREFIX: &str = "rk_";
/// Random bytes in a key, and bytes of its tag.
const RANDOM_BYTES: usize = 32;
const TAG_BYTES: usize = 16;
/// Characters their base64url forms take.
const RANDOM_CHARS: usize = 43;
const TAG_CHARS: usize = 22;
/// Separates the tag's input from any other use of the same secret.
const TAG_CONTEXT: &[u8] = b"recept api key v1\0";

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

/// What a presented key turned out to be, before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// Its tag is right under the current or the previous secret.
    Tagged(ApiKey),
    /// Shaped like a key issued before tags: recognised by its hash alone.
    Legacy(ApiKey),
    /// Not a key recept could have issued: a wrong tag, or the wrong shape.
    Forged,
}

/// The secrets keys are tagged under: the current one tags new keys; the
/// previous one, during a rotation, is still accepted.
#[derive(Clone)]
pub struct KeySecrets {
    current: Hmac<Sha256>,
    previous: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for KeySecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySecrets(***)")
    }
}

impl KeySecrets {
    pub fn new(current: &str, previous: Option<&str>) -> KeySecrets {
        let mac = |secret: &str| {
            Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .expect("HMAC takes keys of any length")
        };
        KeySecrets {
            current: mac(current),
            previous: previous.filter(|p| !p.is_empty()).map(mac),
        }
    }

    /// The secrets a configuration names.
    pub fn from_settings(clinic: &crate::config::ClinicSettings) -> KeySecrets {
        KeySecrets::new(&clinic.key_secret, clinic.previous_key_secret.as_deref())
    }

    fn tag(mac: &Hmac<Sha256>, random: &[u8]) -> Hmac<Sha256> {
        let mut mac = mac.clone();
        mac.update(TAG_CONTEXT);
        mac.update(random);
        mac
    }

    /// A new key tagged under the current secret.
    pub fn issue(&self) -> IssuedKey {
        let mut random = [0u8; RANDOM_BYTES];
        rand::thread_rng().fill_bytes(&mut random);
        let tag = Self::tag(&self.current, &random).finalize().into_bytes();
        let secret = format!(
            "{KEY_PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(random),
            URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES])
        );
        IssuedKey {
            id: Uuid::now_v7(),
            prefix: secret[..KEY_PREFIX.len() + 6].to_string(),
            hash: ApiKey::from_presented(&secret).hash,
            secret,
        }
    }

    /// Checks a presented key in memory: its shape, then its tag (in
    /// constant time) under each accepted secret.
    pub fn check(&self, presented: &str) -> Presented {
        let Some(body) = presented.strip_prefix(KEY_PREFIX) else {
            return Presented::Forged;
        };
        match body.split_once('.') {
            None if body.len() == RANDOM_CHARS && is_base64url(body) => {
                Presented::Legacy(ApiKey::from_presented(presented))
            }
            Some((random, tag)) if random.len() == RANDOM_CHARS && tag.len() == TAG_CHARS => {
                let (Ok(random), Ok(tag)) =
                    (URL_SAFE_NO_PAD.decode(random), URL_SAFE_NO_PAD.decode(tag))
                else {
                    return Presented::Forged;
                };
                let right = |mac: &Hmac<Sha256>| {
                    Self::tag(mac, &random).verify_truncated_left(&tag).is_ok()
                };
                if right(&self.current) || self.previous.as_ref().is_some_and(right) {
                    Presented::Tagged(ApiKey::from_presented(presented))
                } else {
                    Presented::Forged
                }
            }
            _ => Presented::Forged,
        }
    }
}

fn is_base64url(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A newly generated key: the secret is returned to the caller once.
#[derive(Debug)]
pub struct IssuedKey {
    pub id: Uuid,
    pub secret: String,
    pub prefix: String,
    pub hash: [u8; 32],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> KeySecrets {
        KeySecrets::new("a secret of at least thirty-two characters", None)
    }

    #[test]
    fn an_issued_key_passes_its_check_and_hashes_like_its_presentation() {
        let key = secrets().issue();
        assert!(key.secret.starts_with("rk_"));
        assert_eq!(key.secret.len(), 3 + RANDOM_CHARS + 1 + TAG_CHARS);
        assert_eq!(
            secrets().check(&key.secret),
            Presented::Tagged(ApiKey { hash: key.hash })
        );
        assert_ne!(secrets().issue().secret, key.secret);
    }

    #[test]
    fn a_key_with_any_character_of_its_tag_changed_is_forged() {
        let key = secrets().issue().secret;
        let tag_start = key.len() - TAG_CHARS;
        for i in tag_start..key.len() {
            let mut forged = key.clone().into_bytes();
            forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
            let forged = String::from_utf8(forged).unwrap();
            assert_eq!(secrets().check(&forged), Presented::Forged, "{forged}");
        }
        // The random part changed under the same tag.
        let mut forged = key.into_bytes();
        forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(secrets().check(&forged), Presented::Forged);
    }

    #[test]
    fn a_key_tagged_under_another_secret_is_forged_unless_that_secret_is_the_previous_one() {
        let old = KeySecrets::new("the secret used before the rotation", None);
        let key = old.issue();
        assert_eq!(secrets().check(&key.secret), Presented::Forged);
        let rotating = KeySecrets::new(
            "a secret of at least thirty-two characters",
            Some("the secret used before the rotation"),
        );
        assert_eq!(
            rotating.check(&key.secret),
            Presented::Tagged(ApiKey { hash: key.hash })
        );
        // New keys are tagged under the current secret only.
        assert_eq!(old.check(&rotating.issue().secret), Presented::Forged);
    }

    #[test]
    fn keys_of_the_shape_issued_before_tags_are_legacy_and_other_shapes_forged() {
        let legacy = format!("rk_{}", URL_SAFE_NO_PAD.encode([7u8; 32]));
        assert!(matches!(secrets().check(&legacy), Presented::Legacy(_)));
        for forged in [
            "",
            "rk_",
            "rk_short",
            "xx_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "rk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+",
            "rk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.",
            "rk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAA*",
            "rk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAé",
        ] {
            assert_eq!(secrets().check(forged), Presented::Forged, "{forged}");
        }
    }
}
