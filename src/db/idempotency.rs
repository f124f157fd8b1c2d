//! Idempotency keys: the first response to a key is stored in the same
//! transaction as the write, so a retry replays it and never writes twice.

use serde_json::Value;
use tokio_postgres::error::SqlState;

use crate::pools::{DbError, Tx};

/// A response as stored and replayed.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Value,
    pub etag: Option<String>,
}

/// What a key says about this request.
pub enum KeyState {
    /// First use: go ahead, then [`complete`].
    Fresh,
    /// The same request was answered before: replay this.
    Replay(StoredResponse),
    /// The key was used for a different request.
    Mismatch,
    /// A request with this key is still running.
    InProgress,
}

/// Claims `key` for this request. A concurrent request with the same key
/// waits here (up to the connection's `lock_timeout`) for the first to
/// finish, then replays it.
pub async fn claim(tx: &Tx, key: &str, route: &str, hash: &[u8]) -> Result<KeyState, DbError> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO idempotency_keys (key, route, request_hash) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO NOTHING",
        )
        .await?;
    match tx.execute(&insert, &[&key, &route, &hash]).await {
        Ok(1) => return Ok(KeyState::Fresh),
        Ok(_) => {}
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            return Ok(KeyState::InProgress)
        }
        Err(e) => return Err(e.into()),
    }
    let select = tx
        .prepare_cached(
            "SELECT route, request_hash, status, response, etag FROM idempotency_keys WHERE key = $1",
        )
        .await?;
    let row = tx.query_one(&select, &[&key]).await?;
    let (stored_route, stored_hash): (String, Vec<u8>) = (row.get(0), row.get(1));
    if stored_route != route || stored_hash != hash {
        return Ok(KeyState::Mismatch);
    }
    match (row.get::<_, Option<i16>>(2), row.get::<_, Option<Value>>(3)) {
        (Some(status), Some(body)) => Ok(KeyState::Replay(StoredResponse {
            status: status as u16,
            body,
            etag: row.get(4),
        })),
        _ => Ok(KeyState::InProgress),
    }
}

/// Stores the response to a fresh key, in the write's transaction.
pub async fn complete(tx: &Tx, key: &str, response: &StoredResponse) -> Result<(), DbError> {
    let update = tx
        .prepare_cached(
            "UPDATE idempotency_keys SET status = $2, response = $3, etag = $4 WHERE key = $1",
        )
        .await?;
    tx.execute(
        &update,
        &[
            &key,
            &(response.status as i16),
            &response.body,
            &response.etag,
        ],
    )
    .await?;
    Ok(())
}
