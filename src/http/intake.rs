//! Request bodies within the memory budget: a body is read only after the
//! caller is known, only into space reserved for it, and only for so long.
//!
//! For a request that carries a body, in this order and before any byte of
//! the body is read:
//!
//! 1. the caller is authenticated (a clinic's key, the admin token): a
//!    stranger's body is never read;
//! 2. a declared length past the route's limit is `413`;
//! 3. space is reserved from the listener's body budget (twice the body's
//!    declared length, or twice the limit when it is sent in chunks: the
//!    body and the extractor's copy of it), and from the tenant's share of
//!    it; when either is spent the request is `503` with `Retry-After`.
//!
//! A request refused `401` closes its connection too, with or without a
//! body, so that guessing keys costs the guesser a connection per guess.
//!
//! Then the body is read within `server.body_timeout_ms` (else `408`),
//! handed to the handler from memory, and its space returned when the
//! response is ready.
//!
//! Every refusal closes the connection at once (the server does not linger
//! on unread bodies: `startup.rs`), so a refused sender holds no connection
//! slot. One exception: a known caller's body past the limit is an honest
//! mistake more often than an attack, and a client still sending it would
//! read a reset connection instead of the `413`. Such a body is read and
//! thrown away for up to [`DRAIN`] and [`DRAIN_FACTOR`] times the limit,
//! by at most [`DRAINS`](crate::memory::DRAINS) requests of a listener at once, then answered.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::Payload;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, ConnectionType, Method};
use actix_web::middleware::Next;
use actix_web::{web, Error, FromRequest, HttpMessage, ResponseError};
use bytes::BytesMut;
use futures::StreamExt;

pub use crate::memory::BodyBudget;

use super::{AdminCaller, ApiError, AppState, Clinic, Listener};

/// How long a known caller's body past the limit is read (and thrown
/// away) before its `413`.
const DRAIN: Duration = Duration::from_secs(1);
/// How much of it, in multiples of the route's limit.
const DRAIN_FACTOR: usize = 16;

/// The largest body a route accepts.
fn limit_of(req: &ServiceRequest, state: &AppState) -> usize {
    if req.method() == Method::POST && req.path() == "/admin/master/releases" {
        state.settings.admin.release_limit_bytes
    } else {
        state.settings.server.body_limit_bytes
    }
}

/// The body's declared length: `Some(0)` when there is none, `None` when it
/// comes in chunks (or its length cannot be read; the parser refused an
/// invalid one already).
fn declared_length(req: &ServiceRequest) -> Option<usize> {
    let headers = req.headers();
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    match headers.get(header::CONTENT_LENGTH) {
        None => Some(0),
        Some(value) => value.to_str().ok()?.trim().parse().ok(),
    }
}

/// An answer given before the body was read: the connection closes, so
/// the rest of the body is never waited for.
fn refuse<B>(req: ServiceRequest, error: ApiError) -> ServiceResponse<EitherBody<B, BoxBody>> {
    let mut response = error.error_response();
    response
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    req.into_response(response).map_into_right_body()
}

pub async fn intake<B: MessageBody + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B, BoxBody>>, Error> {
    let length = declared_length(&req);
    if length == Some(0) {
        let mut response = next.call(req).await?;
        if response.status() == ApiError::Unauthorized.status_code() {
            // A caller without a valid key loses its connection: guessing
            // keys costs a new connection each time.
            response
                .response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
        }
        return Ok(response.map_into_left_body());
    }
    let (Some(state), Some(listener)) = (
        req.app_data::<web::Data<AppState>>().cloned(),
        req.app_data::<web::Data<Listener>>().map(|l| *l.get_ref()),
    ) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let limit = limit_of(&req, &state);

    // Who is sending it, before a byte of it is read. The extractors keep
    // what they found, so the handler does not look again.
    let (budget, tenant) = if listener == Listener::Clinic {
        if !super::shed::uses_the_pool(req.path()) {
            // Probes and the document read no body.
            return Ok(next.call(req).await?.map_into_left_body());
        }
        match Clinic::extract(req.request()).await {
            Ok(clinic) => {
                let id = clinic.0.id;
                // The handler's own `Clinic` finds it here.
                req.extensions_mut().insert(clinic);
                (&state.clinic_bodies, Some(id))
            }
            Err(e) => return Ok(refuse(req, e)),
        }
    } else {
        if let Err(e) = AdminCaller::extract(req.request()).await {
            return Ok(refuse(req, e));
        }
        (&state.admin_bodies, None)
    };

    let mut payload = req.take_payload();
    if length.is_some_and(|n| n > limit) {
        if length.is_some_and(|n| n <= limit.saturating_mul(DRAIN_FACTOR)) {
            drain(budget, &mut payload, limit).await;
        }
        return Ok(refuse(req, ApiError::PayloadTooLarge(limit)));
    }
    let expected = length.unwrap_or(limit);
    let reservation = match budget.reserve(expected.saturating_mul(2), tenant) {
        Ok(reservation) => reservation,
        Err(refusal) => return Ok(refuse(req, refusal.into())),
    };
    let body = match read_body(&mut payload, expected, limit, budget).await {
        Ok(body) => body,
        Err(e) => {
            if matches!(e, ApiError::PayloadTooLarge(_)) {
                drain(budget, &mut payload, limit).await;
            }
            return Ok(refuse(req, e));
        }
    };
    req.set_payload(Payload::from(body.freeze()));
    let response = next.call(req).await;
    drop(reservation);
    Ok(response?.map_into_left_body())
}

/// Reads and throws away the rest of a body past `limit` (see the
/// module's comment), when one of the budget's drains is free; gives up
/// after [`DRAIN`] or [`DRAIN_FACTOR`] times `limit`.
async fn drain(budget: &BodyBudget, payload: &mut Payload, limit: usize) {
    let Some(_drain) = budget.try_drain() else {
        return;
    };
    let most = limit.saturating_mul(DRAIN_FACTOR);
    let deadline = tokio::time::Instant::now() + DRAIN;
    let mut read = 0usize;
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, payload.next()).await {
        read += chunk.len();
        if read > most {
            return;
        }
    }
}

/// Reads the whole body within the budget's deadline.
async fn read_body(
    payload: &mut Payload,
    expected: usize,
    limit: usize,
    budget: &BodyBudget,
) -> Result<BytesMut, ApiError> {
    let mut body = BytesMut::with_capacity(expected.min(limit));
    let deadline = tokio::time::Instant::now() + budget.timeout();
    loop {
        match tokio::time::timeout_at(deadline, payload.next()).await {
            Err(_) => {
                budget.counts().timed_out.fetch_add(1, Relaxed);
                return Err(ApiError::BodyTimeout(budget.timeout().as_millis() as u64));
            }
            Ok(None) => return Ok(body),
            Ok(Some(Err(e))) => {
                return Err(ApiError::BadRequest(format!(
                    "the request body could not be read: {e}"
                )))
            }
            Ok(Some(Ok(chunk))) => {
                if body.len() + chunk.len() > limit {
                    return Err(ApiError::PayloadTooLarge(limit));
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}
