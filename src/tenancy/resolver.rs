//! Resolves a presented API key to its tenant, through a bounded moka cache.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

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
}

impl KeyResolver {
    pub fn new(capacity: u64, ttl: Duration) -> KeyResolver {
        KeyResolver {
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    pub async fn resolve(&self, pools: &Pools, key: ApiKey) -> Result<Resolution, Arc<DbError>> {
        self.cache
            .try_get_with(key.hash, async {
                let client = pools.control(Role::Clinic).await?;
                Ok(match Registry::resolve_key(&client, &key.hash).await? {
                    Some(tenant) => Resolution::Tenant(tenant),
                    None => Resolution::Unknown,
                })
            })
            .await
    }

    /// Forgets every cached key, after a revocation or a status change.
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }
}
