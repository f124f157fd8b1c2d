//! Rollouts: upgrading tenants' copies to a release by applying only the
//! difference from the release each holds, one transaction per tenant.
//!
//! Resumable: a tenant already on the target is skipped. A failing tenant is
//! recorded and the others go on. The tenant's `master_meta` row is locked
//! for the length of its transaction, so pricing (which takes it `FOR
//! SHARE`) sees either the old copy or the new one, never a mixture.

use std::time::Instant;

use chrono::Utc;
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::copy::Source;
use super::diff::{apply_diff, ensure_diff};
use super::release_exists;
use super::rollout_status::{rollout_status, RolloutReport, TenantRollout};
use crate::audit::{self, Actor};
use crate::names::quote_ident;
use crate::names::Slug;
use crate::pools::{DbError, Pools, Role};
use crate::walk::each_tenant;

/// Which tenants a rollout upgrades.
#[derive(Debug, Clone)]
pub enum RolloutTarget {
    /// Every tenant that is not deleted.
    All,
    Tenants(Vec<Slug>),
}

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("no release `{0}`")]
    UnknownRelease(String),
    #[error("no tenant(s) {0}")]
    UnknownTenants(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for RolloutError {
    fn from(e: tokio_postgres::Error) -> Self {
        RolloutError::Db(e.into())
    }
}

/// A tenant as a rollout worker needs it.
struct Target {
    id: Uuid,
    slug: String,
    cluster: String,
    schema: String,
}

/// Records a rollout of `version` to `target` with every tenant pending.
pub async fn start_rollout(
    pools: &Pools,
    version: &str,
    target: &RolloutTarget,
    concurrency: usize,
    actor: &Actor,
) -> Result<Uuid, RolloutError> {
    let mut client = pools.control(Role::Admin).await?;
    if !release_exists(&client, version).await? {
        return Err(RolloutError::UnknownRelease(version.to_string()));
    }
    let tx = client.transaction().await?;
    let id = Uuid::now_v7();
    tx.execute(
        "INSERT INTO recept.master_rollouts (id, version) VALUES ($1, $2)",
        &[&id, &version],
    )
    .await?;
    match target {
        RolloutTarget::All => {
            tx.execute(
                "INSERT INTO recept.master_rollout_tenants (rollout_id, tenant_id) \
                 SELECT $1, id FROM recept.tenants WHERE status <> 'deleted'",
                &[&id],
            )
            .await?;
        }
        RolloutTarget::Tenants(slugs) => {
            let names: Vec<&str> = slugs.iter().map(Slug::as_str).collect();
            let found: Vec<String> = tx
                .query(
                    "INSERT INTO recept.master_rollout_tenants (rollout_id, tenant_id) \
                     SELECT $1, id FROM recept.tenants \
                     WHERE slug = ANY($2) AND status <> 'deleted' RETURNING \
                     (SELECT slug FROM recept.tenants t WHERE t.id = tenant_id)",
                    &[&id, &names],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let missing: Vec<&str> = names
                .iter()
                .filter(|n| !found.iter().any(|f| f == *n))
                .copied()
                .collect();
            if !missing.is_empty() {
                return Err(RolloutError::UnknownTenants(missing.join(", ")));
            }
        }
    }
    let detail = serde_json::json!({"rollout": id, "concurrency": concurrency});
    audit::record(&tx, actor, "master.rollout", Some(version), Some(detail)).await?;
    tx.commit().await?;
    Ok(id)
}

/// Upgrades every pending tenant of rollout `id`, `concurrency` at a time,
/// calling `on_tenant` as each finishes.
pub async fn run_rollout(
    pools: &Pools,
    id: Uuid,
    concurrency: usize,
    on_tenant: impl Fn(&TenantRollout),
) -> Result<RolloutReport, DbError> {
    let (version, targets) = {
        let client = pools.control(Role::Admin).await?;
        let version: String = client
            .query_one(
                "SELECT version FROM recept.master_rollouts WHERE id = $1",
                &[&id],
            )
            .await?
            .get(0);
        let rows = client
            .query(
                "SELECT t.id, t.slug, t.cluster, t.schema_name, coalesce(t.master_release, '') \
                 FROM recept.master_rollout_tenants rt JOIN recept.tenants t ON t.id = rt.tenant_id \
                 WHERE rt.rollout_id = $1 AND rt.state = 'pending' ORDER BY t.slug",
                &[&id],
            )
            .await?;
        // The differences are computed once, before any tenant needs them.
        let mut sources: Vec<String> = rows.iter().map(|r| r.get(4)).collect();
        sources.sort();
        sources.dedup();
        for from in sources.iter().filter(|f| **f != version) {
            ensure_diff(pools, from, &version).await?;
        }
        let targets: Vec<Target> = rows
            .iter()
            .map(|r| Target {
                id: r.get(0),
                slug: r.get(1),
                cluster: r.get(2),
                schema: r.get(3),
            })
            .collect();
        (version, targets)
    };
    each_tenant(
        targets,
        concurrency,
        |target| {
            let version = version.clone();
            async move { upgrade_tenant(pools, id, &target, &version).await }
        },
        |outcome| on_tenant(&outcome),
    )
    .await;
    let client = pools.control(Role::Admin).await?;
    client
        .execute(
            "UPDATE recept.master_rollouts SET finished_at = now() WHERE id = $1",
            &[&id],
        )
        .await?;
    rollout_status(&client, id)
        .await?
        .ok_or_else(|| DbError::Corrupt("the rollout vanished".into()))
}

/// Starts and runs a rollout; see [`start_rollout`] and [`run_rollout`].
pub async fn rollout(
    pools: &Pools,
    version: &str,
    target: &RolloutTarget,
    concurrency: usize,
    actor: &Actor,
    on_tenant: impl Fn(&TenantRollout),
) -> Result<RolloutReport, RolloutError> {
    let id = start_rollout(pools, version, target, concurrency, actor).await?;
    Ok(run_rollout(pools, id, concurrency, on_tenant).await?)
}

/// Upgrades one tenant in one transaction and records the outcome.
async fn upgrade_tenant(
    pools: &Pools,
    rollout: Uuid,
    target: &Target,
    version: &str,
) -> TenantRollout {
    let started = Instant::now();
    let outcome = apply(pools, rollout, target, version).await;
    let duration_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    match outcome {
        Ok((from, skipped)) => TenantRollout {
            slug: target.slug.clone(),
            state: if skipped { "skipped" } else { "done" }.into(),
            from_version: from,
            error: None,
            duration_ms,
        },
        Err(e) => {
            let error = e.to_string();
            tracing::error!(tenant = %target.slug, %error, "master rollout failed for tenant");
            let recorded = async {
                let client = pools.control(Role::Admin).await?;
                client
                    .execute(
                        "UPDATE recept.master_rollout_tenants SET state = 'failed', error = $3, \
                         finished_at = now() WHERE rollout_id = $1 AND tenant_id = $2",
                        &[&rollout, &target.id, &error],
                    )
                    .await?;
                Ok::<_, DbError>(())
            }
            .await;
            if let Err(e) = recorded {
                tracing::error!(tenant = %target.slug, error = %e, "could not record a failed rollout");
            }
            TenantRollout {
                slug: target.slug.clone(),
                state: "failed".into(),
                from_version: None,
                error: Some(error),
                duration_ms,
            }
        }
    }
}

const RECORD_DONE: &str = "UPDATE recept.master_rollout_tenants \
     SET state = $3, from_version = $4, started_at = $5, finished_at = now() \
     WHERE rollout_id = $1 AND tenant_id = $2";
const RECORD_RELEASE: &str = "UPDATE recept.tenants SET master_release = $2 WHERE id = $1";

/// Returns (the release the tenant held, whether it was already current).
async fn apply(
    pools: &Pools,
    rollout: Uuid,
    target: &Target,
    version: &str,
) -> Result<(Option<String>, bool), DbError> {
    let started_at = Utc::now();
    let mut computed = false;
    loop {
        match apply_once(pools, rollout, target, version, started_at).await? {
            Applied::Done { from, skipped } => return Ok((from, skipped)),
            // The registry was stale about the tenant's release: compute the
            // difference nobody planned, holding no other connection, and
            // try again.
            Applied::DiffMissing(from) if !computed => {
                ensure_diff(pools, &from, version).await?;
                computed = true;
            }
            Applied::DiffMissing(from) => {
                return Err(DbError::Corrupt(format!(
                    "the difference from release `{from}` to `{version}` is missing"
                )))
            }
        }
    }
}

enum Applied {
    Done { from: Option<String>, skipped: bool },
    DiffMissing(String),
}

async fn apply_once(
    pools: &Pools,
    rollout: Uuid,
    target: &Target,
    version: &str,
    started_at: chrono::DateTime<Utc>,
) -> Result<Applied, DbError> {
    let same_cluster = target.cluster == pools.control_cluster();
    let mut client = pools.get(&target.cluster, Role::Admin).await?;
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT set_config('search_path', $1, true)",
        &[&quote_ident(&target.schema)],
    )
    .await?;
    let from: Option<String> = tx
        .query_one("SELECT release FROM master_meta FOR UPDATE", &[])
        .await?
        .get(0);
    let skipped = from.as_deref() == Some(version);
    if !skipped {
        let release = from.clone().unwrap_or_default();
        let control;
        let source = if same_cluster {
            Source::SameDatabase
        } else {
            control = pools.control(Role::Admin).await?;
            Source::Control(&control)
        };
        let known = source
            .query(
                &tx,
                "SELECT 1 FROM recept.master_diff_sets WHERE from_version = $1 AND to_version = $2",
                &[&release, &version],
            )
            .await?;
        if known.is_empty() {
            return Ok(Applied::DiffMissing(release));
        }
        apply_diff(&tx, &source, &release, version).await?;
        tx.execute(
            "UPDATE master_meta SET release = $1, updated_at = $2",
            &[&version, &Utc::now()],
        )
        .await?;
    }
    let state = if skipped { "skipped" } else { "done" };
    if same_cluster {
        // Bookkeeping commits with the copy itself.
        tx.execute(RECORD_RELEASE, &[&target.id, &version]).await?;
        tx.execute(
            RECORD_DONE,
            &[&rollout, &target.id, &state, &from, &started_at],
        )
        .await?;
        tx.commit().await?;
    } else {
        tx.commit().await?;
        drop(client);
        let control = pools.control(Role::Admin).await?;
        control
            .execute(RECORD_RELEASE, &[&target.id, &version])
            .await?;
        control
            .execute(
                RECORD_DONE,
                &[&rollout, &target.id, &state, &from, &started_at],
            )
            .await?;
    }
    Ok(Applied::Done { from, skipped })
}
