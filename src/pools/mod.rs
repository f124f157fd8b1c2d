//! Connection pools per cluster and the tenant-scoped transaction path.
//!
//! Connections are pooled per cluster and per role (clinic, admin), never per
//! tenant. Each pool's session settings (`application_name`,
//! `statement_timeout`, `idle_in_transaction_session_timeout`) are fixed in
//! the connection's startup options when it opens, so nothing a request does
//! can change what the next request on that connection runs with.
//!
//! A tenant's schema is selected only inside a transaction, with
//! `set_config('search_path', …, true)`, pipelined with the first statement
//! ([`TenantConn`]). Nothing else in recept builds a pool or sets session
//! state on a pooled connection.
//!
//! A cluster's clinic pool is split into one shard per clinic worker
//! ([`Pools::clinic_worker`]): a worker's requests use only its own shard's
//! connections, and those connections are driven on that worker's thread,
//! so a request and its database answers never cross threads. Admin and
//! migration pools are shared and driven on the runtime that built them.
//!
//! This file is `Pools` itself (building every pool from the settings and
//! handing out connections by cluster, role and tenant) with its tests,
//! which is why it passes 400 lines; admission, shards, status, overload,
//! connecting, errors and what a Citus coordinator tells have files of
//! their own.

mod admission;
pub mod budget;
pub mod citus;
mod connect;
mod error;
mod overload;
mod replica;
mod shard;
mod slots;
mod status;
mod tenant_conn;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use deadpool_postgres::{Object, Pool, PoolError};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tracing::Instrument;
use uuid::Uuid;

use crate::config::Settings;
pub use admission::{AdmissionStats, TenantShare};
pub use error::DbError;
pub use replica::{Freshness, ReportConn, Source};
pub use shard::{ClinicWorker, Shard};
pub use slots::AffinityCounts;
pub use status::{AffinityStatus, PoolStatus, SchemasPerConnection, ShardStatus};

use admission::Admission;
use shard::split;

pub use tenant_conn::{unqualified, ExpectedSettings, Planning, TenantConn, Tx, TENANT};

use connect::{build_pool, build_slots, connection_timeouts, PoolSpec};
use overload::{QueueState, Standing};

/// Which side of recept a pool serves; each has its own settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Clinic,
    Admin,
    /// Tenant migrations: their own connections, so a long migration run
    /// never takes an admin's or a clinic's.
    Migration,
    /// Reads of API keys missing from the key cache: a small pool of the
    /// control cluster only, so that a flood of unknown keys waits in its
    /// own lane and never for a clinic connection.
    Keys,
    /// Admin reports on a cluster's streaming replica
    /// (`clusters.<name>.replica_url`): never a connection to the primary.
    Report,
}

impl Role {
    /// The `application_name` its connections carry, visible in
    /// `pg_stat_activity`.
    pub fn application_name(self) -> &'static str {
        match self {
            Role::Clinic => "recept-clinic",
            Role::Admin => "recept-admin",
            Role::Migration => "recept-migrate",
            Role::Keys => "recept-keys",
            Role::Report => "recept-report",
        }
    }
}

/// The pools of one cluster: the clinic pool's shards (one per clinic
/// worker), the admin pool, the migration pool, on the control cluster
/// only, the key-lookup pool and, when the cluster names a replica, the
/// report pool on it.
struct ClusterPools {
    clinic: Vec<CountedPool>,
    admin: CountedPool,
    migration: CountedPool,
    keys: Option<CountedPool>,
    report: Option<CountedPool>,
}

/// A pool's connections: one deadpool, or a clinic shard's slots of one
/// connection each (tenant-affine routing, `slots.rs`).
enum Conns {
    One(Pool),
    Slots(slots::Slots),
}

impl Conns {
    fn status(&self) -> deadpool_postgres::Status {
        match self {
            Conns::One(pool) => pool.status(),
            Conns::Slots(slots) => slots.status(),
        }
    }

    /// How many requests wait for one of its connections: what
    /// admission asks of every clinic request (twice, with the shed
    /// check), read without looking at each slot.
    fn waiting(&self) -> usize {
        match self {
            Conns::One(pool) => pool.status().waiting,
            Conns::Slots(slots) => slots.waiting(),
        }
    }

