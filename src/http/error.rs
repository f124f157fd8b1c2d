//! `ApiError`: the one place HTTP statuses are chosen. Every error leaves
//! as RFC 9457 `application/problem+json` with a stable `type`.

use actix_web::dev::ServiceResponse;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::pools::DbError;

pub use crate::clinic::FieldError;

/// Everything a handler can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("send If-Match with the ETag you last saw")]
    PreconditionRequired,
    #[error("request body is too large (the limit is {0} bytes)")]
    PayloadTooLarge(usize),
    #[error("this method is not allowed on this resource")]
    MethodNotAllowed,
    #[error("the query string is too long (the limit is {0} bytes)")]
    QueryTooLong(usize),
    #[error("the request headers are too large (the limit is {0} bytes)")]
    HeadersTooLarge(usize),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// This tenant is over its share of the host: retry after the delay.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_ms: u64,
    },
    /// Overload or an unreachable database: retry after the given delay.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after_ms: u64,
    },
    #[error("the request took longer than its time limit")]
    Timeout,
    /// The request body did not arrive within `server.body_timeout_ms`.
    #[error("the request body did not arrive within {0} ms; the connection is closed")]
    BodyTimeout(u64),
    /// The connection to the database broke while the write was being
    /// committed, and whether it was stored could not be learned. Not an
    /// invitation to retry: a plain retry may write twice.
    #[error(
        "the connection to the database broke while this write was being committed, and \
         whether it was stored could not be learned; look it up before sending it again, or \
         send it again with the same Idempotency-Key, which replays it if it was stored"
    )]
    OutcomeUnknown,
    /// The clinic's schema, or a table of it, is gone or damaged: a fault
    /// no retry mends, for an operator to look at. Never an invitation to
    /// retry.
    #[error("this clinic's data cannot be read; the operators have been alerted")]
    DataMissing,
    /// Anything unexpected: logged with its cause chain, answered generically.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    /// The stable problem `type` (a URN so it never depends on a host name).
    fn problem_type(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "urn:recept:problem:bad-request",
            ApiError::Unauthorized => "urn:recept:problem:unauthorized",
            ApiError::Forbidden(_) => "urn:recept:problem:forbidden",
            ApiError::NotFound(_) => "urn:recept:problem:not-found",
            ApiError::Conflict(_) => "urn:recept:problem:conflict",
            ApiError::PreconditionFailed(_) => "urn:recept:problem:precondition-failed",
            ApiError::PreconditionRequired => "urn:recept:problem:precondition-required",
            ApiError::PayloadTooLarge(_) => "urn:recept:problem:payload-too-large",
            ApiError::MethodNotAllowed => "urn:recept:problem:method-not-allowed",
            ApiError::QueryTooLong(_) => "urn:recept:problem:query-too-long",
            ApiError::HeadersTooLarge(_) => "urn:recept:problem:headers-too-large",
            ApiError::UnsupportedMediaType(_) => "urn:recept:problem:unsupported-media-type",
            ApiError::Validation(_) => "urn:recept:problem:validation",
            ApiError::TooManyRequests { .. } => "urn:recept:problem:too-many-requests",
            ApiError::Unavailable { .. } => "urn:recept:problem:unavailable",
            ApiError::Timeout => "urn:recept:problem:timeout",
            ApiError::BodyTimeout(_) => "urn:recept:problem:body-timeout",
            ApiError::OutcomeUnknown => "urn:recept:problem:outcome-unknown",
            ApiError::DataMissing => "urn:recept:problem:data-missing",
            ApiError::Internal(_) => "urn:recept:problem:internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "Malformed request",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound(_) => "Not found",
            ApiError::Conflict(_) => "Conflict",
            ApiError::PreconditionFailed(_) => "Precondition failed",
            ApiError::PreconditionRequired => "Precondition required",
            ApiError::PayloadTooLarge(_) => "Payload too large",
            ApiError::MethodNotAllowed => "Method not allowed",
            ApiError::QueryTooLong(_) => "Query string too long",
            ApiError::HeadersTooLarge(_) => "Request headers too large",
            ApiError::UnsupportedMediaType(_) => "Unsupported media type",
            ApiError::Validation(_) => "Validation failed",
            ApiError::TooManyRequests { .. } => "Too many requests",
            ApiError::Unavailable { .. } => "Service unavailable",
            ApiError::Timeout => "Timed out",
            ApiError::BodyTimeout(_) => "Request body too slow",
            ApiError::OutcomeUnknown => "Outcome unknown",
            ApiError::DataMissing => "Clinic data missing",
            ApiError::Internal(_) => "Internal error",
        }
    }
}

