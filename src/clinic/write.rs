//! A clinic write and its idempotency record, in one transaction: the
//! first answer to an `Idempotency-Key` is stored with the write, so a
//! retry replays it and never writes twice, and a different request under
//! the same key is refused.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::ClinicError;
use crate::db::idempotency::{self, KeyState, StoredResponse};
use crate::pools::{Planning, TenantConn, Tx};

/// What a write answers, serialized once: the same text is stored for
/// replays and sent.
pub type Written = StoredResponse;

/// A client's idempotency key, bound to the operation and the request it
/// guards.
pub struct IdempotencyKey {
    key: String,
    operation: &'static str,
    hash: [u8; 32],
    /// How long the key is remembered (`clinic.idempotency_ttl_s`).
    ttl_s: f64,
}

impl IdempotencyKey {
    /// `key` (1 to 200 visible ASCII characters) for `operation` on
    /// `request`; equal requests (whatever their key order or spacing)
    /// hash equally.
    pub fn new(
        key: &[u8],
        operation: &'static str,
        request: &serde_json::Value,
        ttl_s: u64,
    ) -> Result<IdempotencyKey, ClinicError> {
        let key = std::str::from_utf8(key)
            .ok()
            .filter(|k| (1..=200).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                ClinicError::invalid(
                    "Idempotency-Key",
                    "must be 1 to 200 visible ASCII characters",
                )
            })?;
        // serde_json's maps are ordered, so equal JSON serializes equally.
        let canonical = serde_json::to_vec(request).map_err(|e| ClinicError::Internal(e.into()))?;
        Ok(IdempotencyKey {
            key: key.to_string(),
            operation,
            hash: Sha256::digest(&canonical).into(),
            ttl_s: ttl_s as f64,
        })
    }
}

/// Whether a write made something new (`201`) or changed what was there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    Created,
    Changed,
}

/// `value` as the write's answer, with an entity tag when it has versions.
pub fn written(
    made: Made,
    value: &impl Serialize,
    etag: Option<String>,
) -> Result<Written, ClinicError> {
    Ok(StoredResponse {
        status: match made {
            Made::Created => 201,
            Made::Changed => 200,
        },
        body: serde_json::to_string(value).map_err(|e| ClinicError::Internal(e.into()))?,
        etag,
    })
}

/// Runs `work` in one transaction of the clinic's connection; with a key,
/// a repeat of the same request replays the first answer.
pub async fn write_once(
    conn: &TenantConn,
    key: Option<IdempotencyKey>,
    work: impl AsyncFnOnce(&Tx<'_>) -> Result<Written, ClinicError>,
) -> Result<Written, ClinicError> {
    write_once_planned(conn, key, Planning::Auto, work).await
}

/// [`write_once`] with its statements planned as `planning` says.
pub async fn write_once_planned(
    conn: &TenantConn,
    key: Option<IdempotencyKey>,
    planning: Planning,
    work: impl AsyncFnOnce(&Tx<'_>) -> Result<Written, ClinicError>,
) -> Result<Written, ClinicError> {
    conn.write_planned(planning, async |tx| {
        if let Some(k) = &key {
            match idempotency::claim(tx, &k.key, k.operation, &k.hash, k.ttl_s).await? {
                KeyState::Fresh => {
                    // Expired keys go a few at a time, on about one keyed
                    // write in 64, so the table stays bounded.
                    if rand::random::<u8>() < 4 {
                        idempotency::purge_expired(tx, k.ttl_s).await?;
                    }
                }
                KeyState::Replay(stored) => return Ok(stored),
                KeyState::Mismatch => {
                    return Err(ClinicError::invalid(
                        "Idempotency-Key",
                        "was already used for a different request",
                    ))
                }
                KeyState::InProgress => return Err(ClinicError::KeyInProgress),
            }
        }
        let answer = work(tx).await?;
        if let Some(k) = &key {
            idempotency::complete(tx, &k.key, &answer).await?;
        }
        Ok(answer)
    })
    .await
}
