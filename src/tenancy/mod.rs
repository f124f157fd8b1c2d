//! Tenants: their identity, the registry in the control schema, clinic API
//! keys and the cache that resolves a key to its tenant.
//!
//! A clinic request is bound to exactly one tenant by its API key, and by
//! nothing else: no path, header or body field selects a tenant.

pub mod audit;
mod keys;
mod provision;
mod registry;
mod resolver;
pub mod transfer;

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

pub use keys::{ApiKey, IssuedKey, KeySecrets, Presented};
pub use provision::{create_tenant, place, purge_deleted, CreateTenantError};
pub use registry::{KeyRecord, Registry, TenantRecord};
pub use resolver::{KeyResolver, Resolution};

/// A tenant's slug: `^[a-z][a-z0-9_]{2,39}$`. Its schema name derives from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Slug(Arc<str>);

/// Why a string is not a slug.
#[derive(Debug, thiserror::Error)]
#[error("a slug is 3 to 40 characters: a lowercase letter, then lowercase letters, digits or underscores")]
pub struct BadSlug;

impl Slug {
    pub fn parse(s: &str) -> Result<Slug, BadSlug> {
        let bytes = s.as_bytes();
        let ok = (3..=40).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase()
            && bytes[1..]
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        if ok {
            Ok(Slug(s.into()))
        } else {
            Err(BadSlug)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The schema that holds this tenant's tables.
    pub fn schema_name(&self) -> String {
        format!("t_{}", self.0)
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_pattern() {
        for good in ["abc", "clinic_01", "a23", &"a".repeat(40)] {
            assert!(Slug::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "1abc",
            "Abc",
            "ab-c",
            "ab c",
            "abc;",
            "",
            "ab'c",
            "äbc",
            &"a".repeat(41),
        ] {
            assert!(Slug::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_schema_derives_from_the_slug() {
        assert_eq!(Slug::parse("sakura").unwrap().schema_name(), "t_sakura");
    }
}
