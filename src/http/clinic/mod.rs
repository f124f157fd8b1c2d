//! Clinic handlers under `/v1`: every one is bound to the caller's tenant.

pub mod claims;
pub mod diseases;
pub mod encounters;
pub mod patients;

#[cfg(test)]
mod properties;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, Clinic, FieldError};
use crate::db::master_items::{self, ItemSearch};
use crate::db::{decode_cursor, encode_cursor};
use crate::master::{Kind, MasterItem};

#[derive(Serialize, utoipa::ToSchema)]
struct TenantView {
    /// The clinic's slug (its tenant name).
    slug: String,
    /// The clinic's name.
    name: String,
    /// `active` (a suspended clinic is answered 403).
    status: &'static str,
    /// The clinic's schema, as the registry names it.
    schema: String,
    /// The master release the clinic's copy holds.
    master_release: Option<String>,
    /// When the clinic was created.
    created_at: DateTime<Utc>,
}

/// `GET /v1/tenant`: the caller's own clinic, read from its own schema.
#[utoipa::path(get, path = "/v1/tenant", operation_id = "get_tenant", tag = "clinic", responses((status = 200, body = TenantView)), security(("clinic_key" = [])))]
pub async fn tenant(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
) -> Result<HttpResponse, ApiError> {
    let conn = conn(&state, &tenant, shard).await?;
    let rows = conn
        .read(
            "SELECT name, created_at, (SELECT release FROM master_meta) FROM clinic",
            &[],
        )
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| anyhow::anyhow!("tenant {} has no clinic row", tenant.slug))?;
    Ok(HttpResponse::Ok().json(TenantView {
        slug: tenant.slug.to_string(),
        name: row.get(0),
        status: tenant.status.as_str(),
        // The registry's, not `current_schema()`: on Citus the query runs
        // on a worker, whose session knows nothing of the search path.
        schema: tenant.schema.to_string(),
        master_release: row.get(2),
        created_at: row.get(1),
    }))
}

/// A master item as clinics see it: drug prices as decimal strings.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MasterItemView {
    /// The item's code.
    code: String,
    /// Procedure, drug or disease.
    kind: Kind,
    /// The item's name.
    name: String,
    /// A procedure's points (absent for drugs and diseases).
    #[serde(skip_serializing_if = "Option::is_none")]
    points: Option<i32>,
    /// A drug's unit price in yen, as a decimal string such as `10.10` (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    unit_price_yen: Option<String>,
    /// The first day this price is valid.
    valid_from: NaiveDate,
    /// The last day it is valid; null while it stays valid.
    valid_to: Option<NaiveDate>,
}

impl From<MasterItem> for MasterItemView {
    fn from(item: MasterItem) -> Self {
        MasterItemView {
            code: item.code,
            kind: item.kind,
            name: item.name,
            points: item.points,
            unit_price_yen: item.unit_price.map(|p| p.to_string()),
            valid_from: item.valid_from,
            valid_to: item.valid_to,
        }
    }
}

