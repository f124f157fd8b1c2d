//! Settings: built-in defaults < a TOML file < `RECEPT__SECTION__KEY`
//! environment variables, then `validate()`.
//!
//! Every tunable has its default here, in the `Default` impls, and nowhere
//! else. This module knows nothing of actix or clap.
//!
//! Long on purpose: every section's settings, their defaults, their
//! validation and the memory budget's division sit together so that a
//! default is never stated twice.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Everything recept reads from its configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    /// The PostgreSQL clusters tenants may be placed on, by name.
    pub clusters: BTreeMap<String, ClusterSettings>,
    pub control: ControlSettings,
    pub clinic: ClinicSettings,
    pub admin: AdminSettings,
    pub migrate: MigrateSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Where clinics reach the `/v1` API.
    pub clinic_listen: String,
    /// Where admins reach `/admin`; loopback by default so it is never
    /// exposed by accident.
    pub admin_listen: String,
    /// Worker threads of the clinic listener; each has its own share of
    /// every clinic pool.
    pub workers: usize,
    /// Worker threads of the admin listener, kept apart from clinic workers.
    pub admin_workers: usize,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// How long in-flight requests may finish after a stop signal.
    pub shutdown_timeout_s: u64,
    /// Open the clinic listener with `SO_REUSEPORT`, so a new recept process
    /// can bind the same port before the old one stops (rolling restarts).
    pub reuse_port: bool,
    /// After a stop signal, how long the clinic listener keeps accepting
    /// while every response closes its connection, so that clients move to
    /// the process that shares the port before this one stops accepting.
    pub drain_ms: u64,
    /// How long a client may take to send a request's head; a slower one
    /// gets `408` and is disconnected.
    pub client_timeout_ms: u64,
    /// New connections the clinic listener starts a second at most, on
    /// average (split between its workers; 0: no bound). Past it they wait
    /// their turn, in order, so that a flood of new connections cannot take
    /// the CPU the connected clinics' requests (and a PostgreSQL on the same
    /// host) need. Requests on open connections are never held by it.
    pub new_connections_per_s: u32,
    /// `json` for machines, `pretty` for people.
    pub log_format: LogFormat,
    /// Memory for caches (master items), in MiB.
    pub cache_memory_mb: u64,
    /// The memory this process may use, in MiB: divided between its own
    /// working set, the caches, request bodies in flight and client
    /// connections ([`Settings::memory_budget`], shown by `recept
    /// check-config`); a division that does not fit refuses to start.
    pub memory_mb: u64,
    /// Request bodies in flight on the clinic listener, in MiB: a body is
    /// read only into space reserved here (twice its length, for the body
    /// and its parse); past it a request is refused with 503 before its
    /// body is read.
    pub body_memory_mb: u64,
    /// Longest a request body may take to arrive, from its first byte
    /// awaited; a slower one is cut with 408 and its memory freed.
    pub body_timeout_ms: u64,
    /// How many recept hosts share each cluster: the connection budget is
    /// this many times one host's pools.
    pub hosts_per_cluster: usize,
    /// Requests slower than this are logged as a warning naming the tenant
    /// and the route.
    pub slow_request_ms: u64,
    /// Per-tenant request series in `/metrics` for this many tenants, the
    /// busiest; 0 for none. Bounded so 10,000 tenants never mean 10,000
    /// series.
    pub tenant_metrics_top: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// A PostgreSQL URL (`postgres://user:password@host:port/database`).
    pub url: String,
    /// A streaming replica of this cluster (a hot standby) for the admin
    /// reports that read across tenants: the monthly report and tenant
    /// stats run there, on a pool of their own (`admin.replica_pool_size`),
    /// so they never take the primary's CPU, locks or connections. Clinic
    /// requests and admin writes always use `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlSettings {
    /// The cluster that holds the control schema (tenant registry, keys).
    pub cluster: String,
    /// Cluster of new tenants when none is named.
    pub default_cluster: Option<String>,
    /// How a new tenant's cluster is chosen when none is named:
    /// `default` (control.default_cluster) or `least-loaded` (the
    /// configured cluster holding the fewest tenants).
    pub placement: Placement,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    #[default]
    Default,
    LeastLoaded,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClinicSettings {
    /// Connections per cluster for clinic requests on this host, split
    /// between the clinic workers (at least one each). More than
    /// `max_active`, so that a tenant's request usually finds one of its homes
    /// connection idle (tenant-affine routing): each connection then
    /// serves a small, steady set of tenants, with their plans prepared.
    pub pool_size: usize,
    /// The most clinic requests of this host running at once on one
    /// cluster (at most `pool_size`), split between the clinic workers:
    /// the cluster's capacity for this host. The other connections wait
    /// idle, each for its own tenants.
    pub max_active: usize,
    /// `statement_timeout` fixed on every clinic connection when it opens.
    pub statement_timeout_ms: u64,
    /// Longest a clinic request waits for a connection before `503`.
    pub queue_timeout_ms: u64,
    /// The interval over which a queue is judged: when every clinic
    /// request served during it waited at least `overload_queue_timeout_ms`
    /// (or none was served while some waited), the queue is standing and
    /// the cluster overloaded, not merely busy. Overload ends once nobody
    /// was refused for as long.
    pub standing_queue_ms: u64,
    /// Longest a clinic request waits for a connection while the cluster is
    /// overloaded (one waiter per connection). Short, so that the requests
    /// served are served promptly and the rest are refused at once (CoDel's
    /// idea); also the wait that makes a queue standing.
    pub overload_queue_timeout_ms: u64,
    /// The most clinic requests that may wait for a connection of one
    /// cluster (split between the clinic workers, rounded up); past it a
    /// request is refused with 503 at once.
    pub max_waiting: usize,
    /// The most clinic requests of one tenant that may hold or wait for a
    /// connection at once; past it that tenant gets 429.
    pub tenant_max_in_flight: usize,
    /// A clinic connection older than this is closed instead of reused
    /// (bounds each backend's catalog cache of tenant schemas).
    pub connection_max_age_s: u64,
    /// A clinic connection used this many times is closed instead of reused.
    pub connection_max_uses: usize,
    /// A clinic connection is retired before it serves more than this
    /// many distinct tenant schemas: each backend caches the catalog and
    /// plans of every schema it touched (about 80 KiB each once read,
    /// about 180 KiB once visits were entered too), so this bounds its
    /// memory whatever the traffic: the default, 256, to about 55 MiB
    /// with the own statements `connection_max_statements` allows.
    /// It is above what a connection meets with a thousand tenants (about
    /// 130), and at ten thousand, where a connection's schemas are mostly
    /// cold anyway, retiring costs no throughput (load/RESULTS.md, "Ten
    /// thousand tenants"). A bound below the home tenants a connection
    /// has retires connections often, and reconnecting costs more than
    /// the memory saves ("Tenant-affine connections" there). 0 sets no
    /// bound (a connection is still retired by age and by uses).
    pub connection_max_schemas: usize,
    /// The most prepared statements one clinic connection keeps. A tenant
    /// served on one of its home connections has statements of its own there,
    /// planned for its schema (PostgreSQL plans a shared statement again
    /// whenever the schema changes): its reads, and the two reads of
    /// entering a visit (three a tenant, so 384 leaves room for the 62 home
    /// tenants a connection has with a thousand tenants on the default
    /// pool). Own statements take at most half: once
    /// a connection holds that many, the tenants it meets next use the
    /// shared statements there, and those it gave its own keep them (with
    /// more home tenants than that, forgetting some to make room would
    /// prepare again on every read). A connection that reaches this many in
    /// all forgets them all and prepares again, which bounds what its
    /// backend holds for them.
    pub connection_max_statements: usize,
    /// How long a clinic statement waits for a row lock (an Idempotency-Key
    /// in use, a rollout in progress) before giving up.
    pub lock_timeout_ms: u64,
    /// How long a resolved API key is trusted before it is looked up again;
    /// bounds how long a revoked key keeps working on other hosts.
    pub key_cache_ttl_ms: u64,
    /// Most API keys held in the key cache.
    pub key_cache_capacity: u64,
    /// How long an `Idempotency-Key` is remembered: a retry within it
    /// replays the first response; after it the key may be used afresh.
    pub idempotency_ttl_s: u64,
    /// The secret API keys are tagged under (an HMAC of each key's random
    /// part), shared by every recept host: a key whose tag is wrong is
    /// refused in memory, with no registry read. Required to serve; at
    /// least 32 characters.
    pub key_secret: String,
    /// During a rotation of `key_secret`, the secret it replaces: keys
    /// tagged under it keep working until this is removed.
    pub previous_key_secret: Option<String>,
    /// Whether keys issued before keys were tagged still work. They are
    /// recognised by hash among the unrevoked ones, held in memory; turn
    /// this off once every clinic has a tagged key.
    pub accept_legacy_keys: bool,
    /// Connections to the control cluster for reading API keys not in the
    /// key cache: a lane of their own, so that a flood of unknown keys
    /// never takes a clinic connection.
    pub key_lookup_pool_size: usize,
    /// The most key reads that may wait for a key-lookup connection; past
    /// it a request with an uncached key is refused with 503 at once.
    pub key_lookup_max_waiting: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigrateSettings {
    /// Connections per cluster for tenant migrations: also how many tenants
    /// migrate at once by default.
    pub pool_size: usize,
    /// How long a migration waits for a lock (a busy table) before it gives
    /// up, so it never blocks clinic traffic for long; it is then retried.
    pub lock_timeout_ms: u64,
    /// `statement_timeout` of migration connections.
    pub statement_timeout_ms: u64,
    /// How many times a tenant whose migration hit the lock timeout is tried again.
    pub retries: u32,
}

impl Default for MigrateSettings {
    fn default() -> Self {
        Self {
            pool_size: 2,
            lock_timeout_ms: 500,
            statement_timeout_ms: 300_000,
            retries: 5,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Connections per cluster for admin requests on this host.
    pub pool_size: usize,
    /// `statement_timeout` fixed on every admin connection when it opens.
    pub statement_timeout_ms: u64,
    /// Longest an admin request waits for a connection.
    pub queue_timeout_ms: u64,
    /// The bearer token admins present. Required to serve.
    pub token: String,
    /// Largest master release CSV accepted over HTTP, in bytes. One is read
    /// at a time, into space of the memory budget (twice this).
    pub release_limit_bytes: usize,
    /// Connections per cluster replica (`clusters.<name>.replica_url`) for
    /// admin reports on this host; counted against the replica's
    /// `max_connections`.
    pub replica_pool_size: usize,
    /// `statement_timeout` fixed on every replica connection when it opens:
    /// a report on the replica takes no clinic's CPU, so it may run longer
    /// than one on the primary.
    pub replica_statement_timeout_ms: u64,
    /// The most a replica may trail its primary for a report to be served
    /// from it: past this, `admin.replica_behind` decides.
    pub max_replica_lag_ms: u64,
    /// What a report does when the replica trails by more than
    /// `admin.max_replica_lag_ms` or cannot be reached: `refuse` (503 with
    /// `Retry-After`; the primary is never touched) or `primary` (run on
    /// the primary's admin pool, saying so in the report).
    pub replica_behind: ReplicaBehind,
}

/// What an admin report does when its cluster's replica cannot give a
/// fresh enough answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaBehind {
    /// Answer 503 with `Retry-After`: the primary is kept for clinics.
    #[default]
    Refuse,
    /// Run the report on the primary's admin pool.
    Primary,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            clinic_listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:8081".into(),
            workers: 2,
            admin_workers: 1,
            body_limit_bytes: 256 * 1024,
            shutdown_timeout_s: 10,
            reuse_port: false,
            drain_ms: 0,
            client_timeout_ms: 5_000,
            new_connections_per_s: 3_000,
            log_format: LogFormat::Pretty,
            cache_memory_mb: 64,
            memory_mb: 256,
            body_memory_mb: 32,
            body_timeout_ms: 10_000,
            hosts_per_cluster: 1,
            slow_request_ms: 1_000,
            tenant_metrics_top: 10,
        }
    }
}

impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            cluster: "main".into(),
            default_cluster: None,
            placement: Placement::Default,
        }
    }
}

impl Default for ClinicSettings {
    fn default() -> Self {
        Self {
            pool_size: 64,
            max_active: 16,
            statement_timeout_ms: 5_000,
            queue_timeout_ms: 200,
            standing_queue_ms: 100,
            overload_queue_timeout_ms: 5,
            max_waiting: 64,
            tenant_max_in_flight: 8,
            connection_max_age_s: 600,
            connection_max_uses: 20_000,
            connection_max_schemas: 256,
            connection_max_statements: 384,
            lock_timeout_ms: 2_000,
            key_cache_ttl_ms: 3_000,
            key_cache_capacity: 100_000,
            idempotency_ttl_s: 24 * 60 * 60,
            key_secret: String::new(),
            previous_key_secret: None,
            accept_legacy_keys: true,
            key_lookup_pool_size: 2,
            key_lookup_max_waiting: 32,
        }
    }
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            pool_size: 4,
            statement_timeout_ms: 30_000,
            queue_timeout_ms: 2_000,
            token: String::new(),
            release_limit_bytes: 16 * 1024 * 1024,
            replica_pool_size: 2,
            replica_statement_timeout_ms: 120_000,
            max_replica_lag_ms: 10_000,
            replica_behind: ReplicaBehind::Refuse,
        }
    }
}

