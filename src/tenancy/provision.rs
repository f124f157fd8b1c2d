//! Creating a tenant: registry row, schema, tenant migrations, all or nothing.

use tokio_postgres::error::SqlState;
use tokio_postgres::GenericClient;

use super::{Registry, Slug, TenantRecord};
use crate::migrate::{migrate_in_transaction, quote_ident, tenant_runner, MigrateError};
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

/// Creates tenant `slug` on `cluster`: its registry row, its schema and every
/// tenant migration. When the tenant lives on the control cluster all of it
/// is one transaction; on another cluster the schema is committed first and
/// dropped again if the registry row cannot be committed.
pub async fn create_tenant(
    pools: &Pools,
    slug: &Slug,
    name: &str,
    cluster: &str,
) -> Result<TenantRecord, CreateTenantError> {
    if !pools.has_cluster(cluster) {
        return Err(CreateTenantError::UnknownCluster(cluster.to_string()));
    }
    let mut control = pools.control(Role::Admin).await?;
    let control_tx = control.transaction().await?;
    // The registry row comes first: a concurrent create of the same slug
    // waits on it and then fails as a duplicate.
    let record = match Registry::insert(&control_tx, slug, name, cluster).await {
        Err(e) if e.is_unique_violation() => {
            return Err(CreateTenantError::SlugTaken(slug.clone()))
        }
        other => other?,
    };

    if cluster == pools.control_cluster() {
        build_schema(&*control_tx, slug, name).await?;
        control_tx.commit().await?;
        return Ok(record);
    }

    let mut remote = pools.get(cluster, Role::Admin).await?;
    let remote_tx = remote.transaction().await?;
    build_schema(&*remote_tx, slug, name).await?;
    remote_tx.commit().await?;
    if let Err(e) = control_tx.commit().await {
        let drop = format!("DROP SCHEMA {} CASCADE", quote_ident(&slug.schema_name()));
        if let Err(cleanup) = remote.batch_execute(&drop).await {
            tracing::error!(tenant = %slug, error = %cleanup, "could not drop the schema of a tenant whose registration failed");
        }
        return Err(e.into());
    }
    Ok(record)
}

/// Inside the caller's transaction: the schema, its migrations and the
/// clinic's profile row.
async fn build_schema<C: GenericClient + Sync>(
    tx: &C,
    slug: &Slug,
    name: &str,
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
    Ok(())
}
