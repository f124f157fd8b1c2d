//! A migration run across tenants: bounded parallelism, one transaction per
//! tenant, a ledger in the control schema, resumable, one run at a time.
//!
//! Just past 400 lines: the ledger, the run lock, the canary and the
//! per-tenant retries belong to one run; the loop itself is `walk`'s.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use refinery_core::Runner;
use serde::Serialize;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::{migrate_in_transaction, prepare_control, tenant_runner, MigrateError};
use crate::names::Slug;
use crate::pools::{DbError, Pools, Role};
use crate::walk::each_tenant;

/// Advisory-lock key held (session-level, on a connection taken out of its
/// pool for the run) while a migration run is under way.
const RUN_LOCK: i64 = 0x7265_6365_7074_0002;

/// The tenant migrations a run applies: the embedded ones, or (for tests and
/// benchmarks) those plus more.
pub struct MigrationSet {
    runner: Runner,
    target: i32,
}

impl MigrationSet {
    /// The migrations in `migrations/tenant/`, as built into this binary.
    pub fn embedded() -> MigrationSet {
        MigrationSet::from_runner(tenant_runner())
    }

    /// The embedded migrations plus `extra` (`V{n}__{name}`, SQL).
    pub fn with_extra(extra: &[(&str, &str)]) -> anyhow::Result<MigrationSet> {
        let mut migrations = tenant_runner().get_migrations().clone();
        for (name, sql) in extra {
            migrations.push(refinery_core::Migration::unapplied(name, sql)?);
        }
        Ok(MigrationSet::from_runner(Runner::new(&migrations)))
    }

    fn from_runner(runner: Runner) -> MigrationSet {
        let target = runner
            .get_migrations()
            .iter()
            .map(|m| m.version() as i32)
            .max()
            .unwrap_or(0);
        MigrationSet { runner, target }
    }

    /// The version every tenant ends at.
    pub fn target(&self) -> i32 {
        self.target
    }
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Only these tenants; every tenant that is not deleted when empty.
    pub tenants: Vec<Slug>,
    /// Tenants migrated at once (at most the migration pool's size).
    pub concurrency: usize,
    /// Report what would be migrated and change nothing.
    pub dry_run: bool,
    /// Migrate this tenant first and stop if it fails.
    pub canary: Option<Slug>,
    /// Extra attempts for a tenant whose migration hit the lock timeout.
    pub retries: u32,
}

/// What happened to one tenant.
#[derive(Debug, Clone, Serialize)]
pub struct TenantOutcome {
    pub slug: String,
    /// `migrated`, `current`, `failed` or (dry run) `pending`.
    pub state: &'static str,
    pub version_before: i32,
    pub version_after: i32,
    pub attempts: u32,
    pub duration_ms: f64,
    pub error: Option<String>,
}

/// Progress as a run goes.
pub enum Event<'a> {
    /// The run starts: `pending` tenants to migrate, `current` skipped.
    Planned {
        pending: usize,
        current: usize,
    },
    Tenant(&'a TenantOutcome),
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// `None` for a dry run, which records nothing.
    pub run_id: Option<Uuid>,
    pub target_version: i32,
    pub migrated: usize,
    pub current: usize,
    pub pending: usize,
    pub failed: Vec<TenantOutcome>,
    pub elapsed_s: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("another migration run is in progress; wait for it to finish")]
    AlreadyRunning,
    #[error("no tenant(s) {0}")]
    UnknownTenants(String),
    #[error("the canary tenant {slug} failed, nothing else was migrated: {error}")]
    CanaryFailed { slug: String, error: String },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Setup(#[from] anyhow::Error),
}

impl From<tokio_postgres::Error> for RunError {
    fn from(e: tokio_postgres::Error) -> Self {
        RunError::Db(e.into())
    }
}

/// A tenant as the run sees it.
#[derive(Clone)]
struct Target {
    id: Uuid,
    slug: String,
    cluster: String,
    schema: String,
    version: i32,
}

