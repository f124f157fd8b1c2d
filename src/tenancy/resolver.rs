//! Resolves a presented API key to its tenant, through a bounded moka cache.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use moka::future::Cache;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::{ApiKey, KeySecrets, Presented, Registry, TenantCtx};
use crate::pools::{DbError, Pools, Role};

/// What a key turned out to be.
#[derive(Debug, Clone)]
pub enum Resolution {
    Tenant(TenantCtx),
    /// Unknown or revoked: both answer `401`. A key with a right tag that
    /// the registry does not know is cached briefly like any other; a key
    /// with a wrong tag never reaches the cache or the registry.
    Unknown,
}

/// The most keys read again in the background at once: fewer than the
/// key-lookup lane's connections by default, so that a clinic's key not
/// yet cached finds one.
pub const BACKGROUND_READS: usize = 1;

/// Key → tenant, for keys that pass their check in memory
/// ([`KeySecrets::check`]): a forged key is refused before the cache and
/// the registry, so the cache holds verified keys only and an anonymous
/// flood reads nothing. Keys are read from the registry on the control
/// cluster's key-lookup pool, a lane of its own ([`Role::Keys`]).
///
/// Keys issued before tags are recognised by hash among the unrevoked
/// legacy keys, loaded at start-up and every minute
/// ([`KeyResolver::load_legacy`]): no new legacy key can be issued, so the
/// set only shrinks.
///
/// Cached for a few seconds so a revoked key or a suspended
/// tenant takes effect on every host within that time (at once on the host
/// that made the change, which invalidates its cache).
///
/// A key in use is read again in the background once its entry is half its
/// lifetime old, while requests go on being answered from the entry: a
/// clinic's requests wait for the registry only for a key not seen for a
/// whole lifetime. The lifetime stays a hard limit: an entry is never
/// served past it, refreshed or not.
///
/// At most [`BACKGROUND_READS`] background reads run at once: keys first
/// read together (a host starting beside a thousand clinics) come due
/// together, and reading them all at once filled the key-lookup lane's
/// queue, so that those reads failed, their entries expired and the
/// clinics' next requests were refused at capacity. A key that finds
/// them all busy, or whose read failed, is read by one of its later
/// requests, within what is left of its lifetime.
#[derive(Clone)]
pub struct KeyResolver {
    cache: Cache<[u8; 32], Arc<Entry>>,
    /// From when an entry is read again in the background.
    refresh_after: Duration,
    /// Background reads under way.
    refreshes: Arc<Semaphore>,
    /// Bumped by [`KeyResolver::invalidate_all`]: a background read that
    /// started before is not stored.
    generation: Arc<AtomicU64>,
    /// Keys presented, and those that had to be read from the registry.
    lookups: Arc<AtomicU64>,
    misses: Arc<AtomicU64>,
    /// Keys refused in memory: a wrong tag, a wrong shape, or an untagged
    /// key that is not among the legacy keys.
    forged: Arc<AtomicU64>,
    secrets: KeySecrets,
    /// Hashes of the unrevoked keys issued before tags; `None` when
    /// `clinic.accept_legacy_keys` is off.
    legacy: Option<Arc<RwLock<HashSet<[u8; 32]>>>>,
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
    pub fn new(
        capacity: u64,
        ttl: Duration,
        secrets: KeySecrets,
        accept_legacy: bool,
    ) -> KeyResolver {
        KeyResolver {
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            refresh_after: ttl / 2,
            refreshes: Arc::new(Semaphore::new(BACKGROUND_READS)),
            generation: Arc::default(),
            lookups: Arc::default(),
            misses: Arc::default(),
            forged: Arc::default(),
            secrets,
            legacy: accept_legacy.then(Arc::default),
        }
    }

    /// The secrets new keys are tagged under.
    pub fn secrets(&self) -> &KeySecrets {
        &self.secrets
    }

