//! Admin handlers under `/admin/master`: releases and rollouts.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use super::{AdminCaller, ApiError, AppState};
use crate::master::{
    import_release, list_releases, parse_release, rollout_status, run_rollout, start_rollout,
    RolloutTarget,
};
use crate::pools::Role;
use crate::tenancy::Slug;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    version: String,
}

/// `POST /admin/master/releases?version=V` with a `text/csv` body.
pub async fn import(
    caller: AdminCaller,
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<VersionQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("text/csv") {
        return Err(ApiError::UnsupportedMediaType(
            "send the release as text/csv".into(),
        ));
    }
    let items = parse_release(&body)?;
    let summary = import_release(&state.pools, &query.version, &items, &caller.actor).await?;
    tracing::info!(version = %summary.version, items = summary.items, "master release imported");
    Ok(HttpResponse::Created().json(summary))
}

/// `GET /admin/master/releases`
pub async fn releases(
    _: AdminCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let client = state.pools.control(Role::Admin).await?;
    let releases = list_releases(&client).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "releases": releases })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRollout {
    version: String,
    /// Slugs; every tenant when absent.
    tenants: Option<Vec<String>>,
    concurrency: Option<usize>,
}

/// `POST /admin/master/rollouts`: starts a rollout and answers `202` at
/// once; `GET /admin/master/rollouts/{id}` follows it.
pub async fn start(
    caller: AdminCaller,
    state: web::Data<AppState>,
    body: web::Json<NewRollout>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let target = match body.tenants {
        None => RolloutTarget::All,
        Some(slugs) => {
            let mut parsed = Vec::with_capacity(slugs.len());
            for (i, slug) in slugs.iter().enumerate() {
                parsed
                    .push(Slug::parse(slug).map_err(|e| {
                        ApiError::validation(format!("tenants/{i}"), e.to_string())
                    })?);
            }
            if parsed.is_empty() {
                return Err(ApiError::validation("tenants", "name at least one tenant"));
            }
            RolloutTarget::Tenants(parsed)
        }
    };
    let concurrency = body
        .concurrency
        .unwrap_or_else(|| crate::master::default_concurrency(state.settings.admin.pool_size));
    if !(1..=state.settings.admin.pool_size).contains(&concurrency) {
        return Err(ApiError::validation(
            "concurrency",
            format!(
                "must be 1 to admin.pool_size ({})",
                state.settings.admin.pool_size
            ),
        ));
    }
    let id = start_rollout(
        &state.pools,
        &body.version,
        &target,
        concurrency,
        &caller.actor,
    )
    .await?;
    let pools = state.pools.clone();
    actix_web::rt::spawn(async move {
        match run_rollout(&pools, id, concurrency, |_| {}).await {
            Ok(report) => {
                tracing::info!(rollout = %id, counts = ?report.counts, "master rollout finished")
            }
            Err(e) => tracing::error!(rollout = %id, error = %e, "master rollout stopped"),
        }
    });
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/admin/master/rollouts/{id}")))
        .json(serde_json::json!({ "id": id, "version": body.version })))
}

/// `GET /admin/master/rollouts/{id}`
pub async fn show(
    _: AdminCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::NotFound(format!("no rollout `{id}`"));
    let parsed = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let client = state.pools.control(Role::Admin).await?;
    let report = rollout_status(&client, parsed)
        .await?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(report))
}