/// An RFC 9457 problem, as every error is answered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A stable URN naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// A short, stable summary of the kind of problem.
    pub title: &'static str,
    /// The HTTP status, repeated.
    pub status: u16,
    /// What went wrong with this request, for people.
    pub detail: String,
    /// The fields that failed validation (422 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// How long to wait before retrying (503 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::QueryTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::OutcomeUnknown | ApiError::DataMissing => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let detail = match self {
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                "an unexpected error occurred; it has been logged".to_string()
            }
            other => other.to_string(),
        };
        let retry_after_ms = match self {
            ApiError::Unavailable { retry_after_ms, .. }
            | ApiError::TooManyRequests { retry_after_ms, .. } => Some(*retry_after_ms),
            _ => None,
        };
        let problem = Problem {
            kind: self.problem_type(),
            title: self.title(),
            status: status.as_u16(),
            detail,
            errors: match self {
                ApiError::Validation(errors) => Some(errors.clone()),
                _ => None,
            },
            retry_after_ms,
        };
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        if let Some(ms) = retry_after_ms {
            // Retry-After is in whole seconds by RFC 9110; the exact delay in
            // milliseconds is in the body and in Retry-After-Ms.
            let seconds = ms.div_ceil(1000).max(1);
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(seconds)));
            response.insert_header(("Retry-After-Ms", HeaderValue::from(ms)));
        }
        if matches!(self, ApiError::Unauthorized) {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(problem)
    }
}

impl From<crate::ops::OpError> for ApiError {
    fn from(e: crate::ops::OpError) -> Self {
        use crate::ops::OpError;
        match e {
            OpError::NotFound(message) => ApiError::NotFound(message),
            OpError::Conflict(message) => ApiError::Conflict(message),
            OpError::Invalid { field, message } => ApiError::validation(field, message),
            OpError::InvalidFields(fields) => ApiError::Validation(
                fields
                    .into_iter()
                    .map(|(field, message)| crate::clinic::FieldError {
                        field: field.to_string(),
                        message,
                    })
                    .collect(),
            ),
            OpError::Db(e) => e.into(),
        }
    }
}

impl From<crate::tenancy::CreateTenantError> for ApiError {
    fn from(e: crate::tenancy::CreateTenantError) -> Self {
        use crate::tenancy::CreateTenantError;
        match e {
            CreateTenantError::SlugTaken(_) | CreateTenantError::SchemaExists(_) => {
                ApiError::Conflict(e.to_string())
            }
            CreateTenantError::UnknownCluster(_) => ApiError::validation("cluster", e.to_string()),
            CreateTenantError::UnknownRelease(_) => {
                ApiError::validation("master_release", e.to_string())
            }
            CreateTenantError::Db(e) => e.into(),
            CreateTenantError::Migrate(e) => ApiError::Internal(e.into()),
        }
    }
}

impl From<crate::master::ImportError> for ApiError {
    fn from(e: crate::master::ImportError) -> Self {
        use crate::master::ImportError;
        match e {
            ImportError::Lines(lines) => ApiError::Validation(
                lines
                    .into_iter()
                    .map(|l| FieldError::new(format!("line {}", l.line), l.message))
                    .collect(),
            ),
            ImportError::Empty => ApiError::validation("body", "the release has no items"),
        }
    }
}

impl From<crate::master::ReleaseError> for ApiError {
    fn from(e: crate::master::ReleaseError) -> Self {
        use crate::master::ReleaseError;
        match e {
            ReleaseError::Exists(_) => ApiError::Conflict(e.to_string()),
            ReleaseError::BadVersion(_) => ApiError::validation("version", e.to_string()),
            ReleaseError::Db(e) => e.into(),
        }
    }
}

impl From<crate::master::RolloutError> for ApiError {
    fn from(e: crate::master::RolloutError) -> Self {
        use crate::master::RolloutError;
        match e {
            RolloutError::UnknownRelease(_) => ApiError::validation("version", e.to_string()),
            RolloutError::UnknownTenants(_) => ApiError::validation("tenants", e.to_string()),
            RolloutError::Db(e) => e.into(),
        }
    }
}

