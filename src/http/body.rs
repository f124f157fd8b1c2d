//! Request bodies, the `Idempotency-Key` header and write answers, shared
//! by the clinic handlers that write.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::{ApiError, AppState};
use crate::clinic::{IdempotencyKey, Written};

/// Deserializes a JSON body into `T`, naming the field that is wrong.
pub fn parse<T: DeserializeOwned>(body: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            String::new()
        } else {
            path.replace(['.', '['], "/").replace(']', "")
        };
        let message = e.into_inner().to_string();
        // serde names a missing or unknown field in its message.
        let field = if field.is_empty() {
            message.split('`').nth(1).unwrap_or("").to_string()
        } else {
            field
        };
        ApiError::validation(field, message)
    })
}

/// A body that may be left out: empty is `None`; anything else must be
/// JSON sent as `application/json` (`415` otherwise, `400` when malformed).
pub fn optional_json(req: &HttpRequest, body: &[u8]) -> Result<Option<Value>, ApiError> {
    if body.is_empty() {
        return Ok(None);
    }
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<actix_web::mime::Mime>().ok())
        .is_some_and(|m| {
            m.subtype() == actix_web::mime::JSON || m.suffix() == Some(actix_web::mime::JSON)
        });
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "send the body as application/json".into(),
        ));
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))
}

/// For integer fields: a JSON number without a fractional part, as JSON
/// Schema's `integer` means (`7` and `7.0` alike). Values outside `i64`, or
/// with a fraction, are refused naming the field.
pub fn whole_number<'de, D>(deserializer: D) -> Result<i64, D::Error>
where
    D: serde::Deserializer<'de>,
{
    whole::<D::Error>(serde_json::Number::deserialize(deserializer)?)
}

/// [`whole_number`] for a field that may be absent or `null` (with
/// `#[serde(default)]`).
pub fn optional_whole_number<'de, D>(deserializer: D) -> Result<Option<i64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<serde_json::Number>::deserialize(deserializer)?
        .map(whole::<D::Error>)
        .transpose()
}

fn whole<E: serde::de::Error>(number: serde_json::Number) -> Result<i64, E> {
    if let Some(n) = number.as_i64() {
        return Ok(n);
    }
    number
        .as_f64()
        // Exactly representable whole numbers only: |n| < 2^53.
        .filter(|f| f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0)
        .map(|f| f as i64)
        .ok_or_else(|| E::custom(format!("{number} is not a whole number")))
}

/// For `Option<Option<T>>` fields: absent is `None`, `null` is `Some(None)`.
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Some(Option::deserialize(deserializer)?))
}

/// The request's `Idempotency-Key`, if it sent one, bound to `operation`
/// and the body.
pub fn idempotency_key(
    state: &AppState,
    req: &HttpRequest,
    operation: &'static str,
    body: &Value,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    Ok(Some(IdempotencyKey::new(
        value.as_bytes(),
        operation,
        body,
        state.settings.clinic.idempotency_ttl_s,
    )?))
}

/// A write's answer as HTTP: the body as it was serialized (and stored).
pub fn respond(written: Written) -> HttpResponse {
    let status = StatusCode::from_u16(written.status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    if let Some(etag) = &written.etag {
        response.insert_header((header::ETAG, etag.as_str()));
    }
    response
        .content_type(actix_web::mime::APPLICATION_JSON)
        .body(written.body)
}