    /// How many requests may hold one of its connections at once.
    fn active(&self) -> usize {
        match self {
            Conns::One(pool) => pool.status().max_size,
            Conns::Slots(slots) => slots.active(),
        }
    }

    fn close(&self) {
        match self {
            Conns::One(pool) => pool.close(),
            Conns::Slots(slots) => slots.close(),
        }
    }
}

/// A pool and what happened to its connections.
struct CountedPool {
    conns: Conns,
    /// Shared by a cluster's clinic shards.
    counts: Arc<ConnectionCounts>,
    queue: QueueState,
    /// The runtime its connections are opened and driven on.
    driver: Arc<RwLock<tokio::runtime::Handle>>,
    /// The most requests that may wait for this pool (clinic shards:
    /// their part of `clinic.max_waiting`).
    max_waiting: usize,
}

impl ClusterPools {
    /// A worker's shard of the clinic pool.
    fn clinic_shard(&self, shard: Shard) -> &CountedPool {
        &self.clinic[shard.0.min(self.clinic.len() - 1)]
    }
}

/// What happened to one pool's connections so far, for metrics.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    /// Connections opened.
    opened: AtomicU64,
    /// Retired by age or uses (`clinic.connection_max_age_s`,
    /// `clinic.connection_max_uses`) or by the schemas it served
    /// (`clinic.connection_max_schemas`).
    retired: AtomicU64,
    /// Found closed on return (PostgreSQL restarted, backend terminated,
    /// network cut).
    broken: AtomicU64,
    /// Taken out by recept: a request ended inside a transaction, or the
    /// session's settings had changed.
    discarded: AtomicU64,
    /// Requests that waited the pool's whole deadline for a connection.
    timeouts: AtomicU64,
}

impl ConnectionCounts {
    pub(crate) fn discarded(&self) {
        self.discarded.fetch_add(1, Ordering::Relaxed);
    }
}

/// All pools of this host, by cluster name.
pub struct Pools {
    clusters: HashMap<String, ClusterPools>,
    control_cluster: String,
    /// Bounds on clinic requests: waiters per cluster, in-flight per tenant.
    admission: Admission,
    /// What clinic connections must show on every use.
    clinic_settings: Arc<ExpectedSettings>,
    /// Which clinic shards a running worker has claimed.
    claimed: Arc<Vec<AtomicBool>>,
    /// When a replica is too far behind for a report, and what then.
    replica_rule: replica::Rule,
}

