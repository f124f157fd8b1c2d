//! The difference between two master releases, computed once in the
//! control schema and applied to a tenant's copy: inside the database when
//! the tenant is on the control cluster, fetched and sent with `COPY` when
//! it is on another.

use chrono::NaiveDate;
use deadpool_postgres::GenericClient;

use super::copy::{copy_items, literal};
use super::ITEM_COLUMNS;
use crate::pools::{DbError, Pools, Role};

/// Computes the difference between two releases once.
pub(super) async fn ensure_diff(pools: &Pools, from: &str, to: &str) -> Result<(), DbError> {
    let mut client = pools.control(Role::Admin).await?;
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1 || '>' || $2))",
        &[&from, &to],
    )
    .await?;
    let known = tx
        .query_opt(
            "SELECT 1 FROM recept.master_diff_sets WHERE from_version = $1 AND to_version = $2",
            &[&from, &to],
        )
        .await?
        .is_some();
    if known {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO recept.master_diff_sets (from_version, to_version, removed, added) \
         VALUES ($1, $2, 0, 0)",
        &[&from, &to],
    )
    .await?;
    let removed = tx
        .execute(
            &format!(
                "INSERT INTO recept.master_diffs (from_version, to_version, op, {ITEM_COLUMNS}) \
                 SELECT $1, $2, '-', * FROM ( \
                   SELECT {ITEM_COLUMNS} FROM recept.master_items WHERE version = $1 \
                   EXCEPT SELECT {ITEM_COLUMNS} FROM recept.master_items WHERE version = $2) d"
            ),
            &[&from, &to],
        )
        .await?;
    let added = tx
        .execute(
            &format!(
                "INSERT INTO recept.master_diffs (from_version, to_version, op, {ITEM_COLUMNS}) \
                 SELECT $1, $2, '+', * FROM ( \
                   SELECT {ITEM_COLUMNS} FROM recept.master_items WHERE version = $2 \
                   EXCEPT SELECT {ITEM_COLUMNS} FROM recept.master_items WHERE version = $1) d"
            ),
            &[&from, &to],
        )
        .await?;
    tx.execute(
        "UPDATE recept.master_diff_sets SET removed = $3, added = $4 \
         WHERE from_version = $1 AND to_version = $2",
        &[&from, &to, &(removed as i32), &(added as i32)],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The registry may have been stale about a tenant's release; make sure the
/// difference from the release it really holds exists.
pub(super) async fn ensure_diff_known(
    tx: &impl GenericClient,
    pools: &Pools,
    from: &str,
    to: &str,
) -> Result<(), DbError> {
    let known = tx
        .query_opt(
            "SELECT 1 FROM recept.master_diff_sets WHERE from_version = $1 AND to_version = $2",
            &[&from, &to],
        )
        .await?
        .is_some();
    if !known {
        ensure_diff(pools, from, to).await?;
    }
    Ok(())
}

/// For a tenant on another cluster: fetch the difference from the control
/// cluster and apply it with `DELETE … unnest` and `COPY`.
pub(super) async fn apply_remote_diff(
    tx: &deadpool_postgres::Transaction<'_>,
    pools: &Pools,
    from: &str,
    to: &str,
) -> Result<(), DbError> {
    ensure_diff(pools, from, to).await?;
    let control = pools.control(Role::Admin).await?;
    let removed = control
        .query(
            "SELECT code, valid_from FROM recept.master_diffs \
             WHERE from_version = $1 AND to_version = $2 AND op = '-'",
            &[&from, &to],
        )
        .await?;
    let codes: Vec<String> = removed.iter().map(|r| r.get(0)).collect();
    let dates: Vec<NaiveDate> = removed.iter().map(|r| r.get(1)).collect();
    tx.execute(
        "DELETE FROM master_items WHERE (code, valid_from) IN \
         (SELECT * FROM unnest($1::text[], $2::date[]))",
        &[&codes, &dates],
    )
    .await?;
    let query = format!(
        "SELECT {ITEM_COLUMNS} FROM recept.master_diffs \
         WHERE from_version = {} AND to_version = {} AND op = '+'",
        literal(from),
        literal(to)
    );
    copy_items(&control, &query, tx).await?;
    Ok(())
}
