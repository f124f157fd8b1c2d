//! `/healthz` (the process answers) and `/readyz` (the control cluster
//! answers, through this listener's own pool).

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{ApiError, AppState, Listener};

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(
    state: web::Data<AppState>,
    listener: web::Data<Listener>,
) -> Result<HttpResponse, ApiError> {
    let client = state.pools.control(listener.role()).await?;
    client
        .simple_query("SELECT 1")
        .await
        .map_err(crate::pools::DbError::from)?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}

/// `GET /metrics` (admin listener only): Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.metrics.refresh().await;
    let text = state
        .metrics
        .encode()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("encoding metrics: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text))
}
