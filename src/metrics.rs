//! Prometheus metrics, one registry per application (no global recorder, so
//! tests run many servers side by side). Request counts and latencies are
//! recorded as requests finish; pools, admission, the caches and the
//! process's memory are read as snapshots on each scrape; migration and
//! rollout progress is read from the control schema when `/metrics` is
//! asked for, so it shows runs made by any process (`recept migrate` too).
//!
//! Long because the registry is one value: every series is declared and
//! read in one place, so a metric's name, help and labels are never
//! repeated.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::master::{MasterCache, RolloutCounts};
use crate::migrate::MigrationStatus;
use crate::pools::{Pools, Role};
use crate::tenancy::{KeyResolver, Slug};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: &'static str,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    listener: &'static str,
    route: String,
}

/// What the metrics read from.
pub struct Sources {
    pub pools: Arc<Pools>,
    pub master_cache: MasterCache,
    pub keys: KeyResolver,
    /// `server.cache_memory_mb`, in bytes.
    pub cache_budget_bytes: u64,
    /// `server.tenant_metrics_top`.
    pub tenant_top: usize,
    /// `server.memory_mb`, in bytes.
    pub memory_budget_bytes: u64,
    /// Space for clinic request bodies in flight.
    pub clinic_bodies: Arc<crate::memory::BodyBudget>,
    /// What the clinic listener's door did.
    pub door: Arc<DoorCounts>,
}

/// What the clinic listener's door did (`http::door`).
#[derive(Debug, Default)]
pub struct DoorCounts {
    /// Connections handed to the door and answered there.
    pub answered: std::sync::atomic::AtomicU64,
    /// Connections closed unanswered: the door was full.
    pub dropped: std::sync::atomic::AtomicU64,
    /// Connections cut at the door's deadline (`server.client_timeout_ms`).
    pub cut: std::sync::atomic::AtomicU64,
}

/// The application's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Clinic requests refused before routing because every clinic pool
    /// was overloaded (one series of `requests`, held to count cheaply).
    shed: Counter,
    /// Also read by the scrape-time collector.
    shared: Arc<Shared>,
}

/// What requests record and scrapes read.
struct Shared {
    sources: Sources,
    tenants: Mutex<TenantTally>,
    progress: Mutex<Progress>,
}

/// Clinic requests per tenant. One small entry per tenant that made a
/// request (bounded by the registry); only the busiest are exported.
type TenantTally = HashMap<Slug, TenantCounts>;

#[derive(Debug, Default, Clone, Copy)]
struct TenantCounts {
    requests: u64,
    /// Answered `429` or `503`.
    refused: u64,
    seconds: f64,
}

/// Migration and rollout progress as last read from the control schema.
#[derive(Debug, Default)]
struct Progress {
    /// Whether the last read succeeded.
    read: bool,
    migrations: Option<MigrationStatus>,
    rollout: Option<(String, bool, RolloutCounts)>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The `route` label of clinic requests refused before routing.
pub const SHED_ROUTE: &str = "(refused: overloaded)";

impl Metrics {
    pub fn new(sources: Sources) -> Metrics {
        let mut registry = Registry::with_prefix("recept");
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "http_requests",
            "Finished HTTP requests by listener, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by listener and route",
            durations.clone(),
        );
        registry.register(
            "clinic_connection_wait_seconds",
            "How long clinic requests waited for a connection",
            sources.pools.wait_histogram(),
        );
        let shared = Arc::new(Shared {
            sources,
            tenants: Mutex::new(TenantTally::new()),
            progress: Mutex::new(Progress::default()),
        });
        registry.register_collector(Box::new(Snapshot(shared.clone())));
        let shed = requests
            .get_or_create(&RequestLabels {
                listener: "clinic",
                route: SHED_ROUTE.into(),
                status: "503".into(),
            })
            .clone();
        Metrics {
            registry,
            requests,
            durations,
            shed,
            shared,
        }
    }