/// Brings the control schema, then the chosen tenants, to `set`'s version.
pub async fn run(
    pools: &Pools,
    set: &MigrationSet,
    options: &RunOptions,
    on_event: impl Fn(Event<'_>),
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    prepare_control(pools).await?;
    // The run's own control connection: it holds the run lock and writes
    // the ledger; it never returns to the pool.
    let control = Object::take(pools.control(Role::Migration).await?);
    let targets = select(&control, &options.tenants).await?;
    let (current, mut pending): (Vec<Target>, Vec<Target>) =
        targets.into_iter().partition(|t| t.version >= set.target);
    let mut summary = RunSummary {
        run_id: None,
        target_version: set.target,
        migrated: 0,
        current: current.len(),
        pending: 0,
        failed: Vec::new(),
        elapsed_s: 0.0,
    };
    if options.dry_run {
        summary.pending = pending.len();
        on_event(Event::Planned {
            pending: pending.len(),
            current: current.len(),
        });
        for t in &pending {
            on_event(Event::Tenant(&TenantOutcome {
                slug: t.slug.clone(),
                state: "pending",
                version_before: t.version,
                version_after: set.target,
                attempts: 0,
                duration_ms: 0.0,
                error: None,
            }));
        }
        summary.elapsed_s = started.elapsed().as_secs_f64();
        return Ok(summary);
    }

    let locked: bool = control
        .query_one("SELECT pg_try_advisory_lock($1)", &[&RUN_LOCK])
        .await?
        .get(0);
    if !locked {
        return Err(RunError::AlreadyRunning);
    }
    let run_id = Uuid::now_v7();
    summary.run_id = Some(run_id);
    control
        .execute(
            "INSERT INTO recept.migration_runs (id, target_version, tenants, current) \
             VALUES ($1, $2, $3, $4)",
            &[
                &run_id,
                &set.target,
                &((pending.len() + current.len()) as i32),
                &(current.len() as i32),
            ],
        )
        .await?;
    on_event(Event::Planned {
        pending: pending.len(),
        current: current.len(),
    });

    if let Some(canary) = &options.canary {
        if let Some(at) = pending.iter().position(|t| t.slug == canary.as_str()) {
            let target = pending.remove(at);
            let outcome =
                migrate_tenant(pools, &control, set, &target, run_id, options.retries).await;
            on_event(Event::Tenant(&outcome));
            if let Some(error) = &outcome.error {
                finish(&control, run_id, 0, 1).await?;
                return Err(RunError::CanaryFailed {
                    slug: outcome.slug.clone(),
                    error: error.clone(),
                });
            }
            summary.migrated += 1;
        }
    }

    each_tenant(
        pending,
        options.concurrency,
        |target| {
            let control = &control;
            async move { migrate_tenant(pools, control, set, &target, run_id, options.retries).await }
        },
        |outcome| {
            on_event(Event::Tenant(&outcome));
            if outcome.error.is_some() {
                summary.failed.push(outcome);
            } else {
                summary.migrated += 1;
            }
        },
    )
    .await;
    finish(&control, run_id, summary.migrated, summary.failed.len()).await?;
    summary.elapsed_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

async fn finish(
    control: &tokio_postgres::Client,
    run: Uuid,
    migrated: usize,
    failed: usize,
) -> Result<(), DbError> {
    control
        .execute(
            "UPDATE recept.migration_runs SET finished_at = now(), migrated = $2, failed = $3 \
             WHERE id = $1",
            &[&run, &(migrated as i32), &(failed as i32)],
        )
        .await?;
    control
        .execute("SELECT pg_advisory_unlock($1)", &[&RUN_LOCK])
        .await?;
    Ok(())
}

async fn select(control: &tokio_postgres::Client, slugs: &[Slug]) -> Result<Vec<Target>, RunError> {
    let names: Vec<&str> = slugs.iter().map(Slug::as_str).collect();
    let rows = control
        .query(
            "SELECT id, slug, cluster, schema_name, schema_version FROM recept.tenants \
             WHERE status <> 'deleted' AND (cardinality($1::text[]) = 0 OR slug = ANY($1)) \
             ORDER BY slug",
            &[&names],
        )
        .await?;
    let targets: Vec<Target> = rows
        .iter()
        .map(|r| Target {
            id: r.get(0),
            slug: r.get(1),
            cluster: r.get(2),
            schema: r.get(3),
            version: r.get(4),
        })
        .collect();
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| !targets.iter().any(|t| t.slug == **n))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(RunError::UnknownTenants(missing.join(", ")));
    }
    Ok(targets)
}

