//! Copying a release into a tenant's schema, inside the database.

use bytes::Bytes;
use futures::{SinkExt, TryStreamExt};
use tokio_postgres::Transaction;

use super::ITEM_COLUMNS;
use crate::pools::{DbError, Pools, Role};

/// Fills the tenant copy (`master_items`, `master_meta` in the transaction's
/// `search_path`) with release `version`. `tx` is a transaction on the
/// tenant's cluster, already in the tenant's schema. On the control cluster
/// this is one `INSERT … SELECT`; elsewhere the rows are streamed with `COPY`.
pub async fn copy_release_into(
    tx: &Transaction<'_>,
    pools: &Pools,
    tenant_cluster: &str,
    version: &str,
) -> Result<u64, DbError> {
    let copied = if tenant_cluster == pools.control_cluster() {
        tx.execute(
            &format!(
                "INSERT INTO master_items ({ITEM_COLUMNS}) \
                 SELECT {ITEM_COLUMNS} FROM recept.master_items WHERE version = $1"
            ),
            &[&version],
        )
        .await?
    } else {
        let control = pools.control(Role::Admin).await?;
        let query = format!(
            "SELECT {ITEM_COLUMNS} FROM recept.master_items WHERE version = {}",
            literal(version)
        );
        copy_items(&control, &query, tx).await?
    };
    tx.execute(
        "UPDATE master_meta SET release = $1, updated_at = now()",
        &[&version],
    )
    .await?;
    Ok(copied)
}

/// Streams the rows of `query` (in `ITEM_COLUMNS` order) on `source` into
/// the tenant copy's `master_items` through `tx`, with binary `COPY`.
pub(super) async fn copy_items(
    source: &tokio_postgres::Client,
    query: &str,
    tx: &Transaction<'_>,
) -> Result<u64, DbError> {
    let rows = source
        .copy_out(&format!("COPY ({query}) TO STDOUT (FORMAT binary)"))
        .await?;
    let chunks: Vec<Bytes> = rows.try_collect().await?;
    let sink = tx
        .copy_in(&format!(
            "COPY master_items ({ITEM_COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let mut sink = std::pin::pin!(sink);
    for chunk in chunks {
        sink.send(chunk).await?;
    }
    Ok(sink.as_mut().finish().await?)
}

/// A string as an SQL literal (COPY takes no parameters).
pub(super) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
