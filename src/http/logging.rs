//! One span per request, with a request id returned as `X-Request-Id`, and
//! one log line when it finishes. Only the path is logged, never the query
//! string (it may carry a patient's name) or a credential.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::field::Empty;
use tracing::Instrument;
use uuid::Uuid;

use actix_web::web;

use super::extract::RequestTenant;
use super::{AppState, Listener};

/// The longest query string served; longer ones get `414`.
pub const MAX_QUERY_BYTES: usize = 2048;

/// The most header bytes (names and values) served; more get `431`.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A caller's own request id is kept if it is short and plain.
fn incoming_id(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(REQUEST_ID)?.to_str().ok()?;
    let plain = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    plain.then(|| value.to_string())
}

pub async fn request_span(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let request_id = incoming_id(&req).unwrap_or_else(|| Uuid::now_v7().to_string());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        path = %req.path(),
        tenant = Empty,
        route = Empty,
        pool_wait_ms = Empty,
        status = Empty,
        duration_ms = Empty,
    );
    let started = Instant::now();
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    let result = if req.query_string().len() > MAX_QUERY_BYTES {
        Err(super::ApiError::QueryTooLong(MAX_QUERY_BYTES).into())
    } else if header_bytes > MAX_HEADER_BYTES {
        Err(super::ApiError::HeadersTooLarge(MAX_HEADER_BYTES).into())
    } else {
        next.call(req).instrument(span.clone()).await
    };
    let elapsed = started.elapsed();
    span.record("duration_ms", elapsed.as_secs_f64() * 1000.0);
    match result {
        Ok(mut response) => {
            let status = response.status();
            let pattern = response.request().match_pattern();
            let route = pattern.as_deref().unwrap_or("unmatched");
            span.record("route", route);
            let mut draining = false;
            if let Some(state) = response.request().app_data::<web::Data<AppState>>() {
                let listener = response
                    .request()
                    .app_data::<web::Data<Listener>>()
                    .map_or("admin", |l| l.name());
                let tenant = response
                    .request()
                    .extensions()
                    .get::<RequestTenant>()
                    .map(|t| t.0.clone());
                state
                    .metrics
                    .request(listener, route, status.as_u16(), elapsed, tenant.as_ref());
                draining = state.draining.load(std::sync::atomic::Ordering::Relaxed);
                let slow = state.settings.server.slow_request_ms;
                if elapsed.as_millis() as u64 >= slow {
                    span.in_scope(|| tracing::warn!(slow_ms = slow, "slow request"));
                }
            }
            // At the door every answer closes its connection (`door.rs`).
            let at_the_door = response
                .request()
                .app_data::<web::Data<super::door::AtTheDoor>>()
                .is_some();
            if draining || at_the_door {
                // Stopping: this client's next request goes to another
                // process. At the door: a stranger gets one answer.
                response
                    .response_mut()
                    .head_mut()
                    .set_connection_type(ConnectionType::Close);
            }
            span.record("status", status.as_u16());
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert(REQUEST_ID, value);
            }
            span.in_scope(|| {
                if status.is_server_error() {
                    tracing::warn!("request finished")
                } else {
                    tracing::info!("request finished")
                }
            });
            Ok(response)
        }
        Err(e) => {
            span.in_scope(|| tracing::warn!(error = %e, "request failed"));
            Err(e)
        }
    }
}