/// One page of master items.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ItemPage {
    /// The items found, by code and validity.
    items: Vec<MasterItemView>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemsQuery {
    kind: Option<String>,
    q: Option<String>,
    code: Option<String>,
    on: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/master/items?kind=&q=&code=&on=&limit=&cursor=`: the tenant's
/// own master copy.
#[utoipa::path(get, path = "/v1/master/items", operation_id = "list_master_items", tag = "master", params(("kind" = Option<Kind>, Query, description = "Only items of this kind"), ("q" = Option<String>, Query, description = "Part of the name, at most 100 characters without control characters", max_length = 100, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"), ("code" = Option<String>, Query, description = "Exactly this code, at most 20 characters without control characters", max_length = 20, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"), ("on" = Option<chrono::NaiveDate>, Query, description = "Only items valid on this date"), ("limit" = Option<i64>, Query, description = "1 to 200, default 50", minimum = 1, maximum = 200), ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page; absent for the first page")), responses((status = 200, body = ItemPage)), security(("clinic_key" = [])))]
pub async fn master_items(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    query: web::Query<ItemsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let mut errors = Vec::new();
    let kind = query.kind.as_deref().and_then(|k| {
        Kind::parse(k).or_else(|| {
            errors.push(FieldError::new(
                "kind",
                "must be procedure, drug or disease",
            ));
            None
        })
    });
    let on = query.on.as_deref().and_then(|d| {
        parse_date(d).or_else(|| {
            errors.push(FieldError::new("on", "must be a date (YYYY-MM-DD)"));
            None
        })
    });
    let limit = parse_limit(query.limit.as_deref(), 50, 200, &mut errors);
    let after = cursor_after(query.cursor.as_deref(), 2, &mut errors, |p| {
        Some((p[0].clone(), parse_date(&p[1])?))
    });
    if !plain_text(query.q.as_deref(), 100) {
        errors.push(FieldError::new(
            "q",
            "must be at most 100 characters, without control characters",
        ));
    }
    if !plain_text(query.code.as_deref(), 20) {
        errors.push(FieldError::new(
            "code",
            "must be at most 20 characters, without control characters",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let search = ItemSearch {
        kind,
        code: query.code,
        name_contains: query.q.filter(|q| !q.is_empty()),
        on,
        after,
        limit,
    };
    let conn = conn(&state, &tenant, shard).await?;
    let items = master_items::search(&conn, &search).await?;
    let next_cursor = next_cursor(&items, limit, |last| {
        [last.code.clone(), last.valid_from.to_string()]
    });
    Ok(HttpResponse::Ok().json(ItemPage {
        items: items.into_iter().map(MasterItemView::from).collect(),
        next_cursor,
    }))
}

pub use crate::clinic::{parse_date, plain_text};

/// Where a page starts: the position a `cursor` this API returned encodes
/// in `parts` parts, read by `read`; absent or empty for the first page.
/// Anything else is named in `errors`.
pub fn cursor_after<T>(
    cursor: Option<&str>,
    parts: usize,
    errors: &mut Vec<FieldError>,
    read: impl FnOnce(&[String]) -> Option<T>,
) -> Option<T> {
    let cursor = cursor.filter(|c| !c.is_empty())?;
    let after = decode_cursor(cursor, parts).and_then(|p| read(&p));
    if after.is_none() {
        errors.push(FieldError::new(
            "cursor",
            "is not a cursor this API returned",
        ));
    }
    after
}

/// The cursor of the page after `page`: the position of its last item
/// (`parts_of`), or none when the page was not full.
pub fn next_cursor<T, const N: usize>(
    page: &[T],
    limit: i64,
    parts_of: impl FnOnce(&T) -> [String; N],
) -> Option<String> {
    if page.len() as i64 != limit {
        return None;
    }
    let parts = parts_of(page.last()?);
    let borrowed: Vec<&str> = parts.iter().map(String::as_str).collect();
    Some(encode_cursor(&borrowed))
}

/// `limit` between 1 and `max`, `default` when absent.
pub fn parse_limit(
    text: Option<&str>,
    default: i64,
    max: i64,
    errors: &mut Vec<FieldError>,
) -> i64 {
    match text {
        None => default,
        Some(t) => match t.parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                errors.push(FieldError::new("limit", format!("must be 1 to {max}")));
                default
            }
        },
    }
}

/// An object id from a path; anything that is not one is simply not found.
pub fn parse_id(text: &str, what: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(text).map_err(|_| ApiError::NotFound(format!("no {what} {text}")))
}

/// The request's connection in its clinic's schema, through admission.
pub async fn conn(
    state: &AppState,
    tenant: &crate::tenancy::TenantCtx,
    shard: crate::pools::Shard,
) -> Result<crate::pools::TenantConn, ApiError> {
    Ok(state
        .pools
        .tenant(shard, tenant.id, &tenant.cluster, &tenant.schema)
        .await?)
}
