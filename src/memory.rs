//! The request-body part of the memory budget, counted live: space for
//! bodies in flight per listener, each tenant's share of it, and the few
//! places for reading a body past the limit. Plain counters, no IO; the
//! HTTP intake reserves from it, metrics read it.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
use uuid::Uuid;

/// How many bodies past the limit one listener reads (and throws away)
/// at once before their `413`.
pub const DRAINS: usize = 16;

/// Why no space was reserved for a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener's space for bodies in flight is in use.
    Budget,
    /// The tenant holds its whole share of it.
    TenantShare,
}

/// The space request bodies of one listener may hold at once.
pub struct BodyBudget {
    space: Arc<Semaphore>,
    /// Bodies past the limit being read and thrown away.
    drains: Semaphore,
    bytes: usize,
    /// Bytes reserved now, by tenant, and the most one tenant may hold.
    tenants: Mutex<HashMap<Uuid, usize>>,
    tenant_bytes: usize,
    timeout: Duration,
    counts: BodyCounts,
}

/// What happened to bodies, for metrics.
#[derive(Debug, Default)]
pub struct BodyCounts {
    pub refused_budget: std::sync::atomic::AtomicU64,
    pub refused_tenant: std::sync::atomic::AtomicU64,
    pub timed_out: std::sync::atomic::AtomicU64,
}

/// Space held for one body (and the tenant's part of it); returned when
/// dropped.
pub struct Reservation<'a> {
    _space: OwnedSemaphorePermit,
    _share: Option<TenantShare<'a>>,
}

/// A tenant's part of the bodies in flight.
struct TenantShare<'a> {
    tenant: Uuid,
    bytes: usize,
    budget: &'a BodyBudget,
}

impl Drop for TenantShare<'_> {
    fn drop(&mut self) {
        let mut tenants = self
            .budget
            .tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(held) = tenants.get_mut(&self.tenant) {
            *held = held.saturating_sub(self.bytes);
            if *held == 0 {
                tenants.remove(&self.tenant);
            }
        }
    }
}

impl BodyBudget {
    /// `bytes` of space for bodies, at most `tenant_bytes` of it for one
    /// tenant; each body must arrive within `timeout`.
    pub fn new(bytes: usize, tenant_bytes: usize, timeout: Duration) -> BodyBudget {
        BodyBudget {
            space: Arc::new(Semaphore::new(bytes)),
            drains: Semaphore::new(DRAINS),
            bytes,
            tenants: Mutex::default(),
            tenant_bytes,
            timeout,
            counts: BodyCounts::default(),
        }
    }

    /// Bytes reserved now, and the budget.
    pub fn usage(&self) -> (usize, usize) {
        (self.bytes - self.space.available_permits(), self.bytes)
    }

    /// Bodies past the limit being read and thrown away now.
    pub fn draining(&self) -> usize {
        DRAINS - self.drains.available_permits()
    }

    pub fn counts(&self) -> &BodyCounts {
        &self.counts
    }

    /// How long a body may take to arrive.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One of the few places for reading a body past the limit, when one
    /// is free.
    pub fn try_drain(&self) -> Option<SemaphorePermit<'_>> {
        self.drains.try_acquire().ok()
    }

    fn share(&self, tenant: Uuid, bytes: usize) -> Result<TenantShare<'_>, Refusal> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let held = tenants.get(&tenant).copied().unwrap_or(0);
        if held + bytes > self.tenant_bytes {
            self.counts.refused_tenant.fetch_add(1, Relaxed);
            return Err(Refusal::TenantShare);
        }
        tenants.insert(tenant, held + bytes);
        Ok(TenantShare {
            tenant,
            bytes,
            budget: self,
        })
    }

    /// Holds `bytes` of the budget (and of `tenant`'s share) until the
    /// reservation is dropped, or says why not.
    pub fn reserve(&self, bytes: usize, tenant: Option<Uuid>) -> Result<Reservation<'_>, Refusal> {
        let share = tenant.map(|t| self.share(t, bytes)).transpose()?;
        let space = u32::try_from(bytes)
            .ok()
            .and_then(|permits| self.space.clone().try_acquire_many_owned(permits).ok());
        match space {
            Some(space) => Ok(Reservation {
                _space: space,
                _share: share,
            }),
            None => {
                self.counts.refused_budget.fetch_add(1, Relaxed);
                Err(Refusal::Budget)
            }
        }
    }
}
