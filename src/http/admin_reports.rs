//! Admin reads across tenants: per-tenant stats, the monthly report over
//! every tenant schema, pool status and the audit log.
//!
//! Stats and the monthly report read through [`Pools::report`]: on a
//! cluster's streaming replica when it names one (the registry too, on the
//! control cluster's replica), so that they take nothing of the primary
//! clinics use, and each says how fresh its figures are. Without a replica
//! they run on the admin pool, whose `statement_timeout` bounds them.
//!
//! [`Pools::report`]: crate::pools::Pools::report

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use tokio_postgres::SimpleQueryMessage;

use super::clinic::parse_limit;
use super::{AdminCaller, ApiError, AppState, FieldError};
use crate::audit;
use crate::clinic::Month;
use crate::names::{quote_ident, Slug};
use crate::pools::{citus, DbError, Freshness, ReportConn, Role};
use crate::tenancy::{Registry, TenantStatus};

#[derive(Serialize)]
struct TenantStats {
    slug: String,
    patients: i64,
    encounters: i64,
    payments: i64,
    claims: i64,
    /// When the last encounter was entered.
    last_activity: Option<chrono::DateTime<chrono::Utc>>,
    schema_bytes: i64,
    /// Where the figures were read and how fresh they are.
    freshness: Freshness,
}