/// Memory the process needs besides what the budget divides: the runtime,
/// worker threads' stacks, pools, the key cache and legacy keys, the
/// allocator's slack (measured idle: about 30 MiB).
pub const BASE_MEMORY_MB: u64 = 48;
/// What one open client connection may hold at worst: actix-http reads
/// from a socket until its buffer holds 128 KiB, hands up to 32 KiB of a
/// body to the request waiting for it, and writes the response from a
/// buffer of its own (measured: a flood of connections sending 250 KB
/// bodies held about 175 KiB each; see load/RESULTS.md, `hostile`).
pub const CONNECTION_MEMORY_KB: u64 = 176;
/// Strangers' connections the clinic listener's door answers at once
/// (`http::door`), each held like any open connection.
pub const DOOR_CONNECTIONS: u64 = 64;
/// Strangers' connections waiting for the door, each holding at most its
/// first head.
pub const DOOR_QUEUE: u64 = 256;
/// The most of a first head read before the server sees it
/// (`http::first_head`); past it the head is the server's parser's to
/// refuse (actix-http allows 32 KiB).
pub const HEAD_LIMIT_BYTES: u64 = 16 * 1024;
/// What the door may hold at worst.
pub const DOOR_MEMORY_BYTES: u64 =
    DOOR_CONNECTIONS * CONNECTION_MEMORY_KB * 1024 + DOOR_QUEUE * HEAD_LIMIT_BYTES;
