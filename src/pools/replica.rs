//! Admin reports on a cluster's streaming replica: a connection of the
//! report pool, and how fresh the replica is, read on that connection
//! before the report runs.
//!
//! A replica's freshness is the time since the last transaction it
//! replayed, unless it has replayed everything it received from a
//! primary it is still streaming from: then it trails by nothing, however
//! long ago that last transaction was (an idle primary sends nothing).
//! Past `admin.max_replica_lag_ms`, or when the replica cannot be reached,
//! `admin.replica_behind` decides: refuse (`503`, the primary untouched)
//! or run on the primary's admin pool, and the report says which.

use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use serde::Serialize;

use super::{DbError, Pools, Role};
use crate::config::ReplicaBehind;

/// When a replica is too far behind, and what a report does then.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rule {
    pub(super) max_lag_ms: u64,
    pub(super) behind: ReplicaBehind,
}

/// Where a report's figures were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Replica,
    Primary,
}

/// How fresh one cluster's part of a report is.
#[derive(Debug, Clone, Serialize)]
pub struct Freshness {
    pub cluster: String,
    pub source: Source,
    /// How far the replica trailed its primary when the report began: 0
    /// when it had replayed all it received and was still streaming, and
    /// on the primary.
    pub lag_ms: u64,
    /// The commit time of the last transaction the replica replayed
    /// (`pg_last_xact_replay_timestamp()`); absent on the primary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed_at: Option<DateTime<Utc>>,
    /// Why the report ran on the primary although the cluster has a
    /// replica (`admin.replica_behind = "primary"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// A connection for one report, and how fresh what it reads is.
pub struct ReportConn {
    pub client: Object,
    pub freshness: Freshness,
}

/// The replica's own account of how far behind it is. One statement, run
/// on the connection the report will use. `pg_stat_wal_receiver` shows a
/// row (its pid, at least, to any role) only while a WAL receiver runs.
const FRESHNESS: &str = "SELECT pg_is_in_recovery(), \
       pg_last_xact_replay_timestamp(), \
       pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() \
         AND EXISTS (SELECT FROM pg_stat_wal_receiver), \
       (extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000)::int8";

/// Why a replica could not serve a report.
enum Unfit {
    Behind { lag_ms: Option<u64> },
    Down(DbError),
}

impl Pools {
    /// Whether `cluster` names a replica for reports.
    pub fn has_replica(&self, cluster: &str) -> bool {
        self.clusters
            .get(cluster)
            .is_some_and(|pools| pools.report.is_some())
    }

    /// A connection for a read-only admin report on `cluster`: on its
    /// replica when it has one that is fresh enough, else as
    /// `admin.replica_behind` says; on the primary's admin pool when it
    /// has none.
    pub async fn report(&self, cluster: &str) -> Result<ReportConn, DbError> {
        if !self.has_replica(cluster) {
            return self.on_primary(cluster, None).await;
        }
        let why = match self.on_replica(cluster).await {
            Ok(conn) => return Ok(conn),
            Err(unfit) => unfit,
        };
        let reason = match &why {
            Unfit::Behind { lag_ms: Some(lag) } => format!(
                "the replica trails by {lag} ms (admin.max_replica_lag_ms {})",
                self.replica_rule.max_lag_ms
            ),
            Unfit::Behind { lag_ms: None } => {
                "the replica has replayed nothing since it started and is not caught up".into()
            }
            Unfit::Down(e) => format!("the replica cannot be reached: {e}"),
        };
        tracing::warn!(cluster, %reason, "a report cannot run on the replica");
        match self.replica_rule.behind {
            ReplicaBehind::Refuse => Err(match why {
                Unfit::Behind { lag_ms } => DbError::ReplicaBehind {
                    cluster: cluster.to_string(),
                    lag_ms,
                    max_ms: self.replica_rule.max_lag_ms,
                },
                Unfit::Down(e) => DbError::ReplicaDown {
                    cluster: cluster.to_string(),
                    cause: e.to_string(),
                },
            }),
            ReplicaBehind::Primary => self.on_primary(cluster, Some(reason)).await,
        }
    }

    /// A report on the primary's admin pool; `fallback` says why when the
    /// cluster has a replica.
    async fn on_primary(
        &self,
        cluster: &str,
        fallback: Option<String>,
    ) -> Result<ReportConn, DbError> {
        Ok(ReportConn {
            client: self.get(cluster, Role::Admin).await?,
            freshness: Freshness {
                cluster: cluster.to_string(),
                source: Source::Primary,
                lag_ms: 0,
                replayed_at: None,
                fallback,
            },
        })
    }

    async fn on_replica(&self, cluster: &str) -> Result<ReportConn, Unfit> {
        let client = self.get(cluster, Role::Report).await.map_err(Unfit::Down)?;
        let row = client
            .query_one(FRESHNESS, &[])
            .await
            .map_err(|e| Unfit::Down(e.into()))?;
        let in_recovery: bool = row.get(0);
        let replayed_at: Option<DateTime<Utc>> = row.get(1);
        let caught_up: bool = row.get::<_, Option<bool>>(2).unwrap_or(false);
        let since_replay: Option<i64> = row.get(3);
        let lag_ms = if !in_recovery || caught_up {
            // A promoted replica, or one with nothing left to replay.
            Some(0)
        } else {
            since_replay.map(|ms| ms.max(0) as u64)
        };
        match lag_ms {
            Some(lag_ms) if lag_ms <= self.replica_rule.max_lag_ms => Ok(ReportConn {
                client,
                freshness: Freshness {
                    cluster: cluster.to_string(),
                    source: Source::Replica,
                    lag_ms,
                    replayed_at,
                    fallback: None,
                },
            }),
            lag_ms => Err(Unfit::Behind { lag_ms }),
        }
    }
}