impl From<crate::clinic::ClinicError> for ApiError {
    fn from(e: crate::clinic::ClinicError) -> Self {
        use crate::clinic::ClinicError;
        match e {
            ClinicError::NotFound(message) => ApiError::NotFound(message),
            ClinicError::Conflict(message) => ApiError::Conflict(message),
            ClinicError::Invalid(errors) => ApiError::Validation(errors),
            ClinicError::Stale(message) => ApiError::PreconditionFailed(message),
            ClinicError::KeyInProgress => ApiError::Conflict(e.to_string()),
            ClinicError::Db(e) => e.into(),
            ClinicError::Internal(e) => ApiError::Internal(e),
        }
    }
}

impl From<crate::memory::Refusal> for ApiError {
    fn from(refusal: crate::memory::Refusal) -> Self {
        match refusal {
            crate::memory::Refusal::TenantShare => ApiError::TooManyRequests {
                message: "this clinic has too many request bodies in flight".into(),
                retry_after_ms: 1_000,
            },
            crate::memory::Refusal::Budget => ApiError::Unavailable {
                message:
                    "this server's space for request bodies in flight is in use; retry shortly"
                        .into(),
                retry_after_ms: 1_000,
            },
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(cause) => {
                tracing::warn!(%cause, "database busy or unavailable");
                ApiError::Unavailable {
                    message: "the database is busy or unavailable; retry shortly".into(),
                    retry_after_ms: 500,
                }
            }
            DbError::StatementTimeout => ApiError::Timeout,
            DbError::QueueFull => ApiError::Unavailable {
                message: "the server is at capacity; retry shortly".into(),
                retry_after_ms: 500,
            },
            DbError::WaitTimeout => ApiError::Unavailable {
                message: "no database connection came free in time; retry shortly".into(),
                retry_after_ms: 500,
            },
            DbError::BadText => {
                ApiError::BadRequest("text must not contain NUL (\\u0000) characters".into())
            }
            DbError::SchemaMissing(cause) => {
                // Not the client's doing and not transient: an operator
                // must look (the tenant's schema was dropped or damaged).
                tracing::error!(%cause, "a tenant's schema is missing objects");
                ApiError::DataMissing
            }
            DbError::OutcomeUnknown(xact) => {
                tracing::error!(%xact, "a write's outcome is unknown");
                ApiError::OutcomeUnknown
            }
            e @ DbError::ReplicaBehind { lag_ms, max_ms, .. } => {
                // Wait about as long as the replica must catch up.
                let excess = lag_ms.map_or(5_000, |lag| lag.saturating_sub(max_ms));
                ApiError::Unavailable {
                    message: format!(
                        "{e}; reports are kept off the primary (admin.replica_behind = \"refuse\"); retry when it has caught up"
                    ),
                    retry_after_ms: excess.clamp(1_000, 30_000),
                }
            }
            e @ DbError::ReplicaDown { .. } => ApiError::Unavailable {
                message: format!(
                    "{e}; reports are kept off the primary (admin.replica_behind = \"refuse\"); retry when it is back"
                ),
                retry_after_ms: 5_000,
            },
            DbError::TenantBusy => ApiError::TooManyRequests {
                message: "this clinic has too many requests in flight; retry shortly".into(),
                retry_after_ms: 200,
            },
            other => ApiError::Internal(other.into()),
        }
    }
}

/// Turns any error response that is not problem+json yet (a `405` from
/// routing, a `413` from a payload limit) into one, so every error a client
/// sees has the same shape.
pub fn ensure_problem<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if is_problem {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(0),
        StatusCode::NOT_FOUND => ApiError::NotFound("no such resource".into()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType("".into()),
        s if s.is_client_error() => {
            ApiError::BadRequest(s.canonical_reason().unwrap_or("bad request").to_lowercase())
        }
        _ => ApiError::Internal(anyhow::anyhow!(
            "error response {status} without a problem body"
        )),
    };
    let (req, _) = res.into_parts();
    let response = error.error_response();
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, response)
            .map_into_boxed_body()
            .map_into_right_body(),
    ))
}