/// Client connections the admin listener keeps open at most.
pub const ADMIN_MAX_CONNECTIONS: u64 = 64;
/// Fewest client connections each clinic worker must be able to hold.
pub const MIN_CONNECTIONS_PER_WORKER: u64 = 64;

/// How `server.memory_mb` is divided, in bytes (see [`Settings::memory_budget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryBudget {
    pub total: u64,
    /// The process's own working set ([`BASE_MEMORY_MB`]).
    pub base: u64,
    /// The master-item cache (`server.cache_memory_mb`).
    pub caches: u64,
    /// Clinic request bodies in flight (`server.body_memory_mb`).
    pub bodies: u64,
    /// One master release upload and its parse (twice `admin.release_limit_bytes`).
    pub admin_bodies: u64,
    /// Strangers' connections at the clinic listener's door
    /// ([`DOOR_MEMORY_BYTES`]).
    pub door: u64,
    /// What is left, for client connections.
    pub connections: u64,
    /// Open client connections each clinic worker may hold; past it a
    /// worker stops accepting and new connections wait in the kernel.
    pub clinic_connections_per_worker: u64,
    pub admin_connections: u64,
}

impl MemoryBudget {
    /// The division, one line per part, in MiB.
    pub fn describe(&self) -> String {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        format!(
            "memory budget (server.memory_mb {:.0} MiB): base {:.0} + caches {:.0} (server.cache_memory_mb) \
             + request bodies {:.0} (server.body_memory_mb) + release upload {:.0} (2 x admin.release_limit_bytes) \
             + door {:.0} ({DOOR_CONNECTIONS} strangers' connections + {DOOR_QUEUE} waiting) \
             + connections {:.1} ({} per clinic worker + {} admin, {} KiB each)",
            mib(self.total),
            mib(self.base),
            mib(self.caches),
            mib(self.bodies),
            mib(self.admin_bodies),
            mib(self.door),
            mib(self.connections),
            self.clinic_connections_per_worker,
            self.admin_connections,
            CONNECTION_MEMORY_KB
        )
    }
}

