//! Request bodies and idempotency, shared by the clinic handlers that write.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use crate::db::idempotency::{self, KeyState, StoredResponse};
use crate::pools::{TenantConn, Tx};

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
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(n) = number.as_i64() {
        return Ok(n);
    }
    number
        .as_f64()
        // Exactly representable whole numbers only: |n| < 2^53.
        .filter(|f| f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0)
        .map(|f| f as i64)
        .ok_or_else(|| serde::de::Error::custom(format!("{number} is not a whole number")))
}

/// For `Option<Option<T>>` fields: absent is `None`, `null` is `Some(None)`.
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Some(Option::deserialize(deserializer)?))
}

/// An `Idempotency-Key` and the request it guards.
pub struct Idempotency {
    key: String,
    route: &'static str,
    hash: [u8; 32],
    /// `clinic.idempotency_ttl_s`.
    ttl_s: f64,
}

impl Idempotency {
    /// The key of `req`, if it has one, bound to `route` and the body.
    pub fn of(
        req: &HttpRequest,
        route: &'static str,
        body: &Value,
    ) -> Result<Option<Idempotency>, ApiError> {
        let Some(value) = req.headers().get("idempotency-key") else {
            return Ok(None);
        };
        let key = value
            .to_str()
            .ok()
            .filter(|k| (1..=200).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                ApiError::validation(
                    "Idempotency-Key",
                    "must be 1 to 200 visible ASCII characters",
                )
            })?;
        // serde_json's maps are ordered, so equal JSON hashes equally
        // whatever the key order or spacing of the request.
        let canonical = serde_json::to_vec(body).map_err(|e| ApiError::Internal(e.into()))?;
        let ttl_s = req
            .app_data::<web::Data<AppState>>()
            .map_or(86_400, |state| state.settings.clinic.idempotency_ttl_s);
        Ok(Some(Idempotency {
            key: key.to_string(),
            route,
            hash: Sha256::digest(&canonical).into(),
            ttl_s: ttl_s as f64,
        }))
    }
}

/// Runs `work` in one tenant transaction; with a key, a repeat of the same
/// request replays the first response and a different request under the
/// same key is refused.
pub async fn write_once(
    conn: &TenantConn,
    idempotency: Option<Idempotency>,
    work: impl AsyncFnOnce(&Tx) -> Result<StoredResponse, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let stored = conn
        .write(async |tx| {
            if let Some(idem) = &idempotency {
                match idempotency::claim(tx, &idem.key, idem.route, &idem.hash, idem.ttl_s).await? {
                    KeyState::Fresh => {
                        // Expired keys go a few at a time, on about one
                        // keyed write in 64, so the table stays bounded.
                        if rand::random::<u8>() < 4 {
                            idempotency::purge_expired(tx, idem.ttl_s).await?;
                        }
                    }
                    KeyState::Replay(stored) => return Ok(stored),
                    KeyState::Mismatch => {
                        return Err(ApiError::validation(
                            "Idempotency-Key",
                            "was already used for a different request",
                        ))
                    }
                    KeyState::InProgress => {
                        return Err(ApiError::Conflict(
                            "a request with this Idempotency-Key is still being processed".into(),
                        ))
                    }
                }
            }
            let stored = work(tx).await?;
            if let Some(idem) = &idempotency {
                idempotency::complete(tx, &idem.key, &stored).await?;
            }
            Ok::<_, ApiError>(stored)
        })
        .await?;
    Ok(respond(stored))
}

/// A stored response as HTTP.
pub fn respond(stored: StoredResponse) -> HttpResponse {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    if let Some(etag) = &stored.etag {
        response.insert_header((header::ETAG, etag.as_str()));
    }
    response.json(stored.body)
}

/// A JSON response to store.
pub fn stored(
    status: StatusCode,
    body: &impl serde::Serialize,
    etag: Option<String>,
) -> Result<StoredResponse, ApiError> {
    Ok(StoredResponse {
        status: status.as_u16(),
        body: serde_json::to_value(body).map_err(|e| ApiError::Internal(e.into()))?,
        etag,
    })
}
