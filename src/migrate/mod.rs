//! Schema migrations with refinery: the control schema, and the tenant
//! migrations applied inside one tenant's schema.
//!
//! Migrations run inside a transaction the caller owns, so that creating a
//! tenant (registry row, schema, tables) commits or rolls back as one. The
//! refinery history table lives in the schema being migrated, found through
//! a transaction-local `search_path`; nothing here issues a session-level `SET`.

use anyhow::Context;
use async_trait::async_trait;
use refinery_core::traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction};
use refinery_core::{Migration, Runner};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_postgres::{Client, GenericClient};

use crate::names::quote_ident;
use crate::pools::{Pools, Role};

pub use crate::names::CONTROL_SCHEMA;

/// Advisory-lock key that serializes control-schema migrations, so that
/// several hosts starting at once do not race.
const CONTROL_LOCK: i64 = 0x7265_6365_7074_0001;

mod run;
mod statements;
mod status;

pub use run::{run, Event, MigrationSet, RunError, RunOptions, RunSummary, TenantOutcome};
pub use status::{status, MigrationStatus};

mod control {
    refinery::embed_migrations!("migrations/control");
}

mod tenant {
    refinery::embed_migrations!("migrations/tenant");
}

/// The control-schema migrations embedded in this binary.
pub fn control_runner() -> Runner {
    control::migrations::runner()
}

/// The tenant-schema migrations embedded in this binary.
pub fn tenant_runner() -> Runner {
    tenant::migrations::runner()
}

/// The newest tenant migration version this binary knows (computed once:
/// it is checked on every clinic request).
pub fn latest_tenant_version() -> i32 {
    static LATEST: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *LATEST.get_or_init(|| {
        tenant_runner()
            .get_migrations()
            .iter()
            .map(|m| m.version())
            .max()
            .unwrap_or(0) as i32
    })
}

/// Why a migration failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("migration failed: {0}")]
    Refinery(#[from] refinery_core::Error),
    #[error("no connection for the migration: {0}")]
    Pool(String),
}

/// Brings the control schema up to date, in one transaction, holding an
/// advisory lock so concurrent starts wait for each other.
pub async fn migrate_control(client: &mut Client) -> Result<(), MigrateError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CONTROL_LOCK])
        .await?;
    // On a Citus coordinator with schema-based sharding on, a new schema
    // becomes a distributed one placed on a worker. The control schema
    // must stay a plain schema on the coordinator: tenants' schemas are
    // the ones distributed. The setting is a placeholder elsewhere.
    tx.execute(
        "SELECT set_config('citus.enable_schema_based_sharding', 'off', true)",
        &[],
    )
    .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quote_ident(CONTROL_SCHEMA)
    ))
    .await?;
    migrate_in_transaction(&tx, CONTROL_SCHEMA, &control_runner()).await?;
    tx.commit().await?;
    Ok(())
}

/// Brings the control schema up to date on an admin connection of the
/// control cluster.
pub async fn prepare_control(pools: &Pools) -> anyhow::Result<()> {
    let cluster = pools.control_cluster();
    let mut client = pools.control(Role::Admin).await.with_context(|| {
        format!("cannot reach the control cluster `{cluster}` (clusters.{cluster}.url)")
    })?;
    crate::pools::citus::check_control_schema(&**client).await?;
    migrate_control(&mut client)
        .await
        .context("applying the control-schema migrations")?;
    Ok(())
}

/// Applies `runner`'s migrations inside `schema`, on a client that is already
/// inside a transaction. The caller commits or rolls back.
pub async fn migrate_in_transaction<C: GenericClient + Sync>(
    client: &C,
    schema: &str,
    runner: &Runner,
) -> Result<refinery_core::Report, MigrateError> {
    client
        .execute(
            "SELECT set_config('search_path', $1, true)",
            &[&quote_ident(schema)],
        )
        .await?;
    let mut target = InTransaction(client);
    Ok(runner.run_async(&mut target).await?)
}

/// An error with its whole cause chain, so PostgreSQL's own message (which
/// sits several sources deep in a refinery error) reaches the operator.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// A client already inside a transaction, seen by refinery as a connection
/// whose "transactions" are plain statement batches in the caller's one.
struct InTransaction<'a, C>(&'a C);

#[derive(Debug, thiserror::Error)]
enum InTransactionError {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error("migration history row {0} is unreadable")]
    History(i32),
}

#[async_trait]
impl<C: GenericClient + Sync> AsyncTransaction for InTransaction<'_, C> {
    type Error = InTransactionError;

    async fn execute(&mut self, queries: &[&str]) -> Result<usize, Self::Error> {
        // One statement per command: Citus refuses several in one for
        // some DDL (see `statements`).
        for query in queries {
            for statement in statements::split(query) {
                self.0.batch_execute(statement).await?;
            }
        }
        Ok(queries.len())
    }
}

#[async_trait]
impl<C: GenericClient + Sync> AsyncQuery<Vec<Migration>> for InTransaction<'_, C> {
    async fn query(&mut self, query: &str) -> Result<Vec<Migration>, Self::Error> {
        let rows = self.0.query(query, &[]).await?;
        rows.into_iter()
            .map(|row| {
                let version: i32 = row.get(0);
                let applied_on: String = row.get(2);
                let checksum: String = row.get(3);
                let applied_on = OffsetDateTime::parse(&applied_on, &Rfc3339)
                    .map_err(|_| InTransactionError::History(version))?;
                let checksum = checksum
                    .parse::<u64>()
                    .map_err(|_| InTransactionError::History(version))?;
                Ok(Migration::applied(
                    version,
                    row.get(1),
                    applied_on,
                    checksum,
                ))
            })
            .collect()
    }
}

impl<C: GenericClient + Sync> AsyncMigrate for InTransaction<'_, C> {}
