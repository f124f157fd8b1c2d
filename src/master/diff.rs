//! The difference between two master releases, computed once in the
//! control schema and applied to a tenant's copy: the removed keys as
//! parameters of a `DELETE`, the added rows with `COPY`, read from the
//! control schema by statements of their own (see `copy`).

use chrono::NaiveDate;
use tokio_postgres::Transaction;

use super::copy::{copy_items_in, literal, Source};
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

/// Applies the difference `from` → `to` to the tenant copy in `tx` (a
/// transaction in the tenant's schema), reading it from `source`. The
/// difference must exist (`ensure_diff`).
pub(super) async fn apply_diff(
    tx: &Transaction<'_>,
    source: &Source<'_>,
    from: &str,
    to: &str,
) -> Result<(), DbError> {
    let removed = source
        .query(
            tx,
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
    let added = source.copy_out(tx, &query).await?;
    copy_items_in(added, tx).await?;
    Ok(())
}
