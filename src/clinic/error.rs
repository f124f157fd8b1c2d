//! How a clinic operation fails, in the clinic's words; `http/error.rs`
//! chooses the status.

use serde::Serialize;

use crate::pools::DbError;

/// A field that failed validation, named the way the client sent it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// A JSON Pointer-like path, e.g. `items/3/quantity`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The field errors found while parsing one request: every problem is
/// named, not only the first.
#[derive(Debug, Default)]
pub struct Invalid(pub Vec<FieldError>);

impl Invalid {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// `Ok(value)` when nothing was found wrong.
    pub fn or<T>(self, value: T) -> Result<T, ClinicError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ClinicError::Invalid(self.0))
        }
    }
}

/// Why a clinic operation did not happen. Nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum ClinicError {
    /// The object is not this clinic's (or does not exist).
    #[error("{0}")]
    NotFound(String),
    /// The object's state forbids the change (voided, confirmed…).
    #[error("{0}")]
    Conflict(String),
    /// The input names these fields as wrong.
    #[error("validation failed")]
    Invalid(Vec<FieldError>),
    /// The object changed since the version the client last saw.
    #[error("{0}")]
    Stale(String),
    /// A request with the same idempotency key is still being processed.
    #[error("a request with this Idempotency-Key is still being processed")]
    KeyInProgress,
    #[error(transparent)]
    Db(#[from] DbError),
    /// A fault of recept's own (a value that would not serialize).
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl ClinicError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ClinicError {
        ClinicError::Invalid(vec![FieldError::new(field, message)])
    }
}
