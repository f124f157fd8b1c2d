//! Extractors that authenticate: a clinic's API key, the admin token.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures::future::LocalBoxFuture;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::audit::Actor;
use crate::pools::{ClinicWorker, Shard};
use crate::tenancy::{Resolution, Slug, TenantCtx, TenantStatus};

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    bearer_token(value).map(str::to_string)
}

/// The token of an `Authorization: Bearer <token>` header's value.
pub(super) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

fn state(req: &HttpRequest) -> web::Data<AppState> {
    req.app_data::<web::Data<AppState>>()
        .expect("AppState is registered on every listener")
        .clone()
}

/// The slug of the tenant a request was bound to, kept in the request's
/// extensions for the request log and metrics.
#[derive(Debug, Clone)]
pub struct RequestTenant(pub Slug);

/// The tenant a clinic request is bound to, by its API key alone, and the
/// shard of the clinic pools its worker uses. Found once per request: kept
/// in the request's extensions for the handler when [`super::intake`]
/// authenticated the caller before reading its body.
#[derive(Clone)]
pub struct Clinic(pub TenantCtx, pub Shard);

impl FromRequest for Clinic {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Clinic, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        if let Some(found) = req.extensions().get::<Clinic>().cloned() {
            return Box::pin(ready(Ok(found)));
        }
        let token = bearer(req);
        let state = state(req);
        // Set up by the clinic listener's worker when it started.
        let shard = req
            .app_data::<web::Data<ClinicWorker>>()
            .map_or(Shard::FIRST, |w| w.shard());
        let req = req.clone();
        Box::pin(async move {
            let token = token.ok_or(ApiError::Unauthorized)?;
            let resolution = state
                .keys
                .resolve(&state.pools, &token)
                .await
                .map_err(|e| ApiError::from(e.duplicate()))?;
            let tenant = match resolution {
                Resolution::Tenant(tenant) => tenant,
                Resolution::Unknown => return Err(ApiError::Unauthorized),
            };
            match tenant.status {
                TenantStatus::Active => {}
                TenantStatus::Suspended => {
                    return Err(ApiError::Forbidden("this clinic is suspended".into()))
                }
                TenantStatus::Deleted => return Err(ApiError::Unauthorized),
            }
            if tenant.moving {
                return Err(ApiError::Unavailable {
                    message: "this clinic's data is being moved; retry shortly".into(),
                    retry_after_ms: 1_000,
                });
            }
            if tenant.schema_version < crate::migrate::latest_tenant_version() {
                return Err(ApiError::Unavailable {
                    message: "this clinic's data is being upgraded; retry shortly".into(),
                    retry_after_ms: 5_000,
                });
            }
            tracing::Span::current().record("tenant", tenant.slug.as_str());
            req.extensions_mut()
                .insert(RequestTenant(tenant.slug.clone()));
            Ok(Clinic(tenant, shard))
        })
    }
}

/// Proof that the request carried the admin token, and who sent it (for
/// the audit log): the optional `X-Admin-Actor` header and the peer address.
pub struct AdminCaller {
    pub actor: Actor,
}

impl FromRequest for AdminCaller {
    type Error = ApiError;
    type Future = Ready<Result<AdminCaller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = state(req);
        let presented = bearer(req).unwrap_or_default();
        // Compare digests so neither the length nor the contents of the
        // token leak through timing.
        let expected = Sha256::digest(state.settings.admin.token.as_bytes());
        let given = Sha256::digest(presented.as_bytes());
        let ok: bool = expected.ct_eq(&given).into();
        if !ok {
            return ready(Err(ApiError::Unauthorized));
        }
        let name = req
            .headers()
            .get("x-admin-actor")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 100)
            .unwrap_or("admin")
            .to_string();
        let remote_addr = req.peer_addr().map(|a| a.ip().to_string());
        ready(Ok(AdminCaller {
            actor: Actor { name, remote_addr },
        }))
    }
}