/// Why a configuration was refused, in the operator's words.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {message}")]
    File { path: String, message: String },
    #[error("configuration: {0}")]
    Source(String),
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

impl Settings {
    /// Reads defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let defaults = config::Config::try_from(&Settings::default())
            .map_err(|e| ConfigError::Source(e.to_string()))?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::File {
                    path: path.display().to_string(),
                    message: "no such file".into(),
                });
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("RECEPT")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        let built = builder.build().map_err(|e| match file {
            Some(path) => ConfigError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            },
            None => ConfigError::Source(e.to_string()),
        })?;
        built
            .try_deserialize::<Settings>()
            .map_err(|e| ConfigError::Source(e.to_string()))
    }

    /// Checks everything that can be checked without a database.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("server.clinic_listen", &self.server.clinic_listen),
            ("server.admin_listen", &self.server.admin_listen),
        ] {
            value.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    key,
                    format!("`{value}` is not an address such as 127.0.0.1:8080"),
                )
            })?;
        }
        if self.server.clinic_listen == self.server.admin_listen
            && !self.server.clinic_listen.ends_with(":0")
        {
            return Err(invalid(
                "server.admin_listen",
                "must differ from server.clinic_listen: admin routes have their own listener",
            ));
        }
        at_least("server.workers", self.server.workers as u64, 1)?;
        at_least("server.admin_workers", self.server.admin_workers as u64, 1)?;
        at_least(
            "server.body_limit_bytes",
            self.server.body_limit_bytes as u64,
            1024,
        )?;
        at_least("clinic.pool_size", self.clinic.pool_size as u64, 1)?;
        if self.clinic.pool_size < self.server.workers {
            return Err(invalid(
                "clinic.pool_size",
                format!(
                    "is {} but must be at least server.workers ({}): each clinic worker has its own share of the pool",
                    self.clinic.pool_size, self.server.workers
                ),
            ));
        }
        at_least("clinic.max_active", self.clinic.max_active as u64, 1)?;
        if self.clinic.max_active.min(self.clinic.pool_size) < self.server.workers {
            return Err(invalid(
                "clinic.max_active",
                format!(
                    "is {} but must be at least server.workers ({}): each clinic worker runs its own share of it",
                    self.clinic.max_active, self.server.workers
                ),
            ));
        }
        at_least(
            "clinic.connection_max_statements",
            self.clinic.connection_max_statements as u64,
            16,
        )?;
        at_least("admin.pool_size", self.admin.pool_size as u64, 1)?;
        at_least(
            "clinic.statement_timeout_ms",
            self.clinic.statement_timeout_ms,
            1,
        )?;
        at_least(
            "admin.statement_timeout_ms",
            self.admin.statement_timeout_ms,
            1,
        )?;
        at_least("clinic.queue_timeout_ms", self.clinic.queue_timeout_ms, 1)?;
        at_least("admin.queue_timeout_ms", self.admin.queue_timeout_ms, 1)?;
        at_least("clinic.standing_queue_ms", self.clinic.standing_queue_ms, 1)?;
        at_least(
            "clinic.overload_queue_timeout_ms",
            self.clinic.overload_queue_timeout_ms,
            1,
        )?;
        if self.clinic.overload_queue_timeout_ms > self.clinic.queue_timeout_ms {
            return Err(invalid(
                "clinic.overload_queue_timeout_ms",
                "must be at most clinic.queue_timeout_ms: it is the shorter wait used under overload",
            ));
        }
        at_least(
            "clinic.key_cache_capacity",
            self.clinic.key_cache_capacity,
            1,
        )?;
        if self.clinic.key_cache_ttl_ms > 10_000 {
            return Err(invalid(
                "clinic.key_cache_ttl_ms",
                "must be at most 10000: a revoked key must stop working within seconds",
            ));
        }
        if self.clusters.is_empty() {
            return Err(invalid(
                "clusters",
                "no cluster is configured; add clusters.<name>.url (or run `recept dev`)",
            ));
        }
        for (name, cluster) in &self.clusters {
            let key = format!("clusters.{name}.url");
            if !cluster.url.starts_with("postgres://") && !cluster.url.starts_with("postgresql://")
            {
                return Err(invalid(key, "must be a postgres:// URL"));
            }
            cluster
                .url
                .parse::<tokio_postgres::Config>()
                .map_err(|e| invalid(key, format!("is not a valid PostgreSQL URL: {e}")))?;
            if let Some(replica) = &cluster.replica_url {
                let key = format!("clusters.{name}.replica_url");
                if !replica.starts_with("postgres://") && !replica.starts_with("postgresql://") {
                    return Err(invalid(key, "must be a postgres:// URL"));
                }
                replica
                    .parse::<tokio_postgres::Config>()
                    .map_err(|e| invalid(&key, format!("is not a valid PostgreSQL URL: {e}")))?;
                if *replica == cluster.url {
                    return Err(invalid(
                        key,
                        "must name the replica, not the primary (clusters.<name>.url)",
                    ));
                }
            }
        }
        if self.clusters.values().any(|c| c.replica_url.is_some()) {
            at_least(
                "admin.replica_pool_size",
                self.admin.replica_pool_size as u64,
                1,
            )?;
            at_least(
                "admin.replica_statement_timeout_ms",
                self.admin.replica_statement_timeout_ms,
                1,
            )?;
        }
        if !self.clusters.contains_key(&self.control.cluster) {
            return Err(invalid(
                "control.cluster",
                format!(
                    "names `{}`, which is not among the configured clusters ({})",
                    self.control.cluster,
                    self.cluster_names()
                ),
            ));
        }
        if let Some(default) = &self.control.default_cluster {
            if !self.clusters.contains_key(default) {
                return Err(invalid(
                    "control.default_cluster",
                    format!("names `{default}`, which is not a configured cluster"),
                ));
            }
        }
        if self.admin.token.len() < 16 {
            return Err(invalid(
                "admin.token",
                "must be set to a secret of at least 16 characters (RECEPT__ADMIN__TOKEN)",
            ));
        }
        at_least("server.body_timeout_ms", self.server.body_timeout_ms, 1)?;
        at_least("server.body_memory_mb", self.server.body_memory_mb, 1)?;
        if (self.server.body_memory_mb * 1024 * 1024) < 2 * self.server.body_limit_bytes as u64 {
            return Err(invalid(
                "server.body_memory_mb",
                format!(
                    "must hold at least one largest body twice over (2 x server.body_limit_bytes = {} bytes)",
                    2 * self.server.body_limit_bytes
                ),
            ));
        }
        if self.memory_budget().is_none() {
            return Err(invalid(
                "server.memory_mb",
                format!(
                    "is {} MiB, which does not fit {BASE_MEMORY_MB} MiB for the process + server.cache_memory_mb {} \
                     + server.body_memory_mb {} + 2 x admin.release_limit_bytes ({} MiB) + {} MiB for the door + {} connections of \
                     {CONNECTION_MEMORY_KB} KiB ({MIN_CONNECTIONS_PER_WORKER} per clinic worker, server.workers {}, \
                     and {ADMIN_MAX_CONNECTIONS} admin); raise it or lower the parts",
                    self.server.memory_mb,
                    self.server.cache_memory_mb,
                    self.server.body_memory_mb,
                    2 * self.admin.release_limit_bytes as u64 / (1024 * 1024),
                    DOOR_MEMORY_BYTES.div_ceil(1024 * 1024),
                    MIN_CONNECTIONS_PER_WORKER * self.server.workers as u64 + ADMIN_MAX_CONNECTIONS,
                    self.server.workers
                ),
            ));
        }
        if self.clinic.key_secret.len() < 32 {
            return Err(invalid(
                "clinic.key_secret",
                "must be set to a secret of at least 32 characters, the same on every host (RECEPT__CLINIC__KEY_SECRET)",
            ));
        }
        if let Some(previous) = &self.clinic.previous_key_secret {
            if previous.len() < 32 || *previous == self.clinic.key_secret {
                return Err(invalid(
                    "clinic.previous_key_secret",
                    "must be the secret clinic.key_secret replaced: at least 32 characters, and different",
                ));
            }
        }
        at_least(
            "clinic.key_lookup_pool_size",
            self.clinic.key_lookup_pool_size as u64,
            1,
        )?;
        at_least(
            "clinic.key_lookup_max_waiting",
            self.clinic.key_lookup_max_waiting as u64,
            1,
        )?;
        Ok(())
    }

    /// How `server.memory_mb` is divided: the process's own working set,
    /// the caches, bodies in flight, one release upload, and what is left
    /// for client connections; `None` when the parts do not leave each
    /// clinic worker [`MIN_CONNECTIONS_PER_WORKER`] connections.
    pub fn memory_budget(&self) -> Option<MemoryBudget> {
        const MIB: u64 = 1024 * 1024;
        let total = self.server.memory_mb.saturating_mul(MIB);
        let base = BASE_MEMORY_MB * MIB;
        let caches = self.server.cache_memory_mb.saturating_mul(MIB);
        let bodies = self.server.body_memory_mb.saturating_mul(MIB);
        let admin_bodies = 2 * self.admin.release_limit_bytes as u64;
        let door = DOOR_MEMORY_BYTES;
        let connections = total.checked_sub(base + caches + bodies + admin_bodies + door)?;
        let per_connection = CONNECTION_MEMORY_KB * 1024;
        let clinic = (connections / per_connection).checked_sub(ADMIN_MAX_CONNECTIONS)?;
        let per_worker = clinic / self.server.workers.max(1) as u64;
        (per_worker >= MIN_CONNECTIONS_PER_WORKER).then_some(MemoryBudget {
            total,
            base,
            caches,
            bodies,
            admin_bodies,
            door,
            connections,
            clinic_connections_per_worker: per_worker,
            admin_connections: ADMIN_MAX_CONNECTIONS,
        })
    }

    /// The cluster new tenants go to when none is named.
    pub fn default_cluster(&self) -> &str {
        self.control
            .default_cluster
            .as_deref()
            .unwrap_or(&self.control.cluster)
    }

    fn cluster_names(&self) -> String {
        self.clusters.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// The effective settings with secrets masked, for the start-up log.
    pub fn redacted(&self) -> Settings {
        let mut copy = self.clone();
        copy.admin.token = "***".into();
        copy.clinic.key_secret = "***".into();
        if let Some(previous) = &mut copy.clinic.previous_key_secret {
            *previous = "***".into();
        }
        for cluster in copy.clusters.values_mut() {
            cluster.url = redact_url(&cluster.url);
            if let Some(replica) = &mut cluster.replica_url {
                *replica = redact_url(replica);
            }
        }
        copy
    }
}