/// Migrates one tenant in one transaction, retrying lock timeouts, and
/// writes its ledger row.
async fn migrate_tenant(
    pools: &Pools,
    control: &tokio_postgres::Client,
    set: &MigrationSet,
    target: &Target,
    run: Uuid,
    retries: u32,
) -> TenantOutcome {
    let started_at: DateTime<Utc> = Utc::now();
    let started = Instant::now();
    let mut attempts = 0;
    let result = loop {
        attempts += 1;
        match apply(pools, control, set, target).await {
            Err(e) if attempts <= retries && is_lock_timeout(&e) => {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempts))).await;
            }
            other => break other,
        }
    };
    let (after, error) = match result {
        Ok(after) => (after, None),
        Err(e) => (target.version, Some(super::describe(&e))),
    };
    let outcome = TenantOutcome {
        slug: target.slug.clone(),
        state: if error.is_some() {
            "failed"
        } else {
            "migrated"
        },
        version_before: target.version,
        version_after: after,
        attempts,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        error,
    };
    let ledger = control
        .execute(
            "INSERT INTO recept.migration_ledger (run_id, tenant_id, version_before, version_after, \
             started_at, duration_ms, attempts, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &run,
                &target.id,
                &outcome.version_before,
                &outcome.version_after,
                &started_at,
                &outcome.duration_ms,
                &(attempts as i32),
                &outcome.error,
            ],
        )
        .await;
    if let Err(e) = ledger {
        tracing::error!(tenant = %target.slug, error = %e, "could not write the migration ledger");
    }
    if let Some(error) = &outcome.error {
        tracing::error!(tenant = %target.slug, %error, "tenant migration failed");
    }
    outcome
}

/// Whether PostgreSQL gave up waiting for a lock (`lock_timeout`), wherever
/// that sits in the error's cause chain.
fn is_lock_timeout(e: &MigrateError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        let code = s
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(|e| e.code())
            .or_else(|| {
                s.downcast_ref::<tokio_postgres::error::DbError>()
                    .map(|e| e.code())
            });
        if code == Some(&SqlState::LOCK_NOT_AVAILABLE) {
            return true;
        }
        source = s.source();
    }
    false
}

/// One transaction on the tenant's cluster; returns the version reached.
async fn apply(
    pools: &Pools,
    control: &tokio_postgres::Client,
    set: &MigrationSet,
    target: &Target,
) -> Result<i32, MigrateError> {
    let mut client = pools
        .get(&target.cluster, Role::Migration)
        .await
        .map_err(|e| MigrateError::Pool(e.to_string()))?;
    let tx = client.transaction().await?;
    migrate_in_transaction(&*tx, &target.schema, &set.runner).await?;
    let after: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM refinery_schema_history",
            &[],
        )
        .await?
        .get(0);
    let record = "UPDATE recept.tenants SET schema_version = $2 WHERE id = $1";
    if target.cluster == pools.control_cluster() {
        tx.execute(record, &[&target.id, &after]).await?;
        tx.commit().await?;
    } else {
        tx.commit().await?;
        control.execute(record, &[&target.id, &after]).await?;
    }
    Ok(after)
}
