//! Resolves a presented API key to its tenant, through a bounded moka cache.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use tracing::Instrument;

use super::{ApiKey, Registry, TenantCtx};
use crate::pools::{DbError, Pools, Role};

/// What a key turned out to be.
#[derive(Debug, Clone)]
pub enum Resolution {
    Tenant(TenantCtx),
    /// Unknown or revoked: both answer `401`, and both are cached briefly so
    /// a flood of bad keys does not reach the database each time.
    Unknown,
}

/// Key → tenant, cached for a few seconds so a revoked key or a suspended
/// tenant takes effect on every host within that time (at once on the host
/// that made the change, which invalidates its cache).
#[derive(Clone)]
pub struct KeyResolver {
    cache: Cache<[u8; 32], Resolution>,
    /// Keys presented, and those that had to be read from the registry.
    lookups: Arc<AtomicU64>,
    misses: Arc<AtomicU64>,
}

impl KeyResolver {
    pub fn new(capacity: u64, ttl: Duration) -> KeyResolver {
        KeyResolver {
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            lookups: Arc::default(),
            misses: Arc::default(),
        }
    }

    pub async fn resolve(&self, pools: &Pools, key: ApiKey) -> Result<Resolution, Arc<DbError>> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.cache
            .try_get_with(key.hash, async {
                self.misses.fetch_add(1, Ordering::Relaxed);
                async {
                    let client = pools.control(Role::Clinic).await?;
                    Ok(match Registry::resolve_key(&client, &key.hash).await? {
                        Some(tenant) => Resolution::Tenant(tenant),
                        None => Resolution::Unknown,
                    })
                }
                .instrument(tracing::debug_span!(
                    "db.resolve_key",
                    db.system = "postgresql"
                ))
                .await
            })
            .await
    }

    /// Finishes the cache's pending bookkeeping, so its counts are exact.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// Keys cached now, keys presented and keys read from the registry.
    pub fn usage(&self) -> (u64, u64, u64) {
        (
            self.cache.entry_count(),
            self.lookups.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Forgets every cached key, after a revocation or a status change.
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }
}