    /// Reads the hashes of the unrevoked legacy keys again; returns how
    /// many there are.
    pub async fn load_legacy(&self, pools: &Pools) -> Result<usize, DbError> {
        let Some(legacy) = &self.legacy else {
            return Ok(0);
        };
        let client = pools.control(Role::Keys).await?;
        let hashes = Registry::legacy_key_hashes(&client).await?;
        let count = hashes.len();
        *legacy.write().unwrap_or_else(|e| e.into_inner()) = hashes;
        Ok(count)
    }

    /// Keeps the legacy keys current: reads them every `every` for as long
    /// as the runtime runs.
    pub fn refresh_legacy(&self, pools: Arc<Pools>, every: Duration) {
        if self.legacy.is_none() {
            return;
        }
        let resolver = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = resolver.load_legacy(&pools).await {
                    tracing::warn!(error = %e, "the legacy API keys could not be read again");
                }
            }
        });
    }

    fn is_legacy(&self, hash: &[u8; 32]) -> bool {
        self.legacy.as_ref().is_some_and(|legacy| {
            legacy
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(hash)
        })
    }

    /// Whether `presented` may be a key recept issued: its tag is right, or
    /// it is a legacy key held in memory. Nothing is read or counted.
    pub fn plausible(&self, presented: &str) -> bool {
        self.verified(presented).is_some()
    }

    /// `presented` as a key to look up: tagged right, or a legacy key held
    /// in memory; `None` for anything recept could not have issued.
    fn verified(&self, presented: &str) -> Option<ApiKey> {
        match self.secrets.check(presented) {
            Presented::Tagged(key) => Some(key),
            Presented::Legacy(key) if self.is_legacy(&key.hash) => Some(key),
            Presented::Legacy(_) | Presented::Forged => None,
        }
    }

    /// What `presented` is: refused in memory when it is forged, else from
    /// the cache or the registry.
    pub async fn resolve(
        &self,
        pools: &Arc<Pools>,
        presented: &str,
    ) -> Result<Resolution, Arc<DbError>> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let Some(key) = self.verified(presented) else {
            self.forged.fetch_add(1, Ordering::Relaxed);
            return Ok(Resolution::Unknown);
        };
        let entry = self
            .cache
            .try_get_with(key.hash, async {
                self.misses.fetch_add(1, Ordering::Relaxed);
                read(pools, &key.hash).await.map(Entry::new)
            })
            .await?;
        if entry.read_at.elapsed() >= self.refresh_after
            && !entry.refreshing.load(Ordering::Relaxed)
        {
            if let Ok(permit) = self.refreshes.clone().try_acquire_owned() {
                if !entry.refreshing.swap(true, Ordering::Relaxed) {
                    self.refresh(pools.clone(), key.hash, entry.clone(), permit);
                }
            }
        }
        Ok(entry.resolution.clone())
    }

    /// Reads `hash` again off the request path and replaces its entry; after
    /// a failed read, a later request tries again (the entry still expires
    /// at its lifetime).
    fn refresh(
        &self,
        pools: Arc<Pools>,
        hash: [u8; 32],
        entry: Arc<Entry>,
        permit: OwnedSemaphorePermit,
    ) {
        let resolver = self.clone();
        let generation = self.generation.load(Ordering::SeqCst);
        tokio::spawn(async move {
            let _permit = permit;
            resolver.misses.fetch_add(1, Ordering::Relaxed);
            match read(&pools, &hash).await {
                Ok(resolution) if resolver.generation.load(Ordering::SeqCst) == generation => {
                    resolver.cache.insert(hash, Entry::new(resolution)).await;
                }
                Ok(_) => {}
                Err(e) => {
                    entry.refreshing.store(false, Ordering::Relaxed);
                    tracing::debug!(error = %e, "an API key could not be read again");
                }
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

    /// Keys refused in memory as forged, and legacy keys held now.
    pub fn refusals(&self) -> (u64, usize) {
        let legacy = self.legacy.as_ref().map_or(0, |legacy| {
            legacy.read().unwrap_or_else(|e| e.into_inner()).len()
        });
        (self.forged.load(Ordering::Relaxed), legacy)
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
        let client = pools.control(Role::Keys).await?;
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
