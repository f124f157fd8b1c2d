//! The weighted cache pricing reads master items through.
//!
//! Keyed by (tenant, release, code): a tenant never reads another tenant's
//! entries, and a rollout, which changes the tenant's release, makes its old
//! entries unreachable (they age out by weight).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use moka::future::Cache;
use uuid::Uuid;

use super::{item_from_row, MasterItem, ITEM_COLUMNS};
use crate::pools::{DbError, Tx};

/// Every validity row of one code in one tenant's copy; empty when the code
/// is unknown there.
pub type CachedItems = Arc<Vec<MasterItem>>;

type Key = (Uuid, Arc<str>, Arc<str>);

#[derive(Clone)]
pub struct MasterCache {
    cache: Cache<Key, CachedItems>,
    /// Codes found in memory and codes read from the tenant's copy.
    hits: Arc<AtomicU64>,
    misses: Arc<AtomicU64>,
}

/// What the cache holds and how well it serves, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct CacheUsage {
    pub entries: u64,
    /// Approximate bytes held.
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
}

impl MasterCache {
    /// A cache holding at most about `max_bytes` of items.
    pub fn new(max_bytes: u64) -> MasterCache {
        MasterCache {
            cache: Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &Key, items: &CachedItems| {
                    let bytes = 64
                        + key.1.len()
                        + key.2.len()
                        + items.iter().map(MasterItem::weight).sum::<usize>();
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .build(),
            hits: Arc::default(),
            misses: Arc::default(),
        }
    }

    /// The items of `codes` in the tenant's copy of `release`: cached ones
    /// from memory, the rest with one query on `tx` (which must be inside
    /// the tenant's transaction, with the copy known to be at `release`).
    pub async fn lookup(
        &self,
        tx: &Tx<'_>,
        tenant: Uuid,
        release: &str,
        codes: &[&str],
    ) -> Result<HashMap<String, CachedItems>, DbError> {
        let release: Arc<str> = release.into();
        let mut found = HashMap::with_capacity(codes.len());
        let mut missing: Vec<&str> = Vec::new();
        for code in codes {
            if found.contains_key(*code) || missing.contains(code) {
                continue;
            }
            let key = (tenant, release.clone(), Arc::<str>::from(*code));
            match self.cache.get(&key).await {
                Some(items) => {
                    found.insert(code.to_string(), items);
                }
                None => missing.push(code),
            }
        }
        self.hits.fetch_add(found.len() as u64, Ordering::Relaxed);
        self.misses
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        if missing.is_empty() {
            return Ok(found);
        }
        let statement = format!(
            "SELECT {ITEM_COLUMNS} FROM master_items WHERE code = ANY($1) ORDER BY code, valid_from"
        );
        let statement = tx.prepare_cached(&statement).await?;
        let rows = tx.query(&statement, &[&missing]).await?;
        let mut loaded: HashMap<String, Vec<MasterItem>> = missing
            .iter()
            .map(|c| (c.to_string(), Vec::new()))
            .collect();
        for row in &rows {
            let item = item_from_row(row);
            if let Some(list) = loaded.get_mut(&item.code) {
                list.push(item);
            }
        }
        for (code, items) in loaded {
            let items = Arc::new(items);
            let key = (tenant, release.clone(), Arc::<str>::from(code.as_str()));
            self.cache.insert(key, items.clone()).await;
            found.insert(code, items);
        }
        Ok(found)
    }

    /// Finishes the cache's pending bookkeeping, so its counts are exact.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// Entries, their total weight and the hit counts, for metrics.
    pub fn usage(&self) -> CacheUsage {
        CacheUsage {
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}
