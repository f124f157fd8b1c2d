//! Admission of clinic work: each tenant's share of in-flight requests,
//! how many may wait for a shard's connections and for how long (cut
//! while the shard is overloaded), and the refusals counted for metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use deadpool_postgres::Timeouts;
use prometheus_client::metrics::histogram::Histogram;
use uuid::Uuid;

use super::overload::Standing;
use super::{CountedPool, DbError};

/// Per-tenant in-flight accounting for clinic requests.
pub(super) struct Admission {
    pub(super) tenant_max_in_flight: usize,
    /// The wait for a connection: `queue_timeout_ms`, or the overload
    /// wait once the queue has stood for `standing_queue_ms`.
    pub(super) wait: Timeouts,
    pub(super) overload_wait: Timeouts,
    pub(super) standing: Standing,
    /// Refusals so far, by reason, for metrics.
    pub(super) queue_full: AtomicU64,
    pub(super) tenant_share: AtomicU64,
    pub(super) deadline: AtomicU64,
    /// How long clinic requests waited for a connection, in seconds.
    pub(super) waits: Histogram,
    /// Requests in flight by tenant; entries go when they reach zero. A
    /// std mutex: held only to bump a counter, never across an await.
    pub(super) in_flight: Arc<Mutex<HashMap<Uuid, usize>>>,
}

impl Admission {
    /// How many may wait for a clinic shard and for how long, given its
    /// state now: its part of `clinic.max_waiting` for
    /// `clinic.queue_timeout_ms`, or, while the shard is overloaded (see
    /// [`QueueState`]), one waiter per connection in use for
    /// `clinic.overload_queue_timeout_ms`. Under overload a long wait only
    /// makes the answer late, whichever it is, and waiters past one per
    /// connection in use (`clinic.max_active`) would mostly be refused
    /// anyway.
    pub(super) fn limits(&self, shard: &CountedPool, waiting: usize) -> (usize, &Timeouts) {
        let full = waiting >= shard.max_waiting;
        if shard.queue.observe(waiting, full, &self.standing) {
            (
                shard.max_waiting.min(shard.conns.active()),
                &self.overload_wait,
            )
        } else {
            (shard.max_waiting, &self.wait)
        }
    }

    pub(super) fn enter(&self, tenant: Uuid) -> Result<TenantShare, DbError> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let count = in_flight.entry(tenant).or_insert(0);
        if *count >= self.tenant_max_in_flight {
            self.tenant_share.fetch_add(1, Ordering::Relaxed);
            return Err(DbError::TenantBusy);
        }
        *count += 1;
        Ok(TenantShare {
            tenant,
            in_flight: self.in_flight.clone(),
        })
    }
}

/// Admission refusals so far.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct AdmissionStats {
    /// Refused at once: `clinic.max_waiting` requests already waited.
    pub queue_full: u64,
    /// Waited `clinic.queue_timeout_ms` without a connection.
    pub deadline: u64,
    /// The tenant had `clinic.tenant_max_in_flight` requests in flight.
    pub tenant_share: u64,
}

/// One request's place in its tenant's share, given back on drop.
pub struct TenantShare {
    tenant: Uuid,
    in_flight: Arc<Mutex<HashMap<Uuid, usize>>>,
}

impl Drop for TenantShare {
    fn drop(&mut self) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = in_flight.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(&self.tenant);
            }
        }
    }
}
