//! Load shedding: while this worker's share of every clinic pool is
//! overloaded, a clinic request is refused before any work is done for it
//! (no key lookup, no routing, no request log), so that refusing the excess
//! costs as little as possible of the CPU the admitted requests need.

use std::sync::atomic::Ordering;
use std::sync::LazyLock;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::{Error, HttpResponse, ResponseError};

use super::{ApiError, AppState, Listener};
use crate::pools::{ClinicWorker, DbError, Shard};

/// The answer to a shed request: the same problem, status and headers as a
/// request refused by admission for a full queue (`ApiError` chooses them),
/// serialized once.
type Refusal = (StatusCode, Vec<(header::HeaderName, HeaderValue)>, Bytes);
static REFUSAL: LazyLock<Refusal> = LazyLock::new(|| {
    let response = ApiError::from(DbError::QueueFull).error_response();
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let body = response
        .into_body()
        .try_into_bytes()
        .unwrap_or_else(|_| Bytes::new());
    (status, headers, body)
});

/// Whether `path` needs a clinic connection: the API, not its documents or
/// the health probes (those stay answerable under overload).
pub(super) fn uses_the_pool(path: &str) -> bool {
    path.starts_with("/v1/") && path != "/v1/openapi.json" && path != "/v1/docs"
}

pub async fn shed<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B, BoxBody>>, Error> {
    let refusal = match (
        req.app_data::<web::Data<AppState>>(),
        req.app_data::<web::Data<Listener>>(),
    ) {
        (Some(state), Some(listener))
            if *listener.get_ref() == Listener::Clinic
                && uses_the_pool(req.path())
                && state.pools.clinic_refuses_all(
                    req.app_data::<web::Data<ClinicWorker>>()
                        .map_or(Shard::FIRST, |w| w.shard()),
                ) =>
        {
            Some(refusal(state))
        }
        _ => None,
    };
    match refusal {
        None => Ok(next.call(req).await?.map_into_left_body()),
        Some(response) => Ok(req.into_response(response).map_into_right_body()),
    }
}

/// The refusal, counted, closing the connection when the server is stopping.
fn refusal(state: &AppState) -> HttpResponse {
    state.metrics.shed();
    let (status, headers, body) = &*REFUSAL;
    let mut response = HttpResponse::build(*status);
    for (name, value) in headers {
        response.insert_header((name.clone(), value.clone()));
    }
    let mut response = response.body(body.clone());
    if state.draining.load(Ordering::Relaxed) {
        response
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    response
}
