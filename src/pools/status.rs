//! Snapshots of the pools, by cluster, role and worker: what `/admin/pools`
//! and the metrics read.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Conns, Pools, Role};

/// A snapshot of one pool.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolStatus {
    pub cluster: String,
    /// The `application_name` its connections carry.
    pub role: &'static str,
    /// Connections it may open.
    pub max_size: usize,
    /// Connections it may use at once: `clinic.max_active` for clinic
    /// pools (the others wait idle for their tenants), `max_size` for the
    /// rest.
    pub max_active: usize,
    /// The pool's shards, one per clinic worker (one for admin and
    /// migration pools); the figures above and below are their sums.
    pub shards: usize,
    /// Each shard on its own, by worker: shows a worker whose clients
    /// keep its share busy while another's idles.
    pub by_worker: Vec<ShardStatus>,
    /// Connections open now.
    pub size: usize,
    pub available: usize,
    pub in_use: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
    /// Whether the pool is overloaded (any shard): its queue stood for
    /// `clinic.standing_queue_ms`, so waits are cut to
    /// `clinic.overload_queue_timeout_ms` until nobody is refused for as
    /// long (clinic pools only).
    pub overloaded: bool,
    /// Connections opened since start.
    pub opened: u64,
    /// Connections retired by age or uses.
    pub retired: u64,
    /// Connections found closed when they came back.
    pub broken: u64,
    /// Connections taken out mid-transaction or with changed settings.
    pub discarded: u64,
    /// Waits for a connection that reached the pool's deadline.
    pub timeouts: u64,
    /// Clinic pools: where requests were served (tenant-affine routing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<AffinityStatus>,
    /// Clinic pools: the most distinct tenant schemas one open connection
    /// has served (bounded by `clinic.connection_max_schemas`), and their
    /// sum over the open connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schemas_per_connection: Option<SchemasPerConnection>,
}

/// Where a clinic pool's requests were served, since start.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct AffinityStatus {
    /// On one of their tenant's home connections.
    pub home: u64,
    /// Their homes busy, on another that had served their schema.
    pub warm: u64,
    /// Their homes busy, on one new to their schema.
    pub cold: u64,
    /// Statements (reads, and those a write asks for as its own) that ran
    /// on one every tenant shares where they could have had one of their
    /// tenant's own, the connection's half of
    /// `clinic.connection_max_statements` for own statements being full:
    /// many of these say that connections serve more tenants than their
    /// statements can keep plans for (raise it, or `clinic.pool_size`).
    pub own_statements_full: u64,
}

/// Distinct schemas served by a clinic pool's open connections.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct SchemasPerConnection {
    pub max: usize,
    pub mean: f64,
}

/// One shard of a pool.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardStatus {
    pub max_size: usize,
    pub max_active: usize,
    pub size: usize,
    pub in_use: usize,
    pub waiting: usize,
}

impl Pools {
    /// Each pool's state, by cluster and role.
    pub fn status(&self) -> Vec<PoolStatus> {
        let interval_ms = self.admission.standing.interval_ms;
        let mut all: Vec<PoolStatus> = self
            .clusters
            .iter()
            .flat_map(|(cluster, pools)| {
                [
                    (Role::Clinic, &pools.clinic[..]),
                    (Role::Admin, std::slice::from_ref(&pools.admin)),
                    (Role::Migration, std::slice::from_ref(&pools.migration)),
                    (Role::Keys, pools.keys.as_slice()),
                    (Role::Report, pools.report.as_slice()),
                ]
                .into_iter()
                .filter(|(_, shards)| !shards.is_empty())
                .map(move |(role, shards)| {
                    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
                    // A cluster's clinic shards share one set of counts.
                    let counts = &shards[0].counts;
                    let mut status = PoolStatus {
                        cluster: cluster.clone(),
                        role: role.application_name(),
                        max_size: 0,
                        max_active: 0,
                        shards: shards.len(),
                        by_worker: Vec::with_capacity(shards.len()),
                        size: 0,
                        available: 0,
                        in_use: 0,
                        waiting: 0,
                        overloaded: false,
                        opened: count(&counts.opened),
                        retired: count(&counts.retired),
                        broken: count(&counts.broken),
                        discarded: count(&counts.discarded),
                        timeouts: count(&counts.timeouts),
                        affinity: None,
                        schemas_per_connection: None,
                    };
                    let mut schemas: Vec<usize> = Vec::new();
                    let mut own_full = 0;
                    for shard in shards {
                        let now = shard.conns.status();
                        let in_use = now.size.saturating_sub(now.available);
                        status.max_size += now.max_size;
                        status.max_active += shard.conns.active();
                        status.size += now.size;
                        status.available += now.available;
                        status.in_use += in_use;
                        status.waiting += now.waiting;
                        status.overloaded |=
                            role == Role::Clinic && shard.queue.is_overloaded(interval_ms);
                        if let Conns::Slots(slots) = &shard.conns {
                            schemas.extend(slots.schemas_per_connection());
                            own_full += slots.own_full();
                            let a = &slots.affinity;
                            status.affinity = Some(AffinityStatus {
                                home: count(&a.home),
                                warm: count(&a.warm),
                                cold: count(&a.cold),
                                own_statements_full: own_full,
                            });
                        }
                        status.by_worker.push(ShardStatus {
                            max_size: now.max_size,
                            max_active: shard.conns.active(),
                            size: now.size,
                            in_use,
                            waiting: now.waiting,
                        });
                    }
                    if status.affinity.is_some() {
                        status.schemas_per_connection = Some(SchemasPerConnection {
                            max: schemas.iter().copied().max().unwrap_or(0),
                            mean: schemas.iter().sum::<usize>() as f64
                                / schemas.len().max(1) as f64,
                        });
                    }
                    status
                })
            })
            .collect();
        all.sort_by(|a, b| (&a.cluster, a.role).cmp(&(&b.cluster, b.role)));
        all
    }
}
