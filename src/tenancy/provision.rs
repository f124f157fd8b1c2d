//! Creating a tenant: registry row, schema, tenant migrations, all or nothing.

use tokio_postgres::error::SqlState;
use tokio_postgres::Transaction;

use super::{Registry, Slug, TenantRecord};
use crate::audit::{self, Actor};
use crate::master::{copy_release_into, current_release, release_exists};
use crate::migrate::{latest_tenant_version, migrate_in_transaction, tenant_runner, MigrateError};
use crate::names::quote_ident;
use crate::pools::{DbError, Pools, Role};

/// Why a tenant was not created. Nothing of it is left behind.
#[derive(Debug, thiserror::Error)]
pub enum CreateTenantError {
    #[error("a tenant with slug `{0}` already exists")]
    SlugTaken(Slug),
    #[error("schema `{0}` already exists on its cluster")]
    SchemaExists(String),
    #[error("unknown cluster `{0}`")]
    UnknownCluster(String),
    #[error("no master release `{0}`")]
    UnknownRelease(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Migrate(MigrateError),
}

impl From<tokio_postgres::Error> for CreateTenantError {
    fn from(e: tokio_postgres::Error) -> Self {
        CreateTenantError::Db(e.into())
    }
}

impl From<MigrateError> for CreateTenantError {
    fn from(e: MigrateError) -> Self {
        match e {
            MigrateError::Db(e) => CreateTenantError::Db(e.into()),
            other => CreateTenantError::Migrate(other),
        }
    }
}

/// Creates tenant `slug` on `cluster`: its registry row, its schema, every
/// tenant migration and a copy of master release `release` (the current one
/// when `None`; none at all when no release exists yet). When the tenant lives on the control cluster all of it
/// is one transaction; on another cluster the schema is committed first and
/// dropped again if the registry row cannot be committed.
pub async fn create_tenant(
    pools: &Pools,
    slug: &Slug,
    name: &str,
    cluster: &str,
    release: Option<&str>,
    actor: &Actor,
) -> Result<TenantRecord, CreateTenantError> {
    if !pools.has_cluster(cluster) {
        return Err(CreateTenantError::UnknownCluster(cluster.to_string()));
    }
    let mut control = pools.control(Role::Admin).await?;
    let control_tx = control.transaction().await?;
    let release = match release {
        Some(version) if release_exists(&control_tx, version).await? => Some(version.to_string()),
        Some(version) => return Err(CreateTenantError::UnknownRelease(version.to_string())),
        None => current_release(&control_tx).await?,
    };
    // The registry row comes first: a concurrent create of the same slug
    // waits on it and then fails as a duplicate.
    let record = match Registry::insert(
        &control_tx,
        slug,
        name,
        cluster,
        release.as_deref(),
        latest_tenant_version(),
    )
    .await
    {
        Err(e) if e.is_unique_violation() => {
            return Err(CreateTenantError::SlugTaken(slug.clone()))
        }
        other => other?,
    };
    let detail = serde_json::json!({"cluster": cluster, "master_release": release});
    audit::record(
        &control_tx,
        actor,
        "tenant.create",
        Some(slug.as_str()),
        Some(detail),
    )
    .await?;

    if cluster == pools.control_cluster() {
        build_schema(&control_tx, pools, cluster, slug, name, release.as_deref()).await?;
        control_tx.commit().await?;
        return Ok(record);
    }

    let mut remote = pools.get(cluster, Role::Admin).await?;
    let remote_tx = remote.transaction().await?;
    build_schema(&remote_tx, pools, cluster, slug, name, release.as_deref()).await?;
    remote_tx.commit().await?;
    if let Err(e) = control_tx.commit().await {
        if let Err(cleanup) = drop_schema(&remote, &slug.schema_name()).await {
            tracing::error!(tenant = %slug, error = %cleanup, "could not drop the schema of a tenant whose registration failed");
        }
        return Err(e.into());
    }
    Ok(record)
}

/// Inside the caller's transaction: the schema, its migrations, the
/// clinic's profile row and its master copy.
pub(super) async fn build_schema(
    tx: &Transaction<'_>,
    pools: &Pools,
    cluster: &str,
    slug: &Slug,
    name: &str,
    release: Option<&str>,
) -> Result<(), CreateTenantError> {
    let schema = slug.schema_name();
    match tx
        .batch_execute(&format!("CREATE SCHEMA {}", quote_ident(&schema)))
        .await
    {
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_SCHEMA) => {
            return Err(CreateTenantError::SchemaExists(schema))
        }
        other => other?,
    }
    migrate_in_transaction(tx, &schema, &tenant_runner()).await?;
    tx.execute(
        "INSERT INTO clinic (slug, name) VALUES ($1, $2)",
        &[&slug.as_str(), &name],
    )
    .await?;
    if let Some(version) = release {
        copy_release_into(tx, pools, cluster, version).await?;
    }
    Ok(())
}

