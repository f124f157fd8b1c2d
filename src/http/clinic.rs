//! Clinic handlers under `/v1`: every one is bound to the caller's tenant.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{ApiError, AppState, Clinic};

#[derive(Serialize)]
struct TenantView {
    slug: String,
    name: String,
    status: &'static str,
    /// The schema this request actually ran in, read from PostgreSQL.
    schema: String,
    created_at: DateTime<Utc>,
}

/// `GET /v1/tenant`: the caller's own clinic, read from its own schema.
pub async fn tenant(
    state: web::Data<AppState>,
    Clinic(tenant): Clinic,
) -> Result<HttpResponse, ApiError> {
    let conn = state.pools.tenant(&tenant.cluster, &tenant.schema).await?;
    let rows = conn
        .read("SELECT name, current_schema(), created_at FROM clinic", &[])
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| anyhow::anyhow!("tenant {} has no clinic row", tenant.slug))?;
    Ok(HttpResponse::Ok().json(TenantView {
        slug: tenant.slug.to_string(),
        name: row.get(0),
        status: tenant.status.as_str(),
        schema: row.get(1),
        created_at: row.get(2),
    }))
}