impl Pools {
    /// Builds every pool; no connection is opened until first use.
    pub fn build(settings: &Settings) -> anyhow::Result<Pools> {
        let mut clusters = HashMap::new();
        let active = settings.clinic.max_active.min(settings.clinic.pool_size);
        let shards = settings.server.workers.clamp(1, active.max(1));
        for (name, cluster) in &settings.clusters {
            let pg: tokio_postgres::Config = cluster.url.parse()?;
            let clinic_counts = Arc::new(ConnectionCounts::default());
            let affinity = Arc::new(AffinityCounts::default());
            let clinic = (0..shards)
                .map(|shard| {
                    let mut pool = build_slots(
                        pg.clone(),
                        PoolSpec {
                            role: Role::Clinic,
                            size: split(settings.clinic.pool_size, shards, shard),
                            statement_timeout_ms: settings.clinic.statement_timeout_ms,
                            lock_timeout_ms: settings.clinic.lock_timeout_ms,
                            queue_timeout_ms: settings.clinic.queue_timeout_ms,
                            retire: Some((
                                Duration::from_secs(settings.clinic.connection_max_age_s),
                                settings.clinic.connection_max_uses,
                            )),
                        },
                        clinic_counts.clone(),
                        split(active, shards, shard),
                        settings.clinic.connection_max_schemas,
                        affinity.clone(),
                    )?;
                    pool.queue.cluster = name.clone();
                    pool.queue.shard = shard;
                    // Rounded up, so no worker is left without a waiter.
                    pool.max_waiting = settings.clinic.max_waiting.div_ceil(shards);
                    Ok(pool)
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let admin = build_pool(
                pg.clone(),
                PoolSpec {
                    role: Role::Admin,
                    size: settings.admin.pool_size,
                    statement_timeout_ms: settings.admin.statement_timeout_ms,
                    lock_timeout_ms: settings.admin.statement_timeout_ms,
                    queue_timeout_ms: settings.admin.queue_timeout_ms,
                    retire: None,
                },
                Default::default(),
            )?;
            let keys = (*name == settings.control.cluster)
                .then(|| {
                    let mut pool = build_pool(
                        pg.clone(),
                        PoolSpec {
                            role: Role::Keys,
                            size: settings.clinic.key_lookup_pool_size,
                            statement_timeout_ms: settings.clinic.statement_timeout_ms,
                            lock_timeout_ms: settings.clinic.lock_timeout_ms,
                            queue_timeout_ms: settings.clinic.queue_timeout_ms,
                            retire: None,
                        },
                        Default::default(),
                    )?;
                    pool.max_waiting = settings.clinic.key_lookup_max_waiting;
                    Ok::<_, anyhow::Error>(pool)
                })
                .transpose()?;
            let report = cluster
                .replica_url
                .as_deref()
                .map(|replica| {
                    let mut pool = build_pool(
                        replica.parse()?,
                        PoolSpec {
                            role: Role::Report,
                            size: settings.admin.replica_pool_size,
                            statement_timeout_ms: settings.admin.replica_statement_timeout_ms,
                            lock_timeout_ms: settings.admin.replica_statement_timeout_ms,
                            queue_timeout_ms: settings.admin.queue_timeout_ms,
                            retire: None,
                        },
                        Default::default(),
                    )?;
                    pool.queue.cluster = name.clone();
                    Ok::<_, anyhow::Error>(pool)
                })
                .transpose()?;
            let migration = build_pool(
                pg,
                PoolSpec {
                    role: Role::Migration,
                    size: settings.migrate.pool_size,
                    statement_timeout_ms: settings.migrate.statement_timeout_ms,
                    lock_timeout_ms: settings.migrate.lock_timeout_ms,
                    // A migration worker waits for its own pool's connection.
                    queue_timeout_ms: settings.migrate.statement_timeout_ms,
                    retire: None,
                },
                Default::default(),
            )?;
            clusters.insert(
                name.clone(),
                ClusterPools {
                    clinic,
                    admin,
                    migration,
                    keys,
                    report,
                },
            );
        }
        Ok(Pools {
            clusters,
            control_cluster: settings.control.cluster.clone(),
            admission: Admission {
                tenant_max_in_flight: settings.clinic.tenant_max_in_flight,
                wait: connection_timeouts(settings.clinic.queue_timeout_ms),
                overload_wait: connection_timeouts(settings.clinic.overload_queue_timeout_ms),
                standing: Standing {
                    interval_ms: settings.clinic.standing_queue_ms,
                    wait_us: settings.clinic.overload_queue_timeout_ms * 1000,
                },
                queue_full: AtomicU64::new(0),
                tenant_share: AtomicU64::new(0),
                deadline: AtomicU64::new(0),
                waits: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
                in_flight: Arc::new(Mutex::new(HashMap::new())),
            },
            clinic_settings: Arc::new(ExpectedSettings {
                statement_timeout: format!("{}ms", settings.clinic.statement_timeout_ms),
                application_name: Role::Clinic.application_name(),
                max_statements: settings.clinic.connection_max_statements,
            }),
            claimed: Arc::new((0..shards).map(|_| AtomicBool::new(false)).collect()),
            replica_rule: replica::Rule {
                max_lag_ms: settings.admin.max_replica_lag_ms,
                behind: settings.admin.replica_behind,
            },
        })
    }

    /// Makes the calling thread a clinic worker: it claims a free shard of
    /// every clinic pool (the first, if every shard is claimed), and that
    /// shard's connections are opened and driven on the calling thread's
    /// runtime from now on. Call it on the worker's own thread; keep the
    /// returned claim for as long as the worker runs.
    pub fn clinic_worker(&self) -> ClinicWorker {
        let claimed = self
            .claimed
            .iter()
            .position(|c| !c.swap(true, Ordering::SeqCst));
        let shard = claimed.unwrap_or(0);
        tracing::debug!(shard, "clinic worker started");
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            for pools in self.clusters.values() {
                let mut driver = pools.clinic[shard]
                    .driver
                    .write()
                    .unwrap_or_else(|e| e.into_inner());
                *driver = handle.clone();
            }
        }
        ClinicWorker {
            shard,
            claimed: claimed.map(|_| self.claimed.clone()),
        }
    }

    /// The name of the cluster holding the control schema.
    pub fn control_cluster(&self) -> &str {
        &self.control_cluster
    }

    /// Whether `name` is a configured cluster.
    pub fn has_cluster(&self, name: &str) -> bool {
        self.clusters.contains_key(name)
    }

    fn counted(&self, cluster: &str, role: Role) -> Result<&CountedPool, DbError> {
        let pools = self
            .clusters
            .get(cluster)
            .ok_or_else(|| DbError::UnknownCluster(cluster.to_string()))?;
        Ok(match role {
            Role::Clinic => pools.clinic_shard(Shard::FIRST),
            Role::Admin => &pools.admin,
            Role::Migration => &pools.migration,
            Role::Keys => pools
                .keys
                .as_ref()
                .ok_or_else(|| DbError::UnknownCluster(cluster.to_string()))?,
            Role::Report => pools
                .report
                .as_ref()
                .ok_or_else(|| DbError::UnknownCluster(cluster.to_string()))?,
        })
    }

    /// A connection of `role` to `cluster`, waiting at most the role's queue
    /// deadline. Use it only for schema-qualified statements (the control
    /// schema) or whole-schema work; tenant work goes through [`Pools::tenant`].
    pub async fn get(&self, cluster: &str, role: Role) -> Result<Object, DbError> {
        // A clinic shard's permit cannot travel with a bare `Object`: it is
        // given back at once, and a request that then finds no idle slot
        // waits for its home (`Slots::get`) until this short use is over.
        self.get_counted(self.counted(cluster, role)?, None)
            .await
            .map(|taken| {
                // Whatever runs on it, its next read alone checks the
                // session's settings first.
                if let Some(state) = &taken.state {
                    state.set_settings_checked(false);
                }
                taken.object
            })
    }

    /// A connection of `counted`, for `schema` when it is a clinic shard's;
    /// with the permit that holds a shard's place and the pool a second
    /// connection would come from.
    async fn get_counted(
        &self,
        counted: &CountedPool,
        schema: Option<&str>,
    ) -> Result<slots::Taken, DbError> {
        if counted.conns.status().waiting >= counted.max_waiting {
            return Err(DbError::QueueFull);
        }
        let got = match &counted.conns {
            Conns::One(pool) => pool.get().await.map(|object| slots::Taken {
                object,
                pool: pool.clone(),
                permit: None,
                state: None,
                own_statements: false,
            }),
            Conns::Slots(slots) => slots.get(None, schema, &self.admission.wait).await,
        };
        got.map_err(|e| {
            if matches!(e, PoolError::Timeout(_)) {
                counted.counts.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            e.into()
        })
    }

    /// A connection of `role` to the control cluster.
    pub async fn control(&self, role: Role) -> Result<Object, DbError> {
        self.get(&self.control_cluster, role).await
    }

    /// A clinic connection bound to one tenant's schema for one request,
    /// from the calling worker's share of the cluster's clinic pool,
    /// through admission: refused at once (`TenantBusy`) when the tenant
    /// already has its share in flight, or (`QueueFull`) when too many
    /// requests already wait for that share; otherwise it waits at most
    /// `clinic.queue_timeout_ms` (then `WaitTimeout`).
    pub async fn tenant(
        &self,
        worker: Shard,
        tenant: Uuid,
        cluster: &str,
        schema: &str,
    ) -> Result<TenantConn, DbError> {
        let share = self.admission.enter(tenant)?;
        let shard = self
            .clusters
            .get(cluster)
            .ok_or_else(|| DbError::UnknownCluster(cluster.to_string()))?
            .clinic_shard(worker);
        let CountedPool {
            conns,
            counts,
            queue,
            ..
        } = shard;
        let waiting = conns.waiting();
        let (limit, timeouts) = self.admission.limits(shard, waiting);
        if waiting >= limit {
            queue.refused();
            self.admission.queue_full.fetch_add(1, Ordering::Relaxed);
            return Err(DbError::QueueFull);
        }
        let waiting = std::time::Instant::now();
        let acquire = async {
            match conns {
                Conns::Slots(slots) => {
                    slots
                        .get(Some(slots::key_of(tenant)), Some(schema), timeouts)
                        .await
                }
                Conns::One(pool) => Ok(slots::Taken {
                    object: pool.timeout_get(timeouts).await?,
                    pool: pool.clone(),
                    permit: None,
                    state: None,
                    own_statements: false,
                }),
            }
        };
        let got = acquire
            .instrument(tracing::debug_span!("db.acquire", db.system = "postgresql"))
            .await;
        let waited = waiting.elapsed();
        self.admission.waits.observe(waited.as_secs_f64());
        if got.is_ok() {
            queue.served(waited);
        }
        tracing::Span::current().record("pool_wait_ms", waited.as_secs_f64() * 1000.0);
        let taken = match got {
            Ok(taken) => taken,
            Err(PoolError::Timeout(_)) => {
                queue.refused();
                self.admission.deadline.fetch_add(1, Ordering::Relaxed);
                counts.timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(DbError::WaitTimeout);
            }
            Err(e) => return Err(e.into()),
        };
        Ok(TenantConn::new(
            taken,
            schema,
            self.clinic_settings.clone(),
            counts.clone(),
            Some(share),
        ))
    }

    /// Whether a clinic request would now be refused at once whatever its
    /// tenant: on every cluster this worker's clinic shard stands and is
    /// full. The
    /// HTTP layer asks before doing any work for a request, so that under
    /// overload refusing costs as little as possible. A refusal here is
    /// counted as `queue_full`.
    pub fn clinic_refuses_all(&self, worker: Shard) -> bool {
        let shards = || self.clusters.values().map(|c| c.clinic_shard(worker));
        let full = shards().all(|pool| {
            let waiting = pool.conns.waiting();
            let (limit, _) = self.admission.limits(pool, waiting);
            waiting >= limit
        });
        if full {
            for pool in shards() {
                pool.queue.refused();
            }
            self.admission.queue_full.fetch_add(1, Ordering::Relaxed);
        }
        full
    }

    /// A clinic connection in `schema` without admission, for operators'
    /// tools and benchmarks that are not clinic requests.
    pub async fn schema(&self, cluster: &str, schema: &str) -> Result<TenantConn, DbError> {
        let counted = self.counted(cluster, Role::Clinic)?;
        let taken = self.get_counted(counted, Some(schema)).await?;
        Ok(TenantConn::new(
            taken,
            schema,
            self.clinic_settings.clone(),
            counted.counts.clone(),
            None,
        ))
    }

    /// Clinic requests refused by admission so far, by reason.
    pub fn admission_stats(&self) -> AdmissionStats {
        AdmissionStats {
            queue_full: self.admission.queue_full.load(Ordering::Relaxed),
            tenant_share: self.admission.tenant_share.load(Ordering::Relaxed),
            deadline: self.admission.deadline.load(Ordering::Relaxed),
        }
    }

    /// The histogram of clinic connection waits (shared, for metrics).
    pub fn wait_histogram(&self) -> Histogram {
        self.admission.waits.clone()
    }

    /// Closes every pool; waiting requests fail fast.
    pub fn close(&self) {
        for pools in self.clusters.values() {
            for shard in &pools.clinic {
                shard.conns.close();
            }
            pools.admin.conns.close();
            pools.migration.conns.close();
            if let Some(keys) = &pools.keys {
                keys.conns.close();
            }
            if let Some(report) = &pools.report {
                report.conns.close();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::{split, Pools, QueueState, Standing};
    use crate::config::{ClusterSettings, Settings};

    /// Log lines written while `f` runs.
    fn logged(f: impl FnOnce()) -> String {
        let out = Arc::new(Mutex::new(Vec::new()));
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Capture(writer.clone()))
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = out.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_busy_queue_is_not_overload_a_standing_or_full_queue_is_and_both_changes_are_logged() {
        let mut queue = QueueState::new();
        queue.cluster = "main".into();
        let limits = Standing {
            interval_ms: 30,
            wait_us: 5_000,
        };
        let interval = Duration::from_millis(limits.interval_ms + 10);
        let log = logged(|| {
            // Requests wait, but some only briefly: a busy pool.
            queue.served(Duration::from_millis(20));
            queue.served(Duration::from_micros(300));
            std::thread::sleep(interval);
            assert!(!queue.observe(3, false, &limits));
            // An interval in which every request served waited long.
            queue.served(Duration::from_millis(8));
            queue.served(Duration::from_millis(12));
            std::thread::sleep(interval);
            assert!(queue.observe(1, false, &limits));
            assert!(queue.is_overloaded(limits.interval_ms));
            queue.refused();
            queue.refused();
            // Nobody refused for a while: over, whatever the queue says now.
            std::thread::sleep(interval);
            assert!(!queue.is_overloaded(limits.interval_ms));
            assert!(!queue.observe(1, false, &limits));
            // A full queue is overload at once.
            assert!(queue.observe(8, true, &limits));
        });
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 3, "{log}");
        assert!(lines[0].contains("WARN") && lines[0].contains("clinic pool overloaded"));
        assert!(lines[0].contains("cluster=main"), "{log}");
        assert!(lines[1].contains("no longer overloaded") && lines[1].contains("refused=2"));
        assert!(lines[2].contains("queue_full=true"), "{log}");
    }

    #[test]
    fn a_pool_split_over_workers_keeps_its_total() {
        for total in 1..40 {
            for parts in 1..=total.min(8) {
                let sizes: Vec<usize> = (0..parts).map(|i| split(total, parts, i)).collect();
                assert_eq!(sizes.iter().sum::<usize>(), total);
                assert!(sizes
                    .iter()
                    .all(|&n| n == total / parts || n == total / parts + 1));
            }
        }
    }

    #[tokio::test]
    async fn each_clinic_worker_claims_its_own_shard_and_frees_it_when_it_stops() {
        let mut settings = Settings::default();
        settings.server.workers = 3;
        settings.clinic.pool_size = 8;
        settings.clinic.max_waiting = 10;
        settings.clusters.insert(
            "main".into(),
            ClusterSettings {
                url: "postgres://recept@127.0.0.1:1/recept".into(),
                replica_url: None,
            },
        );
        let pools = std::sync::Arc::new(Pools::build(&settings).unwrap());
        let clinic = pools
            .status()
            .into_iter()
            .find(|p| p.role == "recept-clinic")
            .unwrap();
        assert_eq!((clinic.shards, clinic.max_size), (3, 8));
        let waits: Vec<usize> = pools.clusters["main"]
            .clinic
            .iter()
            .map(|s| s.max_waiting)
            .collect();
        assert_eq!(waits, [4, 4, 4]);

        // Each worker runs on a thread of its own.
        let claim = |pools: std::sync::Arc<Pools>| {
            std::thread::spawn(move || {
                let worker = pools.clinic_worker();
                (worker.shard, worker)
            })
            .join()
            .unwrap()
        };
        let (a, first) = claim(pools.clone());
        let (b, _second) = claim(pools.clone());
        let (c, _third) = claim(pools.clone());
        let mut shards = [a, b, c];
        shards.sort();
        assert_eq!(shards, [0, 1, 2]);
        // A worker that stopped gives its shard to the next one.
        drop(first);
        let (d, fourth) = claim(pools.clone());
        assert_eq!(d, a);
        // With every shard taken a worker shares the first, and stopping
        // does not free it under its owner.
        let (e, extra) = claim(pools.clone());
        assert_eq!(e, 0);
        drop(extra);
        let taken = |pools: &Pools| {
            pools
                .claimed
                .iter()
                .filter(|c| c.load(std::sync::atomic::Ordering::SeqCst))
                .count()
        };
        assert_eq!(taken(&pools), 3);
        drop(fourth);
        assert_eq!(taken(&pools), 2);
    }
}
