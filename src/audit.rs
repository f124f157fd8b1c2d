//! The audit log of admin and operator writes, in the control schema: who
//! did what to which tenant, written inside the write's own transaction.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;

use crate::pools::DbError;

/// Who made a change and from where.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub remote_addr: Option<String>,
}

impl Actor {
    /// The operator at the command line, by login: the user the process
    /// runs as (or `$USER` when that user has no name).
    pub fn operator() -> Actor {
        let uid = nix::unistd::getuid();
        let login = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| format!("uid {uid}"));
        Actor {
            name: format!("{login} (command line)"),
            remote_addr: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<serde_json::Value>,
    pub remote_addr: Option<String>,
}

/// Records one admin write; call it inside the write's transaction.
pub async fn record(
    client: &impl GenericClient,
    actor: &Actor,
    action: &str,
    target: Option<&str>,
    detail: Option<serde_json::Value>,
) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO recept.audit_log (actor, action, target, detail, remote_addr) \
             VALUES ($1, $2, $3, $4, $5)",
            &[&actor.name, &action, &target, &detail, &actor.remote_addr],
        )
        .await?;
    Ok(())
}

/// Entries newest first, before `before` (an id) when given.
pub async fn list(
    client: &impl GenericClient,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEntry>, DbError> {
    let rows = client
        .query(
            "SELECT id, at, actor, action, target, detail, remote_addr FROM recept.audit_log \
             WHERE ($1::int8 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
            &[&before, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AuditEntry {
            id: r.get(0),
            at: r.get(1),
            actor: r.get(2),
            action: r.get(3),
            target: r.get(4),
            detail: r.get(5),
            remote_addr: r.get(6),
        })
        .collect())
}
