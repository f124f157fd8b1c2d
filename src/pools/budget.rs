//! The connection budget: what this host's pools need of each cluster,
//! against what each cluster allows. recept refuses to start with a budget
//! that does not fit, and says which numbers to change.

use serde::Serialize;

use super::{Pools, Role};
use crate::config::Settings;

/// One cluster's budget.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterBudget {
    pub cluster: String,
    pub hosts: usize,
    pub clinic: usize,
    pub admin: usize,
    pub migration: usize,
    /// Key-lookup connections (the control cluster only).
    pub keys: usize,
    /// Connections all hosts may open: hosts × (pools + the migration run's
    /// own connection).
    pub needed: usize,
    /// `max_connections` minus the reserved connections; `None` when the
    /// cluster could not be asked.
    pub allowed: Option<usize>,
    pub max_connections: Option<usize>,
    pub reserved: Option<usize>,
    /// The cluster's replica for reports, when it names one.
    pub replica: Option<ReplicaBudget>,
}

/// What this host's report pools need of a cluster's replica: hosts ×
/// `admin.replica_pool_size`, against the replica's own
/// `max_connections` (a hot standby has its own, at least the primary's).
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaBudget {
    pub report: usize,
    pub needed: usize,
    /// `None` when the replica could not be asked; `error` says why.
    pub allowed: Option<usize>,
    pub max_connections: Option<usize>,
    pub reserved: Option<usize>,
    pub error: Option<String>,
}

impl ClusterBudget {
    pub fn fits(&self) -> bool {
        self.allowed.is_none_or(|allowed| self.needed <= allowed)
            && self
                .replica
                .as_ref()
                .and_then(|r| r.allowed.map(|allowed| r.needed <= allowed))
                .unwrap_or(true)
    }

    /// Why it does not fit, naming the settings to change.
    pub fn problem(&self) -> Option<String> {
        self.primary_problem().or_else(|| self.replica_problem())
    }

    fn replica_problem(&self) -> Option<String> {
        let replica = self.replica.as_ref()?;
        let allowed = replica.allowed?;
        (replica.needed > allowed).then(|| {
            format!(
                "the replica of cluster `{}` allows {allowed} connections (max_connections {} minus {} \
                 reserved), but {} host(s) (server.hosts_per_cluster) × admin.replica_pool_size {} \
                 need {}; lower admin.replica_pool_size or the hosts, or raise the replica's \
                 max_connections",
                self.cluster,
                replica.max_connections.unwrap_or(0),
                replica.reserved.unwrap_or(0),
                self.hosts,
                replica.report,
                replica.needed
            )
        })
    }

    fn primary_problem(&self) -> Option<String> {
        let allowed = self.allowed?;
        (self.needed > allowed).then(|| {
            format!(
                "cluster `{}` allows {allowed} connections (max_connections {} minus {} reserved), \
                 but {} host(s) (server.hosts_per_cluster) × (clinic.pool_size {} + admin.pool_size {} \
                 + migrate.pool_size {} + clinic.key_lookup_pool_size {} + 1 for a migration run) \
                 need {}; lower the pool sizes or the hosts, or raise max_connections",
                self.cluster,
                self.max_connections.unwrap_or(0),
                self.reserved.unwrap_or(0),
                self.hosts,
                self.clinic,
                self.admin,
                self.migration,
                self.keys,
                self.needed
            )
        })
    }
}

/// Each cluster's budget; a cluster that cannot be reached has `allowed`
/// `None` and its error alongside.
pub async fn measure(pools: &Pools, settings: &Settings) -> Vec<(ClusterBudget, Option<String>)> {
    let hosts = settings.server.hosts_per_cluster;
    let mut budgets = Vec::new();
    for cluster in settings.clusters.keys() {
        let keys = if *cluster == settings.control.cluster {
            settings.clinic.key_lookup_pool_size
        } else {
            0
        };
        let per_host = settings.clinic.pool_size
            + settings.admin.pool_size
            + settings.migrate.pool_size
            + keys
            + 1;
        let mut budget = ClusterBudget {
            cluster: cluster.clone(),
            hosts,
            clinic: settings.clinic.pool_size,
            admin: settings.admin.pool_size,
            migration: settings.migrate.pool_size,
            keys,
            needed: hosts * per_host,
            allowed: None,
            max_connections: None,
            reserved: None,
            replica: None,
        };
        if pools.has_replica(cluster) {
            let report = settings.admin.replica_pool_size;
            let mut replica = ReplicaBudget {
                report,
                needed: hosts * report,
                allowed: None,
                max_connections: None,
                reserved: None,
                error: None,
            };
            match connection_limits(pools, cluster, Role::Report).await {
                Ok((max, reserved)) => {
                    replica.max_connections = Some(max);
                    replica.reserved = Some(reserved);
                    replica.allowed = Some(max.saturating_sub(reserved));
                }
                Err(e) => replica.error = Some(e.to_string()),
            }
            budget.replica = Some(replica);
        }
        let asked = connection_limits(pools, cluster, Role::Admin).await;
        match asked {
            Ok((max, reserved)) => {
                budget.max_connections = Some(max);
                budget.reserved = Some(reserved);
                budget.allowed = Some(max.saturating_sub(reserved));
                budgets.push((budget, None));
            }
            Err(e) => budgets.push((budget, Some(e.to_string()))),
        }
    }
    budgets
}

/// A cluster's `max_connections` and the connections it reserves, asked
/// on a connection of `role`.
async fn connection_limits(
    pools: &Pools,
    cluster: &str,
    role: Role,
) -> Result<(usize, usize), super::DbError> {
    let client = pools.get(cluster, role).await?;
    let row = client
        .query_one(
            "SELECT current_setting('max_connections')::int8, \
             current_setting('superuser_reserved_connections')::int8 \
             + coalesce(current_setting('reserved_connections', true)::int8, 0)",
            &[],
        )
        .await?;
    Ok((row.get::<_, i64>(0) as usize, row.get::<_, i64>(1) as usize))
}
