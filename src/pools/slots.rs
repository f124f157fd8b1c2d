//! A clinic shard's connections as slots of one connection each, so that
//! a tenant's request can take a particular one: tenant-affine routing.
//!
//! A tenant's order of preference over the shard's connections is fixed by
//! rendezvous hashing of the tenant and each slot; its first [`HOMES`] are
//! its homes. A request first takes a permit (the shard's part of
//! `clinic.max_active`, a fair queue with the shard's wait deadline), so it
//! waits exactly as long as with one pool of that size; with the permit it
//! takes its first home if idle, else its second, else an idle connection
//! that has already served its schema, else the first idle one in its
//! order. Affinity never adds a wait; it
//! only chooses among idle connections, so each backend's catalog and plan
//! caches stay small and warm (PostgreSQL keeps both per backend, for
//! every schema it touched).
//!
//! A shard has more connections than permits (`clinic.pool_size` against
//! `clinic.max_active`): with as many connections as requests running, a
//! saturated shard finds a tenant's home busy most of the time and every
//! connection meets every tenant; with four times as many, the home is
//! idle for most requests, whatever the load (load/RESULTS.md,
//! "Tenant-affine connections").
//!
//! Each slot counts the distinct schemas its connection has served; one
//! that has served `clinic.connection_max_schemas` is retired before it
//! would serve another, which bounds a backend's memory whatever the
//! traffic.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Object, Pool, PoolError, Status, Timeouts};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What one slot's connection has served since it opened.
#[derive(Debug, Default)]
pub(super) struct SlotState {
    /// Hashes of the distinct schemas served.
    schemas: Mutex<HashSet<u64>>,
    /// Hashes of the tenants' own statements prepared on the connection
    /// (`TenantConn::statement`): admitted while there is room, never
    /// forgotten to make room (see [`SlotState::admit_own`]).
    own: Mutex<HashSet<u64>>,
    /// Reads that could have had a statement of their tenant's own here
    /// but ran on a shared one, the connection's share for own statements
    /// being full; kept across connections (a count for `/admin/pools`).
    own_full: AtomicU64,
    /// Whether the session's settings were found as its pool opened them,
    /// and only reads that cannot change them ran since
    /// (`TenantConn::read`).
    settings_checked: AtomicBool,
}

impl SlotState {
    /// Forgets what the previous connection served (a new one opened).
    pub(super) fn reset(&self) {
        self.lock().clear();
        self.forget_own();
        self.settings_checked.store(false, Ordering::Relaxed);
    }

    pub(super) fn settings_checked(&self) -> bool {
        self.settings_checked.load(Ordering::Relaxed)
    }

