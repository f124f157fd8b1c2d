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
mod diff;
mod generate;
mod official;
mod release;
mod rollout;
mod rollout_status;

pub use crate::billing::{Kind, MasterItem};
pub use crate::db::master_items::{item_from_row, ITEM_COLUMNS};

pub use cache::{CachedItems, MasterCache};
pub use copy::copy_release_into;
pub use csv_import::{parse_release, ImportError, LineError};
pub use generate::{generate_release, to_csv};
pub use official::{read_official_dir, OfficialProblem, OfficialRelease};
pub use release::{
    current_release, import_file, import_official_dir, import_release, list_releases,
    release_exists, ReleaseError, ReleaseSummary,
};
pub use rollout::{rollout, run_rollout, start_rollout, RolloutError, RolloutTarget};
pub use rollout_status::{
    latest_rollout, rollout_status, RolloutCounts, RolloutReport, TenantRollout,
};

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
