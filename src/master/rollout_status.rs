//! What rollouts did: the newest one for metrics, one rollout per tenant
//! for the admin API and the command line.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use uuid::Uuid;

use crate::pools::DbError;

/// One tenant's part of a rollout.
#[derive(Debug, Clone, Serialize)]
pub struct TenantRollout {
    pub slug: String,
    /// `pending`, `done`, `skipped` (already on the target) or `failed`.
    pub state: String,
    pub from_version: Option<String>,
    pub error: Option<String>,
    pub duration_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RolloutCounts {
    pub pending: usize,
    pub done: usize,
    pub skipped: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    pub id: Uuid,
    pub version: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub counts: RolloutCounts,
    pub tenants: Vec<TenantRollout>,
}

/// The newest rollout: its release, whether it finished, and its tenants
/// by state (for metrics).
pub async fn latest_rollout(
    client: &impl GenericClient,
) -> Result<Option<(String, bool, RolloutCounts)>, DbError> {
    let rows = client
        .query(
            "SELECT r.version, r.finished_at IS NOT NULL, rt.state, count(rt.*)              FROM (SELECT * FROM recept.master_rollouts ORDER BY created_at DESC LIMIT 1) r              LEFT JOIN recept.master_rollout_tenants rt ON rt.rollout_id = r.id              GROUP BY 1, 2, 3",
            &[],
        )
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut counts = RolloutCounts::default();
    for row in &rows {
        let n = row.get::<_, i64>(3) as usize;
        match row.get::<_, Option<&str>>(2) {
            Some("done") => counts.done += n,
            Some("skipped") => counts.skipped += n,
            Some("failed") => counts.failed += n,
            Some(_) => counts.pending += n,
            None => {}
        }
    }
    Ok(Some((first.get(0), first.get(1), counts)))
}

/// The state of rollout `id`, per tenant.
pub async fn rollout_status(
    client: &impl GenericClient,
    id: Uuid,
) -> Result<Option<RolloutReport>, DbError> {
    let Some(head) = client
        .query_opt(
            "SELECT version, created_at, finished_at FROM recept.master_rollouts WHERE id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let rows = client
        .query(
            "SELECT t.slug, rt.state, rt.from_version, rt.error, \
             extract(epoch FROM rt.finished_at - rt.started_at)::float8 * 1000 \
             FROM recept.master_rollout_tenants rt JOIN recept.tenants t ON t.id = rt.tenant_id \
             WHERE rt.rollout_id = $1 ORDER BY t.slug",
            &[&id],
        )
        .await?;
    let mut counts = RolloutCounts::default();
    let tenants: Vec<TenantRollout> = rows
        .iter()
        .map(|row| {
            let state: String = row.get(1);
            match state.as_str() {
                "done" => counts.done += 1,
                "skipped" => counts.skipped += 1,
                "failed" => counts.failed += 1,
                _ => counts.pending += 1,
            }
            TenantRollout {
                slug: row.get(0),
                state,
                from_version: row.get(2),
                error: row.get(3),
                duration_ms: row.get(4),
            }
        })
        .collect();
    Ok(Some(RolloutReport {
        id,
        version: head.get(0),
        created_at: head.get(1),
        finished_at: head.get(2),
        counts,
        tenants,
    }))
}