    /// Records a clinic request refused before routing (see
    /// [`crate::pools::Pools::clinic_refuses_all`]).
    pub fn shed(&self) {
        self.shed.inc();
    }

    /// Records one finished request. `route` is the matched pattern (never
    /// the raw path, so ids do not multiply series); `tenant` is the
    /// clinic's slug when the request was bound to one.
    pub fn request(
        &self,
        listener: &'static str,
        route: &str,
        status: u16,
        elapsed: Duration,
        tenant: Option<&Slug>,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                listener,
                route: route.to_string(),
                status: status.to_string(),
            })
            .inc();
        self.durations
            .get_or_create(&RouteLabels {
                listener,
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
        if let (Some(tenant), true) = (tenant, self.shared.sources.tenant_top > 0) {
            let mut tally = self
                .shared
                .tenants
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let counts = tally.entry(tenant.clone()).or_default();
            counts.requests += 1;
            counts.refused += u64::from(status == 429 || status == 503);
            counts.seconds += elapsed.as_secs_f64();
        }
    }

    /// Brings what a scrape reads up to date: the caches' pending
    /// bookkeeping (so entry counts are exact), and migration and rollout
    /// progress from the control schema (on the admin pool, so bounded by
    /// its timeouts; on failure the last figures stay and
    /// `recept_control_reachable` says 0).
    pub async fn refresh(&self) {
        let sources = &self.shared.sources;
        sources.master_cache.run_pending_tasks().await;
        sources.keys.run_pending_tasks().await;
        let read = async {
            let client = sources.pools.control(Role::Admin).await?;
            let migrations = crate::migrate::status(&client).await?;
            let rollout = crate::master::latest_rollout(&client).await?;
            Ok::<_, crate::pools::DbError>((migrations, rollout))
        }
        .await;
        let mut progress = self
            .shared
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match read {
            Ok((migrations, rollout)) => {
                *progress = Progress {
                    read: true,
                    migrations: Some(migrations),
                    rollout,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read migration progress for metrics");
                progress.read = false;
            }
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// What is read on each scrape.
struct Snapshot(Arc<Shared>);

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Snapshot")
    }
}

type Labels<'a> = Vec<(&'a str, String)>;

/// A sample's value: whole numbers print as such.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl From<u64> for Num {
    fn from(v: u64) -> Num {
        Num::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Num {
    fn from(v: usize) -> Num {
        Num::from(v as u64)
    }
}

impl From<i64> for Num {
    fn from(v: i64) -> Num {
        Num::Int(v)
    }
}

impl From<i32> for Num {
    fn from(v: i32) -> Num {
        Num::Int(v.into())
    }
}

impl From<bool> for Num {
    fn from(v: bool) -> Num {
        Num::Int(v.into())
    }
}

impl From<f64> for Num {
    fn from(v: f64) -> Num {
        Num::Float(v)
    }
}

/// One metric family of constant values: gauges, or counters when
/// `counter` (then the value must only grow).
fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    counter: bool,
    values: &[(Labels<'_>, Num)],
) -> Result<(), fmt::Error> {
    let kind = if counter {
        ConstCounter::new(0u64).metric_type()
    } else {
        ConstGauge::new(0i64).metric_type()
    };
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in values {
        let family = metric.encode_family(labels)?;
        match (*value, counter) {
            (Num::Int(v), true) => ConstCounter::new(v.max(0) as u64).encode(family)?,
            (Num::Float(v), true) => ConstCounter::new(v).encode(family)?,
            (Num::Int(v), false) => ConstGauge::new(v).encode(family)?,
            (Num::Float(v), false) => ConstGauge::new(v).encode(family)?,
        }
    }
    Ok(())
}

fn one(value: impl Into<Num>) -> Vec<(Labels<'static>, Num)> {
    vec![(Vec::new(), value.into())]
}

impl Snapshot {
    fn pools(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let pools = self.0.sources.pools.status();
        let labels = |p: &crate::pools::PoolStatus| {
            vec![("cluster", p.cluster.clone()), ("role", p.role.to_string())]
        };
        type Pick = fn(&crate::pools::PoolStatus) -> Num;
        let gauges: [(&str, &str, Pick); 7] = [
            ("pool_max_size", "Connections a pool may open", |p| {
                p.max_size.into()
            }),
            (
                "pool_max_active",
                "Connections a pool may use at once (clinic pools: clinic.max_active; the rest wait idle for their tenants)",
                |p| p.max_active.into(),
            ),
            ("pool_size", "Connections a pool has open", |p| {
                p.size.into()
            }),
            ("pool_in_use", "Connections in use", |p| p.in_use.into()),
            ("pool_available", "Idle connections", |p| p.available.into()),
            ("pool_waiting", "Requests waiting for a connection", |p| {
                p.waiting.into()
            }),
            (
                "pool_overloaded",
                "1 while the pool is overloaded: its queue stood, so waits are cut short",
                |p| p.overloaded.into(),
            ),
        ];
        for (name, help, pick) in gauges {
            let values: Vec<_> = pools.iter().map(|p| (labels(p), pick(p))).collect();
            family(encoder, name, help, false, &values)?;
        }
        let counters: [(&str, &str, Pick); 5] = [
            ("pool_connections_opened", "Connections opened", |p| {
                p.opened.into()
            }),
            (
                "pool_connections_retired",
                "Connections retired by age or uses",
                |p| p.retired.into(),
            ),
            (
                "pool_connections_broken",
                "Connections found closed when they came back (PostgreSQL restarted, backend killed)",
                |p| p.broken.into(),
            ),
            (
                "pool_connections_discarded",
                "Connections taken out mid-transaction or with changed session settings",
                |p| p.discarded.into(),
            ),
            (
                "pool_timeouts",
                "Waits for a connection that reached the pool's deadline",
                |p| p.timeouts.into(),
            ),
        ];
        for (name, help, pick) in counters {
            let values: Vec<_> = pools.iter().map(|p| (labels(p), pick(p))).collect();
            family(encoder, name, help, true, &values)?;
        }
        let affinity: Vec<_> = pools
            .iter()
            .filter_map(|p| Some((p, p.affinity?)))
            .flat_map(|(p, a)| {
                [("home", a.home), ("warm", a.warm), ("cold", a.cold)].map(|(served, n)| {
                    (
                        vec![
                            ("cluster", p.cluster.clone()),
                            ("served", served.to_string()),
                        ],
                        n.into(),
                    )
                })
            })
            .collect();
        family(
            encoder,
            "clinic_affinity",
            "Clinic requests by the connection that served them: one of their tenant's two homes, another that had served their schema (warm), or one new to it (cold)",
            true,
            &affinity,
        )?;
        let own_full: Vec<_> = pools
            .iter()
            .filter_map(|p| Some((labels(p), p.affinity?.own_statements_full.into())))
            .collect();
        family(
            encoder,
            "clinic_own_statements_full",
            "Clinic statements (reads, and those a write asks for as its own) run on one every tenant shares where they could have had their tenant's own: the connection's half of clinic.connection_max_statements for own statements was full",
            true,
            &own_full,
        )?;
        let schemas: Vec<_> = pools
            .iter()
            .filter_map(|p| Some((labels(p), p.schemas_per_connection?.max.into())))
            .collect();
        family(
            encoder,
            "pool_connection_schemas_max",
            "The most distinct tenant schemas one open clinic connection has served (clinic.connection_max_schemas bounds it)",
            false,
            &schemas,
        )?;
        let stats = self.0.sources.pools.admission_stats();
        let values: Vec<_> = [
            ("queue_full", stats.queue_full),
            ("deadline", stats.deadline),
            ("tenant_share", stats.tenant_share),
        ]
        .into_iter()
        .map(|(reason, v)| (vec![("reason", reason.to_string())], v.into()))
        .collect();
        family(
            encoder,
            "admission_rejections",
            "Clinic requests refused by admission, by reason",
            true,
            &values,
        )
    }

    fn caches(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let master = self.0.sources.master_cache.usage();
        let (keys, key_lookups, key_misses) = self.0.sources.keys.usage();
        let (forged, legacy) = self.0.sources.keys.refusals();
        let gauges: [(&str, &str, u64); 6] = [
            (
                "master_cache_entries",
                "Codes held in the master cache",
                master.entries,
            ),
            (
                "master_cache_bytes",
                "Approximate bytes held in the master cache",
                master.bytes,
            ),
            (
                "cache_budget_bytes",
                "The memory budget for caches (server.cache_memory_mb)",
                self.0.sources.cache_budget_bytes,
            ),
            ("key_cache_entries", "API keys held in the key cache", keys),
            (
                "legacy_keys",
                "Untagged API keys (issued before tags) that still work",
                legacy as u64,
            ),
            (
                "process_resident_bytes",
                "Resident memory of this process",
                resident_bytes(),
            ),
        ];
        for (name, help, value) in gauges {
            family(encoder, name, help, false, &one(value))?;
        }
        let counters: [(&str, &str, u64); 5] = [
            (
                "master_cache_hits",
                "Code lookups answered from the master cache",
                master.hits,
            ),
            (
                "master_cache_misses",
                "Code lookups read from the tenant's copy",
                master.misses,
            ),
            (
                "key_lookups",
                "API keys presented by clinic requests",
                key_lookups,
            ),
            (
                "key_cache_misses",
                "API keys read from the registry (not cached)",
                key_misses,
            ),
            (
                "forged_keys_refused",
                "API keys refused in memory, before the cache and the registry: a wrong tag or shape",
                forged,
            ),
        ];
        for (name, help, value) in counters {
            family(encoder, name, help, true, &one(value))?;
        }
        let door = &self.0.sources.door;
        let outcomes: Vec<_> = [
            (
                "answered",
                door.answered.load(std::sync::atomic::Ordering::Relaxed),
            ),
            (
                "dropped",
                door.dropped.load(std::sync::atomic::Ordering::Relaxed),
            ),
            ("cut", door.cut.load(std::sync::atomic::Ordering::Relaxed)),
        ]
        .into_iter()
        .map(|(outcome, n)| (vec![("outcome", outcome.to_string())], n.into()))
        .collect();
        family(
            encoder,
            "door_connections",
            "Clinic connections without a plausible key, handed to the door: answered there at the lowest priority, dropped unanswered because the door was full, or cut at its deadline",
            true,
            &outcomes,
        )
    }

    fn memory(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let bodies = &self.0.sources.clinic_bodies;
        let (reserved, budget) = bodies.usage();
        let gauges: [(&str, &str, u64); 3] = [
            (
                "memory_budget_bytes",
                "The memory this process may use (server.memory_mb); compare process_resident_bytes",
                self.0.sources.memory_budget_bytes,
            ),
            (
                "request_body_budget_bytes",
                "Space for clinic request bodies in flight (server.body_memory_mb)",
                budget as u64,
            ),
            (
                "request_body_reserved_bytes",
                "Space reserved now by clinic request bodies being read or handled",
                reserved as u64,
            ),
        ];
        for (name, help, value) in gauges {
            family(encoder, name, help, false, &one(value))?;
        }
        let counts = bodies.counts();
        let values: Vec<_> = [
            ("budget", &counts.refused_budget),
            ("tenant_share", &counts.refused_tenant),
            ("timeout", &counts.timed_out),
        ]
        .into_iter()
        .map(|(reason, v)| {
            (
                vec![("reason", reason.to_string())],
                v.load(std::sync::atomic::Ordering::Relaxed).into(),
            )
        })
        .collect();
        family(
            encoder,
            "request_bodies_refused",
            "Clinic request bodies refused before they were read (budget, tenant_share) or cut (timeout, 408)",
            true,
            &values,
        )
    }

    fn tenants(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        if self.0.sources.tenant_top == 0 {
            return Ok(());
        }
        let mut busiest: Vec<(Slug, TenantCounts)> = {
            let tally = self.0.tenants.lock().unwrap_or_else(|e| e.into_inner());
            tally.iter().map(|(k, v)| (k.clone(), *v)).collect()
        };
        busiest.sort_by(|a, b| {
            b.1.requests
                .cmp(&a.1.requests)
                .then(a.0.as_str().cmp(b.0.as_str()))
        });
        busiest.truncate(self.0.sources.tenant_top);
        type Pick = fn(&TenantCounts) -> Num;
        let counters: [(&str, &str, Pick); 3] = [
            (
                "tenant_requests",
                "Clinic requests of the busiest tenants (server.tenant_metrics_top)",
                |c| c.requests.into(),
            ),
            (
                "tenant_refused",
                "Clinic requests of the busiest tenants answered 429 or 503",
                |c| c.refused.into(),
            ),
            (
                "tenant_request_seconds",
                "Time spent serving the busiest tenants' clinic requests",
                |c| c.seconds.into(),
            ),
        ];
        for (name, help, pick) in counters {
            let values: Vec<_> = busiest
                .iter()
                .map(|(slug, c)| (vec![("tenant", slug.to_string())], pick(c)))
                .collect();
            family(encoder, name, help, true, &values)?;
        }
        Ok(())
    }

    fn progress(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let progress = self.0.progress.lock().unwrap_or_else(|e| e.into_inner());
        family(
            encoder,
            "control_reachable",
            "Whether the last read of the control schema for these metrics succeeded",
            false,
            &one(progress.read),
        )?;
        family(
            encoder,
            "tenant_schema_target",
            "The newest tenant migration this binary has",
            false,
            &one(crate::migrate::latest_tenant_version()),
        )?;
        if let Some(migrations) = &progress.migrations {
            let versions: Vec<_> = migrations
                .versions
                .iter()
                .map(|v| {
                    (
                        vec![("schema_version", v.version.to_string())],
                        v.tenants.into(),
                    )
                })
                .collect();
            family(
                encoder,
                "tenants_by_schema_version",
                "Tenants (not deleted) at each tenant migration",
                false,
                &versions,
            )?;
            if let Some(run) = &migrations.latest_run {
                let pending = run.tenants - run.current - run.migrated - run.failed;
                let states: Vec<_> = [
                    ("migrated", run.migrated),
                    ("current", run.current),
                    ("failed", run.failed),
                    ("pending", pending.max(0)),
                ]
                .into_iter()
                .map(|(state, n)| (vec![("state", state.to_string())], n.into()))
                .collect();
                family(
                    encoder,
                    "migration_run_tenants",
                    "Tenants of the latest migration run, by state",
                    false,
                    &states,
                )?;
                family(
                    encoder,
                    "migration_run_active",
                    "Whether the latest migration run is still going",
                    false,
                    &one(run.finished_at.is_none()),
                )?;
            }
        }
        if let Some((release, finished, counts)) = &progress.rollout {
            let states: Vec<_> = [
                ("pending", counts.pending),
                ("done", counts.done),
                ("skipped", counts.skipped),
                ("failed", counts.failed),
            ]
            .into_iter()
            .map(|(state, n)| {
                (
                    vec![("release", release.clone()), ("state", state.to_string())],
                    n.into(),
                )
            })
            .collect();
            family(
                encoder,
                "rollout_tenants",
                "Tenants of the latest master rollout, by state",
                false,
                &states,
            )?;
            family(
                encoder,
                "rollout_active",
                "Whether the latest master rollout is still going",
                false,
                &one(!*finished),
            )?;
        }
        Ok(())
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.pools(&mut encoder)?;
        self.caches(&mut encoder)?;
        self.memory(&mut encoder)?;
        self.tenants(&mut encoder)?;
        self.progress(&mut encoder)
    }
}

/// This process's resident set size, from /proc (0 where there is none).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}
