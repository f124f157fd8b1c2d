//! Tenants: their identity, the registry in the control schema, clinic API
//! keys and the cache that resolves a key to its tenant.
//!
//! A clinic request is bound to exactly one tenant by its API key, and by
//! nothing else: no path, header or body field selects a tenant.

mod keys;
pub mod profile;
mod provision;
mod registry;
mod resolver;
pub mod transfer;

use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

pub use crate::names::{BadSlug, Slug};
pub use keys::{ApiKey, IssuedKey, KeySecrets, Presented};
pub use provision::{create_tenant, place, purge_deleted, CreateTenantError};
pub use registry::{KeyRecord, Registry, TenantRecord};
pub use resolver::{KeyResolver, Resolution};

/// Whether a tenant may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Active,
    Suspended,
    Deleted,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<TenantStatus> {
        match s {
            "active" => Some(TenantStatus::Active),
            "suspended" => Some(TenantStatus::Suspended),
            "deleted" => Some(TenantStatus::Deleted),
            _ => None,
        }
    }
}

/// The tenant a clinic request is bound to: everything needed to reach its
/// schema. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TenantCtx {
    pub id: Uuid,
    pub slug: Slug,
    pub cluster: Arc<str>,
    pub schema: Arc<str>,
    pub status: TenantStatus,
    /// The newest tenant migration its schema holds; a tenant behind this
    /// binary is not served until a migration run brings it up.
    pub schema_version: i32,
    /// A move to another cluster is copying its data: not served until the
    /// move ends.
    pub moving: bool,
}
