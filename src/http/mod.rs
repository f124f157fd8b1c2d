//! The HTTP surface: the only module that knows actix-web.
//!
//! Two route tables, one per listener: [`clinic_routes`] (`/v1`, clinic API
//! keys) and [`admin_routes`] (`/admin`, the admin token). Neither table
//! mentions the other's paths, so an admin route cannot answer on the clinic
//! listener or the reverse. Handlers extract, parse into domain types, call
//! the library and map the result; statuses are chosen only in [`ApiError`].

mod admin;
mod admin_master;
mod admin_reports;
mod body;
pub mod clinic;
pub mod door;
pub mod error;
mod extract;
pub mod first_head;
mod health;
mod intake;
mod logging;
pub mod openapi;
mod shed;

use std::sync::Arc;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse, ResponseError};

use crate::config::Settings;
use crate::master::MasterCache;
use crate::pools::{Pools, Role};
use crate::tenancy::KeyResolver;
pub use error::{ApiError, FieldError};
pub use extract::{AdminCaller, Clinic};
pub use intake::{intake, BodyBudget};
pub use logging::request_span;
pub use shed::shed;

/// What every handler can reach. One per application, never global, so
/// tests run many servers side by side.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub pools: Arc<Pools>,
    pub keys: KeyResolver,
    /// Master items by (tenant, release, code), bounded by weight.
    pub master_cache: MasterCache,
    /// This application's Prometheus registry.
    pub metrics: crate::metrics::Metrics,
    /// Set once a stop was asked for: every response then closes its
    /// connection, so clients move to the next process (rolling restarts).
    pub draining: std::sync::atomic::AtomicBool,
    /// Space for request bodies in flight on each listener.
    pub clinic_bodies: std::sync::Arc<BodyBudget>,
    pub admin_bodies: std::sync::Arc<BodyBudget>,
    /// What the clinic listener's door did.
    pub door: std::sync::Arc<door::DoorCounts>,
}

/// Which listener a route table belongs to: only these two exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Clinic,
    Admin,
}

impl Listener {
    /// The pool role its own database work (probes) uses.
    pub fn role(self) -> Role {
        match self {
            Listener::Clinic => Role::Clinic,
            Listener::Admin => Role::Admin,
        }
    }

    /// Its name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Listener::Clinic => "clinic",
            Listener::Admin => "admin",
        }
    }
}

/// A resource whose other methods answer `405` with an `Allow` header
/// listing `allow`.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || method_not_allowed(allow)))
}

/// Every clinic path: `/v1/...` and the health probes.
pub fn clinic_routes(cfg: &mut ServiceConfig) {
    use clinic::{claims, diseases, encounters, patients};
    cfg.service(resource("/healthz", "GET").get(health::healthz))
        .service(resource("/readyz", "GET").get(health::readyz))
        .service(
            web::scope("/v1")
                .service(resource("/openapi.json", "GET").get(openapi::document))
                .service(resource("/docs", "GET").get(openapi::page))
                .service(resource("/tenant", "GET").get(clinic::tenant))
                .service(resource("/master/items", "GET").get(clinic::master_items))
                .service(
                    resource("/patients", "POST, GET")
                        .post(patients::create)
                        .get(patients::search),
                )
                .service(
                    resource("/patients/{id}", "GET, PATCH")
                        .get(patients::show)
                        .patch(patients::update),
                )
                .service(resource("/patients/{id}/balance", "GET").get(patients::balance))
                .service(
                    resource("/patients/{id}/diseases", "GET, POST")
                        .get(diseases::list)
                        .post(diseases::add),
                )
                .service(
                    resource("/patients/{id}/diseases/{disease_id}", "PATCH, DELETE")
                        .patch(diseases::update)
                        .delete(diseases::delete),
                )
                .service(
                    resource("/encounters", "POST, GET")
                        .post(encounters::create)
                        .get(encounters::list),
                )
                .service(resource("/encounters/{id}", "GET").get(encounters::show))
                .service(resource("/encounters/{id}/void", "POST").post(encounters::void))
                .service(resource("/payments", "POST").post(encounters::pay))
                .service(resource("/claims/generate", "POST").post(claims::generate))
                .service(resource("/claims", "GET").get(claims::list))
                .service(resource("/claims/export", "GET").get(claims::export))
                .service(resource("/claims/{id}", "GET").get(claims::show))
                .service(resource("/claims/{id}/confirm", "POST").post(claims::confirm)),
        );
}

/// Every admin path: `/admin/...` and the health probes. `release_limit`
/// bounds a master release upload.
pub fn admin_routes(cfg: &mut ServiceConfig, release_limit: usize) {
    cfg.service(resource("/healthz", "GET").get(health::healthz))
        .service(resource("/readyz", "GET").get(health::readyz))
        .service(resource("/metrics", "GET").get(health::metrics))
        .service(
            web::scope("/admin")
                .service(
                    resource("/tenants", "POST, GET")
                        .post(admin::create_tenant)
                        .get(admin::list_tenants),
                )
                .service(
                    resource("/tenants/{slug}", "GET, DELETE")
                        .get(admin::show_tenant)
                        .delete(admin::delete_tenant),
                )
                .service(resource("/tenants/{slug}/stats", "GET").get(admin_reports::stats))
                .service(
                    resource("/tenants/{slug}/profile", "GET, PUT")
                        .get(admin::profile)
                        .put(admin::set_profile),
                )
                .service(resource("/reports/monthly", "GET").get(admin_reports::monthly))
                .service(resource("/pools", "GET").get(admin_reports::pools))
                .service(resource("/audit", "GET").get(admin_reports::audit_log))
                .service(resource("/tenants/{slug}/suspend", "POST").post(admin::suspend_tenant))
                .service(resource("/tenants/{slug}/resume", "POST").post(admin::resume_tenant))
                .service(
                    resource("/tenants/{slug}/api-keys", "POST, GET")
                        .post(admin::issue_key)
                        .get(admin::list_keys),
                )
                .service(
                    resource("/tenants/{slug}/api-keys/{id}", "DELETE").delete(admin::revoke_key),
                )
                .service(
                    resource("/master/releases", "POST, GET")
                        .app_data(web::PayloadConfig::new(release_limit))
                        .post(admin_master::import)
                        .get(admin_master::releases),
                )
                .service(resource("/migrations", "GET").get(admin::migrations))
                .service(resource("/master/rollouts", "POST").post(admin_master::start))
                .service(resource("/master/rollouts/{id}", "GET").get(admin_master::show)),
        );
}

async fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut response = ApiError::MethodNotAllowed.error_response();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(allow) {
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    response
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
