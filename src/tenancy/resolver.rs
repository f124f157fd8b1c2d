//! Resolves a presented API key to its tenant, through a bounded moka cache.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
///
/// A key in use is read again in the background once its entry is half its
/// lifetime old, while requests go on being answered from the entry: a
/// clinic's requests wait for the registry only for a key not seen for a
/// whole lifetime. The lifetime stays a hard limit: an entry is never
/// served past it, refreshed or not.
#[derive(Clone)]
pub struct KeyResolver {
    cache: Cache<[u8; 32], Arc<Entry>>,
    /// From when an entry is read again in the background.
    refresh_after: Duration,
    /// Bumped by [`KeyResolver::invalidate_all`]: a background read that
    /// started before is not stored.
    generation: Arc<AtomicU64>,
    /// Keys presented, and those that had to be read from the registry.
    lookups: Arc<AtomicU64>,
    misses: Arc<AtomicU64>,
}

/// A cached resolution and when it was read.
#[derive(Debug)]
struct Entry {
    resolution: Resolution,
    read_at: Instant,
    /// A background read of this key is under way.
    refreshing: AtomicBool,
}

impl Entry {
    fn new(resolution: Resolution) -> Arc<Entry> {
        Arc::new(Entry {
            resolution,
            read_at: Instant::now(),
            refreshing: AtomicBool::new(false),
        })
    }
}

impl KeyResolver {
    pub fn new(capacity: u64, ttl: Duration) -> KeyResolver {
        KeyResolver {
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            refresh_after: ttl / 2,
            generation: Arc::default(),
            lookups: Arc::default(),
            misses: Arc::default(),
        }
    }

    pub async fn resolve(
        &self,
        pools: &Arc<Pools>,
        key: ApiKey,
    ) -> Result<Resolution, Arc<DbError>> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let entry = self
            .cache
            .try_get_with(key.hash, async {
                self.misses.fetch_add(1, Ordering::Relaxed);
                read(pools, &key.hash).await.map(Entry::new)
            })
            .await?;
        if entry.read_at.elapsed() >= self.refresh_after
            && !entry.refreshing.swap(true, Ordering::Relaxed)
        {
            self.refresh(pools.clone(), key.hash);
        }
        Ok(entry.resolution.clone())
    }

    /// Reads `hash` again off the request path and replaces its entry; a
    /// failed read leaves the entry to expire at its lifetime.
    fn refresh(&self, pools: Arc<Pools>, hash: [u8; 32]) {
        let resolver = self.clone();
        let generation = self.generation.load(Ordering::SeqCst);
        tokio::spawn(async move {
            resolver.misses.fetch_add(1, Ordering::Relaxed);
            match read(&pools, &hash).await {
                Ok(resolution) if resolver.generation.load(Ordering::SeqCst) == generation => {
                    resolver.cache.insert(hash, Entry::new(resolution)).await;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "an API key could not be read again"),
            }
        });
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
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_all();
    }
}

/// What the registry says of a key now.
async fn read(pools: &Pools, hash: &[u8; 32]) -> Result<Resolution, DbError> {
    async {
        let client = pools.control(Role::Clinic).await?;
        Ok(match Registry::resolve_key(&client, hash).await? {
            Some(tenant) => Resolution::Tenant(tenant),
            None => Resolution::Unknown,
        })
    }
    .instrument(tracing::debug_span!(
        "db.resolve_key",
        db.system = "postgresql"
    ))
    .await
}
