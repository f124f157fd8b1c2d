//! Master data: versioned releases in the control schema, a copy inside
//! every tenant's schema, diff-based rollouts between releases, and the
//! weighted cache that pricing reads through.
//!
//! Copies are made inside the database (`INSERT … SELECT` on the control
//! cluster, `COPY` streamed through recept for tenants on other clusters),
//! never row by row over the network.

mod cache;
mod copy;
mod csv_import;
mod generate;
mod release;
mod rollout;

use chrono::NaiveDate;
use serde::Serialize;

use crate::billing::Centiyen;

pub use cache::{CachedItems, MasterCache};
pub use copy::copy_release_into;
pub use csv_import::{parse_release, ImportError, LineError};
pub use generate::{generate_release, to_csv};
pub use release::{
    current_release, import_file, import_release, list_releases, release_exists, ReleaseError,
    ReleaseSummary,
};
pub use rollout::{
    latest_rollout, rollout, rollout_status, run_rollout, start_rollout, RolloutCounts,
    RolloutError, RolloutReport, RolloutTarget, TenantRollout,
};

/// What a master item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Procedure,
    Drug,
    Disease,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "procedure" => Some(Kind::Procedure),
            "drug" => Some(Kind::Drug),
            "disease" => Some(Kind::Disease),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Procedure => "procedure",
            Kind::Drug => "drug",
            Kind::Disease => "disease",
        }
    }
}

/// One row of a release: a code with its price for one validity period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterItem {
    pub code: String,
    pub kind: Kind,
    pub name: String,
    /// Procedures only.
    pub points: Option<i32>,
    /// Drugs only.
    pub unit_price: Option<Centiyen>,
    pub valid_from: NaiveDate,
    /// Inclusive; `None` is open-ended.
    pub valid_to: Option<NaiveDate>,
}

impl MasterItem {
    /// Whether this row applies on `date`.
    pub fn valid_on(&self, date: NaiveDate) -> bool {
        self.valid_from <= date && self.valid_to.is_none_or(|to| date <= to)
    }

    /// Approximate bytes held, for the cache's weigher.
    pub fn weight(&self) -> usize {
        std::mem::size_of::<MasterItem>() + self.code.len() + self.name.len()
    }
}

/// How many tenants a rollout upgrades at once by default: one per core of
/// this host, at most `admin_pool_size`. More steals CPU from clinic
/// requests on a small database host (see load/RESULTS.md).
pub fn default_concurrency(admin_pool_size: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(admin_pool_size).max(1)
}

/// A release version name: `^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$`.
pub fn valid_version(version: &str) -> bool {
    let bytes = version.as_bytes();
    (1..=40).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The columns of `master_items`, in table order after `version`.
pub const ITEM_COLUMNS: &str =
    "code, kind, name, points, unit_price_centiyen, valid_from, valid_to";

pub fn item_from_row(row: &tokio_postgres::Row) -> MasterItem {
    let kind: String = row.get("kind");
    MasterItem {
        code: row.get("code"),
        kind: Kind::parse(&kind).unwrap_or(Kind::Disease),
        name: row.get("name"),
        points: row.get("points"),
        unit_price: row
            .get::<_, Option<i64>>("unit_price_centiyen")
            .map(Centiyen),
        valid_from: row.get("valid_from"),
        valid_to: row.get("valid_to"),
    }
}