    /// Records that the settings were just checked (`true`), or that
    /// something that might change them is about to run (`false`).
    pub(super) fn set_settings_checked(&self, checked: bool) {
        self.settings_checked.store(checked, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.schemas.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn has_served(&self, schema: u64) -> bool {
        self.lock().contains(&schema)
    }

    /// Records that the connection serves `schema`, under one lock;
    /// `false` when it has served `max` others and not this one (it must
    /// be retired first; nothing is recorded).
    fn serve(&self, schema: u64, max: usize) -> bool {
        let mut schemas = self.lock();
        if schemas.contains(&schema) {
            return true;
        }
        if max > 0 && schemas.len() >= max {
            return false;
        }
        schemas.insert(schema);
        true
    }

    pub(super) fn count(&self) -> usize {
        self.lock().len()
    }

    fn own_statements(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.own.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the own statement `key` (a tenant's statement text) is, or
    /// may now be, prepared on the connection: `true` if it is, or if
    /// fewer than `max` are (it is recorded); `false` when `max` others
    /// are, and the read should use the statement every tenant shares.
    ///
    /// First come, kept: a connection whose home tenants have more
    /// statements than `max` gives its own to the first it meets and
    /// plans the others' shared statements again on each use, as
    /// PostgreSQL would for any client. Forgetting some to make room
    /// would cost each of those reads a round trip to prepare and a plan
    /// (the same plan a shared statement costs), and with traffic spread
    /// evenly every read would be such a one (load/RESULTS.md, "Three
    /// thousand tenants").
    pub(super) fn admit_own(&self, key: u64, max: usize) -> bool {
        let mut own = self.own_statements();
        if own.contains(&key) {
            return true;
        }
        if own.len() >= max {
            self.own_full.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        own.insert(key);
        true
    }

    /// Records that the connection's prepared statements were all closed.
    pub(super) fn forget_own(&self) {
        self.own_statements().clear();
    }
}

/// One connection's pool (of one) and what it has served.
pub(super) struct Slot {
    pub(super) pool: Pool,
    pub(super) state: Arc<SlotState>,
}

/// How tenant-affine routing went for a cluster's clinic pool, for
/// `/admin/pools` and metrics.
#[derive(Debug, Default)]
pub struct AffinityCounts {
    /// Requests served on their tenant's home connection.
    pub(super) home: AtomicU64,
    /// Requests served on a connection that had already served their
    /// tenant's schema (the home was busy).
    pub(super) warm: AtomicU64,
    /// Requests served on a connection new to their tenant's schema.
    pub(super) cold: AtomicU64,
}

/// A connection taken from a shard, with the permit that holds its place.
pub(super) struct Taken {
    pub(super) object: Object,
    /// The slot's pool, for a second connection after a lost `COMMIT`.
    pub(super) pool: Pool,
    /// `None` for a pool that is not a shard's slots.
    pub(super) permit: Option<OwnedSemaphorePermit>,
    /// What its slot knows of the connection (`None`: not a shard's).
    pub(super) state: Option<Arc<SlotState>>,
    /// Whether the tenant's own statements are prepared on it: on its home
    /// connections, and on any that has served no more than
    /// [`FEW_SCHEMAS`] schemas.
    pub(super) own_statements: bool,
}

/// A connection that has served this many schemas or fewer takes each
/// tenant's own statements, not only its home tenants': a host with few
/// tenants has a tenant's requests on many of its connections at once
/// (its home is busy with the others), and preparing its statements on
/// each costs no more than this many tenants' worth of plans a
/// connection.
pub(super) const FEW_SCHEMAS: usize = 8;

/// A clinic shard's slots.
pub(super) struct Slots {
    pub(super) slots: Vec<Slot>,
    permits: Arc<Semaphore>,
    /// How many requests may hold a connection at once.
    active: usize,
    waiting: AtomicUsize,
    pub(super) affinity: Arc<AffinityCounts>,
    /// `clinic.connection_max_schemas`.
    max_schemas: usize,
    /// The pool's counts, told of retired connections.
    counts: Arc<super::ConnectionCounts>,
}

/// A tenant (or schema) as a number for hashing.
pub(super) fn key_of(value: impl Hash) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// splitmix64's finaliser: a well-mixed 64-bit score.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `tenant`'s score for slot `i` (rendezvous hashing).
fn score(tenant: u64, i: usize) -> u64 {
    mix(tenant ^ mix(i as u64 + 1))
}

/// Slot indices in `tenant`'s order of preference (rendezvous hashing):
/// the same for the same tenant and number of slots, spread evenly over
/// tenants, and removing a slot moves only the tenants whose home it was.
pub(super) fn preference(tenant: u64, slots: usize) -> Vec<usize> {
    let mut order: Vec<(u64, usize)> = (0..slots).map(|i| (score(tenant, i), i)).collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    order.into_iter().map(|(_, i)| i).collect()
}

/// How many connections of a shard are a tenant's homes: its first
/// preferences, where its reads have statements of its own and run alone.
/// With one home, a saturated shard (as many requests running as permits,
/// a quarter of its connections) finds it busy for about one request in
/// six, and each of those runs in a transaction with a statement planned
/// again; with two, both are busy for about one in forty, and a thousand
/// tenants' reads went from about 8,000 to 9,500-9,900 a second
/// (load/RESULTS.md, "Two homes"), while each connection holds the
/// statements of twice as many tenants (backends 11.3 to 13.0 MiB).
pub(super) const HOMES: usize = 2;

/// Up to [`HOMES`] slot indices, best first, kept without allocating:
/// found for every request.
pub(super) struct Homes {
    slots: [usize; HOMES],
    len: usize,
}

impl std::ops::Deref for Homes {
    type Target = [usize];

    fn deref(&self) -> &[usize] {
        &self.slots[..self.len]
    }
}

/// `tenant`'s homes, the first [`HOMES`] of `preference(tenant, slots)`
/// (fewer when the shard has fewer slots), found in one pass without
/// ranking the others: most requests find a home idle and need no more.
pub(super) fn homes(tenant: u64, slots: usize) -> Homes {
    let mut best = [(0u64, 0usize); HOMES];
    let mut len = 0;
    for i in 0..slots {
        let s = score(tenant, i);
        if len < HOMES || s > best[HOMES - 1].0 {
            let at = best[..len].partition_point(|&(b, _)| b > s);
            // Those after it move down one; when full, the last drops out.
            best.copy_within(at..len.min(HOMES - 1), at + 1);
            best[at] = (s, i);
            len = (len + 1).min(HOMES);
        }
    }
    Homes {
        slots: best.map(|(_, i)| i),
        len,
    }
}

impl Slots {
    /// `slots` of which at most `active` (at least one) are in use at once.
    pub(super) fn new(
        slots: Vec<Slot>,
        active: usize,
        affinity: Arc<AffinityCounts>,
        max_schemas: usize,
        counts: Arc<super::ConnectionCounts>,
    ) -> Slots {
        let active = active.clamp(1, slots.len().max(1));
        let permits = Arc::new(Semaphore::new(active));
        Slots {
            slots,
            permits,
            active,
            waiting: AtomicUsize::new(0),
            affinity,
            max_schemas,
            counts,
        }
    }

    /// `object`, from `slot`, ready to serve `schema`: when its connection
    /// has served its share of distinct schemas and `schema` is not among
    /// them, it is retired and a new one opened in its place.
    async fn ready(
        &self,
        slot: &Slot,
        object: Object,
        schema: Option<u64>,
        timeouts: &Timeouts,
    ) -> Result<Object, PoolError> {
        let Some(schema) = schema else {
            return Ok(object);
        };
        if slot.state.serve(schema, self.max_schemas) {
            return Ok(object);
        }
        self.counts.retired.fetch_add(1, Ordering::Relaxed);
        drop(Object::take(object));
        let object = slot.pool.timeout_get(timeouts).await?;
        slot.state.serve(schema, self.max_schemas);
        Ok(object)
    }

    /// The requests waiting for a permit.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The shard as one pool: its size, connections open and idle, and the
    /// requests waiting for a permit.
    pub(super) fn status(&self) -> Status {
        let mut status = Status {
            max_size: self.slots.len(),
            size: 0,
            available: 0,
            waiting: self.waiting(),
        };
        for slot in &self.slots {
            let one = slot.pool.status();
            status.size += one.size;
            status.available += one.available;
        }
        status
    }

    /// A connection for `tenant` (`None`: any) to serve `schema`, waiting
    /// for a permit at most `timeouts.wait`.
    pub(super) async fn get(
        &self,
        tenant: Option<u64>,
        schema: Option<&str>,
        timeouts: &Timeouts,
    ) -> Result<Taken, PoolError> {
        let permit = {
            self.waiting.fetch_add(1, Ordering::Relaxed);
            let _waited = Waited(&self.waiting);
            let acquire = self.permits.clone().acquire_owned();
            let acquired = match timeouts.wait {
                Some(wait) => tokio::time::timeout(wait, acquire)
                    .await
                    .map_err(|_| PoolError::Timeout(deadpool_postgres::TimeoutType::Wait))?,
                None => acquire.await,
            };
            acquired.map_err(|_| PoolError::Closed)?
        };
        let schema = schema.map(key_of);
        let now = Timeouts {
            wait: Some(Duration::ZERO),
            ..*timeouts
        };
        // The homes first, found without ranking the rest.
        let homes = match tenant {
            Some(tenant) => homes(tenant, self.slots.len()),
            None => Homes {
                slots: [0; HOMES],
                len: 1,
            },
        };
        for &i in homes.iter() {
            if let Some(object) = self.try_slot(i, schema, &now, timeouts).await? {
                if tenant.is_some() {
                    self.affinity.home.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(self.taken(i, object, permit, tenant.is_some()));
            }
        }
        // Busy: the others in preference order, those that served the
        // schema before those new to it (each slot asked once).
        let mut order = match tenant {
            Some(tenant) => preference(tenant, self.slots.len()),
            None => (0..self.slots.len()).collect(),
        };
        let warm: Vec<bool> = self
            .slots
            .iter()
            .map(|slot| schema.is_some_and(|s| slot.state.has_served(s)))
            .collect();
        let others = &mut order[homes.len()..];
        others.sort_by_key(|&i| !warm[i]);
        for &i in others.iter() {
            if let Some(object) = self.try_slot(i, schema, &now, timeouts).await? {
                if tenant.is_some() {
                    let counter = if warm[i] {
                        &self.affinity.warm
                    } else {
                        &self.affinity.cold
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                let own = tenant.is_some() && self.slots[i].state.count() <= FEW_SCHEMAS;
                return Ok(self.taken(i, object, permit, own));
            }
        }
        // A permit but no idle slot: a connection given back moments ago
        // (its permit went first) is on its way; wait for the first home
        // for what is left of the deadline.
        let slot = &self.slots[homes[0]];
        let object = slot.pool.timeout_get(timeouts).await?;
        let object = self.ready(slot, object, schema, timeouts).await?;
        Ok(self.taken(homes[0], object, permit, tenant.is_some()))
    }

    /// Slot `i`'s connection ready for `schema` if it is idle (`None` if
    /// busy); an error if it could not be opened: the database's answer,
    /// at once.
    async fn try_slot(
        &self,
        i: usize,
        schema: Option<u64>,
        now: &Timeouts,
        timeouts: &Timeouts,
    ) -> Result<Option<Object>, PoolError> {
        let slot = &self.slots[i];
        match slot.pool.timeout_get(now).await {
            Ok(object) => Ok(Some(self.ready(slot, object, schema, timeouts).await?)),
            Err(PoolError::Timeout(deadpool_postgres::TimeoutType::Wait)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn taken(
        &self,
        i: usize,
        object: Object,
        permit: OwnedSemaphorePermit,
        own_statements: bool,
    ) -> Taken {
        Taken {
            object,
            pool: self.slots[i].pool.clone(),
            permit: Some(permit),
            state: Some(self.slots[i].state.clone()),
            own_statements,
        }
    }

    /// How many requests may hold one of its connections at once.
    pub(super) fn active(&self) -> usize {
        self.active
    }

    /// Reads at home on shared statements, their connection's share for
    /// own statements being full (`SlotState::admit_own`).
    pub(super) fn own_full(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.state.own_full.load(Ordering::Relaxed))
            .sum()
    }

    /// The distinct schemas each open connection has served.
    pub(super) fn schemas_per_connection(&self) -> Vec<usize> {
        self.slots
            .iter()
            .filter(|s| s.pool.status().size > 0)
            .map(|s| s.state.count())
            .collect()
    }

    pub(super) fn close(&self) {
        self.permits.close();
        for slot in &self.slots {
            slot.pool.close();
        }
    }
}

/// Counts a waiter out when its wait ends, however it ends.
struct Waited<'a>(&'a AtomicUsize);

impl Drop for Waited<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::preference;

    #[test]
    fn a_shard_smaller_than_the_homes_makes_every_slot_a_home() {
        assert_eq!(*super::homes(super::key_of(7), 1), [0]);
        assert!(super::homes(super::key_of(7), 0).is_empty());
        for t in (0..1_000u64).map(super::key_of) {
            for n in 1..=4 {
                let order = super::preference(t, n);
                assert_eq!(*super::homes(t, n), order[..n.min(super::HOMES)]);
            }
        }
    }

    #[test]
    fn preferences_are_stable_spread_and_move_little_when_a_slot_goes() {
        let tenants: Vec<u64> = (0..8_000u64).map(super::key_of).collect();
        let mut homes = [0usize; 8];
        for &t in &tenants {
            let order = preference(t, 8);
            assert_eq!(order, preference(t, 8));
            assert_eq!(*super::homes(t, 8), order[..super::HOMES]);
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, (0..8).collect::<Vec<_>>());
            homes[order[0]] += 1;
        }
        // About 1,000 each.
        assert!(
            homes.iter().all(|&h| (800..1_200).contains(&h)),
            "{homes:?}"
        );
        // With one slot fewer, only the tenants whose home was the last
        // slot change home.
        let moved = tenants
            .iter()
            .filter(|&&t| {
                let before = preference(t, 8)[0];
                before != 7 && preference(t, 7)[0] != before
            })
            .count();
        assert_eq!(moved, 0);
    }
}