/// `GET /admin/tenants/{slug}/stats`
pub async fn stats(
    _: AdminCaller,
    state: web::Data<AppState>,
    slug: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::NotFound(format!("no tenant `{slug}`"));
    let parsed = Slug::parse(&slug).map_err(|_| not_found())?;
    let control = state.pools.report(state.pools.control_cluster()).await?;
    let tenant = Registry::find(&control.client, &parsed)
        .await?
        .ok_or_else(not_found)?;
    if tenant.status == TenantStatus::Deleted {
        return Err(ApiError::Conflict(format!("tenant `{slug}` is deleted")));
    }
    let s = quote_ident(&tenant.schema);
    let ReportConn { client, freshness } = if tenant.cluster == control.freshness.cluster {
        control
    } else {
        drop(control);
        state.pools.report(&tenant.cluster).await?
    };
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM {s}.patients), (SELECT count(*) FROM {s}.encounters), \
                 (SELECT count(*) FROM {s}.payments), (SELECT count(*) FROM {s}.claims), \
                 (SELECT max(created_at) FROM {s}.encounters)"
            ),
            &[],
        )
        .await
        .map_err(DbError::from)?;
    let schema_bytes = citus::schema_bytes(&**client, &tenant.schema).await?;
    Ok(HttpResponse::Ok().json(TenantStats {
        slug: tenant.slug.to_string(),
        patients: row.get(0),
        encounters: row.get(1),
        payments: row.get(2),
        claims: row.get(3),
        last_activity: row.get(4),
        schema_bytes,
        freshness,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    month: String,
    after: Option<String>,
    limit: Option<String>,
}

#[derive(Serialize)]
struct TenantMonth {
    slug: String,
    encounters: i64,
    total_points: i64,
    charge_yen: i64,
    claims_draft: i64,
    claims_confirmed: i64,
}

#[derive(Serialize)]
struct MonthlyReport {
    month: String,
    tenants: Vec<TenantMonth>,
    /// Pass as `after` for the next page; null on the last one.
    next_after: Option<String>,
    /// Each cluster read (the control cluster's registry first): where and
    /// how fresh.
    freshness: Vec<Freshness>,
}

/// `GET /admin/reports/monthly?month=YYYY-MM&after=&limit=`: per tenant, the
/// month's active encounters, points, patient charges and claims by status.
/// One page of tenants (by slug) at a time, one `UNION ALL` query per
/// cluster, so no page holds more than `limit` tenants in memory.
pub async fn monthly(
    _: AdminCaller,
    state: web::Data<AppState>,
    query: web::Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let mut errors = Vec::new();
    let month = Month::parse(&query.month).map(Month::first_day);
    if month.is_none() {
        errors.push(FieldError::new("month", "must be a month (YYYY-MM)"));
    }
    let limit = parse_limit(query.limit.as_deref(), 100, 500, &mut errors);
    let (Some(month), true) = (month, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let next = month
        .checked_add_months(chrono::Months::new(1))
        .ok_or_else(|| ApiError::validation("month", "is out of range"))?;
    let control_cluster = state.pools.control_cluster();
    let control = state.pools.report(control_cluster).await?;
    let page = Registry::list(&control.client, query.after.as_deref(), limit).await?;
    let mut freshness = vec![control.freshness.clone()];
    // Kept for the control cluster's own tenants, if the page has any.
    let mut control = Some(control);
    let next_after = (page.len() as i64 == limit)
        .then(|| page.last().map(|t| t.slug.to_string()))
        .flatten();
    let mut by_cluster: BTreeMap<&str, Vec<&crate::tenancy::TenantRecord>> = BTreeMap::new();
    for tenant in page.iter().filter(|t| t.status != TenantStatus::Deleted) {
        by_cluster
            .entry(tenant.cluster.as_str())
            .or_default()
            .push(tenant);
    }
    // Dates are validated values, written as literals so that the whole
    // report is one simple-protocol message: `statement_timeout` then covers
    // its parsing and planning too, and fires on time.
    let from = format!("DATE '{month}'");
    let to = format!("DATE '{next}'");
    let mut rows: Vec<TenantMonth> = Vec::with_capacity(page.len());
    for (cluster, tenants) in by_cluster {
        let parts: Vec<String> = tenants
            .iter()
            .map(|t| {
                let s = quote_ident(&t.schema);
                let slug = t.slug.as_str(); // a validated slug: letters, digits, `_`
                format!(
                    "SELECT '{slug}'::text, \
                       (SELECT count(*) FROM {s}.encounters WHERE date >= {from} AND date < {to} AND status = 'active'), \
                       (SELECT coalesce(sum(total_points), 0)::int8 FROM {s}.encounters WHERE date >= {from} AND date < {to} AND status = 'active'), \
                       (SELECT coalesce(sum(charge_yen), 0)::int8 FROM {s}.encounters WHERE date >= {from} AND date < {to} AND status = 'active'), \
                       (SELECT count(*) FROM {s}.claims WHERE month = {from} AND status = 'draft'), \
                       (SELECT count(*) FROM {s}.claims WHERE month = {from} AND status = 'confirmed')"
                )
            })
            .collect();
        let conn = match control.take_if(|_| cluster == control_cluster) {
            Some(conn) => conn,
            None => {
                let conn = state.pools.report(cluster).await?;
                freshness.push(conn.freshness.clone());
                conn
            }
        };
        let messages = conn
            .client
            .simple_query(&parts.join(" UNION ALL "))
            .await
            .map_err(DbError::from)?;
        for message in messages {
            if let SimpleQueryMessage::Row(r) = message {
                let number = |i: usize| r.get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                rows.push(TenantMonth {
                    slug: r.get(0).unwrap_or_default().to_string(),
                    encounters: number(1),
                    total_points: number(2),
                    charge_yen: number(3),
                    claims_draft: number(4),
                    claims_confirmed: number(5),
                });
            }
        }
    }
    rows.sort_by(|a, b| a.slug.cmp(&b.slug));
    Ok(HttpResponse::Ok().json(MonthlyReport {
        month: query.month,
        tenants: rows,
        next_after,
        freshness,
    }))
}

/// `GET /admin/pools`: every pool of this host and admission's refusals.
pub async fn pools(_: AdminCaller, state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "pools": state.pools.status(),
        "admission_rejections": state.pools.admission_stats(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    before: Option<i64>,
    limit: Option<String>,
}

/// `GET /admin/audit?before=&limit=`: admin writes, newest first.
pub async fn audit_log(
    _: AdminCaller,
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let mut errors = Vec::new();
    let limit = parse_limit(query.limit.as_deref(), 100, 1000, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let client = state.pools.control(Role::Admin).await?;
    let entries = audit::list(&client, query.before, limit).await?;
    let next_before = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "entries": entries,
        "next_before": next_before,
    })))
}