/// The cluster for a new tenant when none is named, by
/// `control.placement`: the default cluster, or the configured cluster with
/// the fewest tenants (ties by name).
pub async fn place(pools: &Pools, settings: &crate::config::Settings) -> Result<String, DbError> {
    if settings.control.placement == crate::config::Placement::Default {
        return Ok(settings.default_cluster().to_string());
    }
    let control = pools.control(Role::Admin).await?;
    let counts: std::collections::HashMap<String, i64> = control
        .query(
            "SELECT cluster, count(*) FROM recept.tenants WHERE status <> 'deleted' GROUP BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut clusters: Vec<&String> = settings.clusters.keys().collect();
    clusters.sort_by_key(|c| (counts.get(*c).copied().unwrap_or(0), *c));
    Ok(clusters
        .first()
        .map_or_else(|| settings.default_cluster().to_string(), |c| c.to_string()))
}

/// Drops the schemas of tenants deleted more than `grace_days` ago and marks
/// them purged. Returns their slugs.
pub async fn purge_deleted(
    pools: &Pools,
    grace_days: i32,
    actor: &Actor,
) -> Result<Vec<String>, DbError> {
    let due = {
        let control = pools.control(Role::Admin).await?;
        control
            .query(
                "SELECT slug, cluster, schema_name FROM recept.tenants \
                 WHERE status = 'deleted' AND purged_at IS NULL \
                 AND deleted_at < now() - make_interval(days => $1) ORDER BY slug",
                &[&grace_days],
            )
            .await?
    };
    let mut purged = Vec::new();
    for row in due {
        let (slug, cluster, schema): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        let client = pools.get(&cluster, Role::Admin).await?;
        drop_schema(&client, &schema).await?;
        drop(client);
        let mut control = pools.control(Role::Admin).await?;
        let tx = control.transaction().await?;
        tx.execute(
            "UPDATE recept.tenants SET purged_at = now() WHERE slug = $1",
            &[&slug],
        )
        .await?;
        audit::record(&tx, actor, "tenant.purge", Some(&slug), None).await?;
        tx.commit().await?;
        purged.push(slug);
    }
    // Copies left behind by moves to another cluster.
    let moved = {
        let control = pools.control(Role::Admin).await?;
        control
            .query(
                "SELECT cluster, schema_name FROM recept.moved_copies \
                 WHERE dropped_at IS NULL AND moved_at < now() - make_interval(days => $1) \
                 ORDER BY moved_at",
                &[&grace_days],
            )
            .await?
    };
    for row in moved {
        let (cluster, schema): (String, String) = (row.get(0), row.get(1));
        if !pools.has_cluster(&cluster) {
            continue;
        }
        let client = pools.get(&cluster, Role::Admin).await?;
        drop_schema(&client, &schema).await?;
        let control = pools.control(Role::Admin).await?;
        control
            .execute(
                "UPDATE recept.moved_copies SET dropped_at = now() \
                 WHERE cluster = $1 AND schema_name = $2",
                &[&cluster, &schema],
            )
            .await?;
        purged.push(format!("{schema} (moved copy on {cluster})"));
    }
    Ok(purged)
}

/// Drops a tenant's schema (or a copy of it) with everything in it; one
/// that is already gone is not an error.
pub(in crate::tenancy) async fn drop_schema(
    client: &deadpool_postgres::Client,
    schema: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(schema)
        ))
        .await
}
