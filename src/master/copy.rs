//! Copying a release into a tenant's schema with `COPY`.
//!
//! No statement here names both the control schema and a tenant's: the rows
//! are read from the control schema by one `COPY … TO STDOUT` and written to
//! the tenant's copy by another. On Citus a tenant's schema is distributed
//! and the control schema is not, and a statement that joins them is
//! planned through the coordinator, if at all.

use bytes::Bytes;
use futures::{SinkExt, TryStreamExt};
use tokio_postgres::Transaction;

use super::ITEM_COLUMNS;
use crate::pools::{DbError, Pools, Role};

/// Where a tenant's transaction reads the control schema's rows from: the
/// transaction itself when the tenant lives on the control cluster (the
/// control schema is in the same database), a control connection otherwise.
/// Reading through the tenant's own transaction never takes a second
/// connection from a pool the transaction already draws from.
pub(super) enum Source<'a> {
    SameDatabase,
    Control(&'a tokio_postgres::Client),
}

impl Source<'_> {
    /// The rows of `query` as binary `COPY` data.
    pub(super) async fn copy_out(
        &self,
        tx: &Transaction<'_>,
        query: &str,
    ) -> Result<Vec<Bytes>, DbError> {
        let statement = format!("COPY ({query}) TO STDOUT (FORMAT binary)");
        let rows = match self {
            Source::SameDatabase => tx.copy_out(&statement).await?,
            Source::Control(client) => client.copy_out(&statement).await?,
        };
        Ok(rows.try_collect().await?)
    }

    /// The rows of `query` with its parameters.
    pub(super) async fn query(
        &self,
        tx: &Transaction<'_>,
        query: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, DbError> {
        Ok(match self {
            Source::SameDatabase => tx.query(query, params).await?,
            Source::Control(client) => client.query(query, params).await?,
        })
    }
}

/// Fills the tenant copy (`master_items`, `master_meta` in the transaction's
/// `search_path`) with release `version`. `tx` is a transaction on the
/// tenant's cluster, already in the tenant's schema.
pub async fn copy_release_into(
    tx: &Transaction<'_>,
    pools: &Pools,
    tenant_cluster: &str,
    version: &str,
) -> Result<u64, DbError> {
    let query = format!(
        "SELECT {ITEM_COLUMNS} FROM recept.master_items WHERE version = {}",
        literal(version)
    );
    let rows = if tenant_cluster == pools.control_cluster() {
        Source::SameDatabase.copy_out(tx, &query).await?
    } else {
        let control = pools.control(Role::Admin).await?;
        Source::Control(&control).copy_out(tx, &query).await?
    };
    let copied = copy_items_in(rows, tx).await?;
    tx.execute(
        "UPDATE master_meta SET release = $1, updated_at = $2",
        &[&version, &chrono::Utc::now()],
    )
    .await?;
    Ok(copied)
}

/// Writes binary `COPY` rows (in `ITEM_COLUMNS` order) into the tenant
/// copy's `master_items` through `tx`.
pub(super) async fn copy_items_in(rows: Vec<Bytes>, tx: &Transaction<'_>) -> Result<u64, DbError> {
    let sink = tx
        .copy_in(&format!(
            "COPY master_items ({ITEM_COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let mut sink = std::pin::pin!(sink);
    for chunk in rows {
        sink.send(chunk).await?;
    }
    Ok(sink.as_mut().finish().await?)
}

/// A string as an SQL literal (COPY takes no parameters).
pub(super) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
