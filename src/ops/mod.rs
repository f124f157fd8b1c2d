//! Admin and operator writes: one home for each, called alike by the admin
//! listener's handlers and by the command line. Each runs in one
//! control-schema transaction that also writes its audit record with the
//! caller's actor (`X-Admin-Actor` and the peer address over HTTP, the
//! operator's login on the command line), so the two doors cannot drift
//! apart and no write escapes the audit log.
//!
//! Operations take parsed inputs (a [`Slug`](crate::tenancy::Slug), a key
//! id) and return domain results or an [`OpError`]; the HTTP layer maps
//! that to a status in one place (`http/error.rs`), the command line to a
//! message.

mod keys;
mod profile;
mod tenants;

pub use keys::{issue_key, revoke_key, NewKey};
pub use profile::{clinic_profile, set_profile, ProfileInput};
pub use tenants::set_status;

use crate::pools::DbError;
use crate::tenancy::{Registry, Slug, TenantRecord, TenantStatus};

/// Why an admin or operator write was refused.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// What it names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It cannot be done in the current state (e.g. the tenant is deleted).
    #[error("{0}")]
    Conflict(String),
    /// An input is out of its bounds.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// Several inputs are out of their bounds, each named.
    #[error("invalid: {}", .0.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; "))]
    InvalidFields(Vec<(&'static str, String)>),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for OpError {
    fn from(e: tokio_postgres::Error) -> Self {
        OpError::Db(e.into())
    }
}

/// The tenant, locked until `tx` ends so that a delete cannot slip between
/// this check and the write; a missing tenant is `NotFound`, a deleted one
/// `Conflict`.
async fn live_tenant(
    tx: &deadpool_postgres::Transaction<'_>,
    slug: &Slug,
) -> Result<TenantRecord, OpError> {
    let tenant = Registry::lock(tx, slug)
        .await?
        .ok_or_else(|| OpError::NotFound(format!("no tenant `{slug}`")))?;
    if tenant.status == TenantStatus::Deleted {
        return Err(OpError::Conflict(format!("tenant `{slug}` is deleted")));
    }
    Ok(tenant)
}