fn at_least(key: &str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value < min {
        return Err(invalid(
            key,
            format!("must be at least {min} (got {value})"),
        ));
    }
    Ok(())
}

/// Masks the password of a PostgreSQL URL.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Settings {
        let mut s = Settings::default();
        s.clusters.insert(
            "main".into(),
            ClusterSettings {
                url: "postgres://u:secret@127.0.0.1:5432/recept".into(),
                replica_url: None,
            },
        );
        s.admin.token = "0123456789abcdef".into();
        s.clinic.key_secret = "0123456789abcdef0123456789abcdef".into();
        s
    }

    #[test]
    fn defaults_with_a_cluster_and_token_are_valid() {
        valid().validate().unwrap();
    }

    #[test]
    fn a_missing_control_cluster_is_named() {
        let mut s = valid();
        s.control.cluster = "other".into();
        let message = s.validate().unwrap_err().to_string();
        assert!(message.contains("control.cluster"), "{message}");
    }

    #[test]
    fn a_replica_url_must_be_a_postgres_url_other_than_the_primary() {
        let mut s = valid();
        let main = s.clusters.get_mut("main").unwrap();
        main.replica_url = Some(main.url.clone());
        let message = s.validate().unwrap_err().to_string();
        assert!(message.contains("clusters.main.replica_url"), "{message}");
        assert!(message.contains("not the primary"), "{message}");
        s.clusters.get_mut("main").unwrap().replica_url = Some("mysql://replica/recept".into());
        let message = s.validate().unwrap_err().to_string();
        assert!(message.contains("postgres:// URL"), "{message}");
        s.clusters.get_mut("main").unwrap().replica_url =
            Some("postgres://u:hidden@10.0.0.2:5432/recept".into());
        s.validate().unwrap();
        let shown = toml::to_string(&s.redacted()).unwrap();
        assert!(
            !shown.contains("hidden") && shown.contains("10.0.0.2"),
            "{shown}"
        );
        s.admin.replica_pool_size = 0;
        let message = s.validate().unwrap_err().to_string();
        assert!(message.contains("admin.replica_pool_size"), "{message}");
    }

    #[test]
    fn a_zero_pool_is_named() {
        let mut s = valid();
        s.clinic.pool_size = 0;
        let message = s.validate().unwrap_err().to_string();
        assert!(message.contains("clinic.pool_size"), "{message}");
    }

    #[test]
    fn a_clinic_pool_smaller_than_the_workers_is_named() {
        let mut s = valid();
        s.server.workers = 4;
        s.clinic.pool_size = 3;
        let message = s.validate().unwrap_err().to_string();
        assert!(
            message.contains("clinic.pool_size") && message.contains("server.workers (4)"),
            "{message}"
        );
        s.clinic.pool_size = 4;
        assert!(s.validate().is_ok());
    }

    #[test]
    fn fewer_active_connections_than_workers_or_too_few_statements_are_named() {
        let mut s = valid();
        s.server.workers = 4;
        s.clinic.max_active = 3;
        let message = s.validate().unwrap_err().to_string();
        assert!(
            message.contains("clinic.max_active") && message.contains("server.workers (4)"),
            "{message}"
        );
        s.clinic.max_active = 4;
        assert!(s.validate().is_ok());
        s.clinic.connection_max_statements = 8;
        let message = s.validate().unwrap_err().to_string();
        assert!(
            message.contains("clinic.connection_max_statements"),
            "{message}"
        );
    }

    #[test]
    fn an_overload_wait_longer_than_the_normal_wait_is_named() {
        let mut s = valid();
        s.clinic.queue_timeout_ms = 50;
        s.clinic.overload_queue_timeout_ms = 100;
        let message = s.validate().unwrap_err().to_string();
        assert!(
            message.contains("clinic.overload_queue_timeout_ms"),
            "{message}"
        );
        s.clinic.overload_queue_timeout_ms = 50;
        assert!(s.validate().is_ok());
    }

    #[test]
    fn a_short_admin_token_is_refused() {
        let mut s = valid();
        s.admin.token = "short".into();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("admin.token"));
    }

    #[test]
    fn a_short_or_repeated_key_secret_is_refused() {
        let mut s = valid();
        s.clinic.key_secret = "short".into();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("clinic.key_secret"));
        let mut s = valid();
        s.clinic.previous_key_secret = Some(s.clinic.key_secret.clone());
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("clinic.previous_key_secret"));
        s.clinic.previous_key_secret = Some("another secret of thirty-two characters".into());
        assert!(s.validate().is_ok());
    }

    #[test]
    fn secrets_are_masked_in_the_logged_settings() {
        let mut s = valid();
        s.clinic.previous_key_secret = Some("another secret of thirty-two characters".into());
        let shown = format!("{:?}", s.redacted());
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(!shown.contains("another secret"), "{shown}");
    }

    #[test]
    fn the_default_memory_budget_divides_256_mib() {
        let budget = valid().memory_budget().unwrap();
        assert_eq!(budget.total, 256 * 1024 * 1024);
        assert_eq!(
            budget.base
                + budget.caches
                + budget.bodies
                + budget.admin_bodies
                + budget.door
                + budget.connections,
            budget.total
        );
        let connections = budget.clinic_connections_per_worker * 2 + budget.admin_connections;
        assert!(connections * CONNECTION_MEMORY_KB * 1024 <= budget.connections);
        assert!(budget.clinic_connections_per_worker >= MIN_CONNECTIONS_PER_WORKER);
    }

    #[test]
    fn a_memory_budget_whose_parts_do_not_fit_is_named() {
        let mut s = valid();
        s.server.memory_mb = 128;
        let message = s.validate().unwrap_err().to_string();
        assert!(message.contains("server.memory_mb"), "{message}");
        s.server.memory_mb = 192;
        s.server.cache_memory_mb = 16;
        assert!(s.validate().is_ok(), "{:?}", s.validate());
        s.server.body_memory_mb = 0;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("server.body_memory_mb"));
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            redact_url("postgres://u:secret@h:1/db"),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    }
}
