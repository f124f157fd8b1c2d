//! Idempotency keys: the first response to a key is stored in the same
//! transaction as the write, so a retry replays it and never writes twice.

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;

use crate::pools::{DbError, Tx};

/// A response as stored and replayed.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub status: u16,
    /// The JSON body, serialized once: sent as it is the first time and
    /// stored for replays.
    pub body: String,
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
/// finish, then replays it. A key older than `ttl_s` is expired: claiming it
/// starts afresh.
pub async fn claim(
    tx: &Tx<'_>,
    key: &str,
    route: &str,
    hash: &[u8],
    ttl_s: f64,
) -> Result<KeyState, DbError> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO idempotency_keys (key, route, request_hash, created_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (key) DO UPDATE SET route = excluded.route, \
               request_hash = excluded.request_hash, status = NULL, response = NULL, \
               etag = NULL, created_at = excluded.created_at \
             WHERE idempotency_keys.created_at < $5",
        )
        .await?;
    // The times are parameters: Citus refuses a volatile function in an
    // upsert's `DO UPDATE` on a distributed table.
    let now = Utc::now();
    let expired_before = created_before(now, ttl_s);
    match tx
        .execute(&insert, &[&key, &route, &hash, &now, &expired_before])
        .await
    {
        Ok(1) => return Ok(KeyState::Fresh),
        Ok(_) => {}
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            return Ok(KeyState::InProgress)
        }
        Err(e) => return Err(e.into()),
    }
    let select = tx
        .prepare_cached(
            "SELECT route, request_hash, status, response::text, etag FROM idempotency_keys WHERE key = $1",
        )
        .await?;
    let row = tx.query_one(&select, &[&key]).await?;
    let (stored_route, stored_hash): (String, Vec<u8>) = (row.get(0), row.get(1));
    if stored_route != route || stored_hash != hash {
        return Ok(KeyState::Mismatch);
    }
    match (
        row.get::<_, Option<i16>>(2),
        row.get::<_, Option<String>>(3),
    ) {
        (Some(status), Some(body)) => Ok(KeyState::Replay(StoredResponse {
            status: status as u16,
            body,
            etag: row.get(4),
        })),
        _ => Ok(KeyState::InProgress),
    }
}

/// Removes a few expired keys (an index range scan; usually finds none).
/// Rows another request is reclaiming are skipped, never waited for.
pub async fn purge_expired(tx: &Tx<'_>, ttl_s: f64) -> Result<u64, DbError> {
    let delete = tx
        .prepare_cached(
            "DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys \
             WHERE created_at < $1 LIMIT 100 FOR UPDATE SKIP LOCKED)",
        )
        .await?;
    Ok(tx
        .execute(&delete, &[&created_before(Utc::now(), ttl_s)])
        .await?)
}

/// Keys created before this have outlived `ttl_s`
/// (`clinic.idempotency_ttl_s`); a lifetime reaching back past 1970 keeps
/// every key rather than overflowing.
fn created_before(now: DateTime<Utc>, ttl_s: f64) -> DateTime<Utc> {
    chrono::TimeDelta::try_milliseconds((ttl_s * 1000.0) as i64)
        .and_then(|ttl| now.checked_sub_signed(ttl))
        .filter(|t| *t > DateTime::UNIX_EPOCH)
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// Stores the response to a fresh key, in the write's transaction.
pub async fn complete(tx: &Tx<'_>, key: &str, response: &StoredResponse) -> Result<(), DbError> {
    let update = tx
        .prepare_cached(
            "UPDATE idempotency_keys SET status = $2, response = CAST($3::text AS jsonb), etag = $4 \
             WHERE key = $1",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lifetime_of_any_length_gives_a_cutoff_without_overflowing() {
        let now = Utc::now();
        assert_eq!(
            created_before(now, 60.0),
            now - chrono::TimeDelta::seconds(60)
        );
        assert_eq!(created_before(now, 1e30), DateTime::UNIX_EPOCH);
        assert_eq!(created_before(now, u64::MAX as f64), DateTime::UNIX_EPOCH);
    }
}
