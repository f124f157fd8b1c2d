//! The HTTP surface: the only module that knows actix-web.
//!
//! Two route tables, one per listener: [`clinic_routes`] (`/v1`, clinic API
//! keys) and [`admin_routes`] (`/admin`, the admin token). Neither table
//! mentions the other's paths, so an admin route cannot answer on the clinic
//! listener or the reverse. Handlers extract, parse into domain types, call
//! the library and map the result; statuses are chosen only in [`ApiError`].

mod admin;
mod admin_master;
mod clinic;
pub mod error;
mod extract;
mod health;
mod logging;

use std::sync::Arc;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse};

use crate::config::Settings;
use crate::pools::{Pools, Role};
use crate::tenancy::KeyResolver;
pub use error::{ApiError, FieldError};
pub use extract::{AdminCaller, Clinic};
pub use logging::request_span;

/// What every handler can reach. One per application, never global, so
/// tests run many servers side by side.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub pools: Arc<Pools>,
    pub keys: KeyResolver,
}

/// Which listener a route table belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Listener(pub Role);

/// Every clinic path: `/v1/...` and the health probes.
pub fn clinic_routes(cfg: &mut ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .service(
            web::scope("/v1")
                .route("/tenant", web::get().to(clinic::tenant))
                .route("/master/items", web::get().to(clinic::master_items)),
        );
}

/// Every admin path: `/admin/...` and the health probes. `release_limit`
/// bounds a master release upload.
pub fn admin_routes(cfg: &mut ServiceConfig, release_limit: usize) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .service(
            web::scope("/admin")
                .route("/tenants", web::post().to(admin::create_tenant))
                .route("/tenants", web::get().to(admin::list_tenants))
                .route("/tenants/{slug}", web::get().to(admin::show_tenant))
                .route(
                    "/tenants/{slug}/suspend",
                    web::post().to(admin::suspend_tenant),
                )
                .route(
                    "/tenants/{slug}/resume",
                    web::post().to(admin::resume_tenant),
                )
                .route("/tenants/{slug}/api-keys", web::post().to(admin::issue_key))
                .route("/tenants/{slug}/api-keys", web::get().to(admin::list_keys))
                .route(
                    "/tenants/{slug}/api-keys/{id}",
                    web::delete().to(admin::revoke_key),
                )
                .service(
                    web::resource("/master/releases")
                        .app_data(web::PayloadConfig::new(release_limit))
                        .route(web::post().to(admin_master::import))
                        .route(web::get().to(admin_master::releases)),
                )
                .route("/master/rollouts", web::post().to(admin_master::start))
                .route("/master/rollouts/{id}", web::get().to(admin_master::show)),
        );
}

/// How malformed bodies, paths and queries are answered (problem+json).
pub fn extractor_configs(cfg: &mut ServiceConfig, body_limit: usize) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(body_limit)
            .error_handler(|e, _| json_error(e).into()),
    )
    .app_data(web::PathConfig::default().error_handler(|e, _| path_error(e).into()))
    .app_data(web::QueryConfig::default().error_handler(|e, _| query_error(e).into()));
}

fn json_error(e: JsonPayloadError) -> ApiError {
    match e {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::PayloadTooLarge(limit),
        JsonPayloadError::ContentType => {
            ApiError::UnsupportedMediaType("send the body as application/json".into())
        }
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            ApiError::validation(field_of(&e), e.to_string())
        }
        JsonPayloadError::Deserialize(e) => ApiError::BadRequest(format!("malformed JSON: {e}")),
        other => ApiError::BadRequest(other.to_string()),
    }
}

/// Best effort at the field serde complained about (`missing field `x``,
/// `unknown field `x``); empty when it does not say.
fn field_of(e: &serde_json::Error) -> String {
    let text = e.to_string();
    text.split('`').nth(1).unwrap_or("").to_string()
}

fn path_error(e: PathError) -> ApiError {
    ApiError::NotFound(format!("no such resource ({e})"))
}

fn query_error(e: QueryPayloadError) -> ApiError {
    ApiError::validation("query", e.to_string())
}

/// The answer for paths no route matches.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
