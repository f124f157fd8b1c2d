//! Where tenants' schemas are: the latest run and each version's tenants.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use uuid::Uuid;

use crate::pools::DbError;

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: Uuid,
    pub target_version: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub tenants: i32,
    pub migrated: i32,
    pub current: i32,
    pub failed: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionCount {
    pub version: i32,
    pub tenants: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedTenant {
    pub slug: String,
    pub version: i32,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MigrationStatus {
    /// The newest tenant migration this binary has.
    pub binary_version: i32,
    pub latest_run: Option<RunRecord>,
    /// How many tenants are at each version.
    pub versions: Vec<VersionCount>,
    /// Up to 100 tenants behind the binary, by slug.
    pub behind: Vec<String>,
    /// Tenants that failed in the latest run.
    pub failed: Vec<FailedTenant>,
}

pub async fn status(client: &impl GenericClient) -> Result<MigrationStatus, DbError> {
    let binary_version = super::latest_tenant_version();
    let latest_run = client
        .query_opt(
            // A run still going has its progress in the ledger, one row
            // per tenant as it finishes.
            "SELECT r.id, r.target_version, r.started_at, r.finished_at, r.tenants, \
             CASE WHEN r.finished_at IS NULL THEN (SELECT count(*) FROM recept.migration_ledger l \
               WHERE l.run_id = r.id AND l.error IS NULL)::int ELSE r.migrated END, \
             r.current, \
             CASE WHEN r.finished_at IS NULL THEN (SELECT count(*) FROM recept.migration_ledger l \
               WHERE l.run_id = r.id AND l.error IS NOT NULL)::int ELSE r.failed END \
             FROM recept.migration_runs r ORDER BY r.started_at DESC LIMIT 1",
            &[],
        )
        .await?
        .map(|r| RunRecord {
            id: r.get(0),
            target_version: r.get(1),
            started_at: r.get(2),
            finished_at: r.get(3),
            tenants: r.get(4),
            migrated: r.get(5),
            current: r.get(6),
            failed: r.get(7),
        });
    let versions = client
        .query(
            "SELECT schema_version, count(*) FROM recept.tenants WHERE status <> 'deleted' \
             GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| VersionCount {
            version: r.get(0),
            tenants: r.get(1),
        })
        .collect();
    let behind = client
        .query(
            "SELECT slug FROM recept.tenants WHERE status <> 'deleted' AND schema_version < $1 \
             ORDER BY slug LIMIT 100",
            &[&binary_version],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let failed = match &latest_run {
        None => Vec::new(),
        Some(run) => client
            .query(
                "SELECT t.slug, l.version_after, l.error FROM recept.migration_ledger l \
                 JOIN recept.tenants t ON t.id = l.tenant_id \
                 WHERE l.run_id = $1 AND l.error IS NOT NULL ORDER BY t.slug",
                &[&run.id],
            )
            .await?
            .iter()
            .map(|r| FailedTenant {
                slug: r.get(0),
                version: r.get(1),
                error: r.get(2),
            })
            .collect(),
    };
    Ok(MigrationStatus {
        binary_version,
        latest_run,
        versions,
        behind,
        failed,
    })
}
