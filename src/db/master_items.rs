//! The tenant's copy of master data, as clinics search it.

use chrono::NaiveDate;

use crate::billing::{Centiyen, Kind, MasterItem};
use crate::pools::{DbError, TenantConn};

/// A search of the tenant's master copy.
#[derive(Debug, Default)]
pub struct ItemSearch {
    pub kind: Option<Kind>,
    pub code: Option<String>,
    /// Part of the name.
    pub name_contains: Option<String>,
    /// Only rows valid on this date.
    pub on: Option<NaiveDate>,
    /// Rows after this (code, valid_from).
    pub after: Option<(String, NaiveDate)>,
    pub limit: i64,
}

/// One page of items, ordered by code and validity.
pub async fn search(conn: &TenantConn, q: &ItemSearch) -> Result<Vec<MasterItem>, DbError> {
    let sql = format!(
        "SELECT {ITEM_COLUMNS} FROM master_items \
         WHERE ($1::text IS NULL OR kind = $1) \
           AND ($2::text IS NULL OR code = $2) \
           AND ($3::text IS NULL OR name LIKE '%' || $3 || '%') \
           AND ($4::date IS NULL OR (valid_from <= $4 AND (valid_to IS NULL OR valid_to >= $4))) \
           AND ($5::text IS NULL OR (code, valid_from) > ($5, $6::date)) \
         ORDER BY code, valid_from LIMIT $7"
    );
    let kind = q.kind.map(Kind::as_str);
    let pattern = q.name_contains.as_deref().map(super::like_escape);
    let (after_code, after_date) = match &q.after {
        Some((code, date)) => (Some(code.as_str()), Some(*date)),
        None => (None, None),
    };
    let rows = conn
        .read(
            &sql,
            &[
                &kind,
                &q.code,
                &pattern,
                &q.on,
                &after_code,
                &after_date,
                &q.limit,
            ],
        )
        .await?;
    Ok(rows.iter().map(item_from_row).collect())
}

/// The columns of `master_items`, in table order after `version`.
pub const ITEM_COLUMNS: &str =
    "code, kind, name, points, unit_price_centiyen, valid_from, valid_to";

pub fn item_from_row(row: &tokio_postgres::Row) -> MasterItem {
    let kind: String = row.get("kind");
    MasterItem {
        code: row.get("code"),
        kind: Kind::parse(&kind).unwrap_or(Kind::Disease),
        name: row.get("name"),
        points: row.get("points"),
        unit_price: row
            .get::<_, Option<i64>>("unit_price_centiyen")
            .map(Centiyen),
        valid_from: row.get("valid_from"),
        valid_to: row.get("valid_to"),
    }
}
