//! Releases in the control schema: import (all or nothing), list, current.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use futures::SinkExt;
use serde::Serialize;

use super::{valid_version, MasterItem};
use crate::audit::{self, Actor};
use crate::pools::{DbError, Pools, Role};

#[derive(Debug, Clone, Serialize)]
pub struct ReleaseSummary {
    pub version: String,
    pub created_at: DateTime<Utc>,
    pub items: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("release `{0}` already exists")]
    Exists(String),
    #[error("`{0}` is not a release version (1 to 40 letters, digits, `.`, `_` or `-`)")]
    BadVersion(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for ReleaseError {
    fn from(e: tokio_postgres::Error) -> Self {
        ReleaseError::Db(e.into())
    }
}

/// Stores `items` as release `version`, in one transaction.
pub async fn import_release(
    pools: &Pools,
    version: &str,
    items: &[MasterItem],
    actor: &Actor,
) -> Result<ReleaseSummary, ReleaseError> {
    if !valid_version(version) {
        return Err(ReleaseError::BadVersion(version.to_string()));
    }
    let mut client = pools.control(Role::Admin).await?;
    let tx = client.transaction().await?;
    let created_at: DateTime<Utc> = tx
        .query_opt(
            "INSERT INTO recept.master_releases (version, items) VALUES ($1, $2) \
             ON CONFLICT (version) DO NOTHING RETURNING created_at",
            &[&version, &(items.len() as i32)],
        )
        .await?
        .ok_or_else(|| ReleaseError::Exists(version.to_string()))?
        .get(0);
    let sink = tx
        .copy_in(
            "COPY recept.master_items (version, code, kind, name, points, \
             unit_price_centiyen, valid_from, valid_to) FROM STDIN (FORMAT csv)",
        )
        .await?;
    let mut sink = std::pin::pin!(sink);
    for chunk in items.chunks(5_000) {
        sink.send(Bytes::from(csv_rows(version, chunk))).await?;
    }
    sink.as_mut().finish().await?;
    let detail = serde_json::json!({"items": items.len()});
    audit::record(&tx, actor, "master.import", Some(version), Some(detail)).await?;
    tx.commit().await?;
    Ok(ReleaseSummary {
        version: version.to_string(),
        created_at,
        items: items.len() as i32,
    })
}

/// Items as `COPY … (FORMAT csv)` rows, with `version` first.
fn csv_rows(version: &str, items: &[MasterItem]) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(items.len() * 80));
    for item in items {
        let points = item.points.map(|p| p.to_string()).unwrap_or_default();
        let price = item.unit_price.map(|p| p.0.to_string()).unwrap_or_default();
        let from = item.valid_from.to_string();
        let to = item.valid_to.map(|d| d.to_string()).unwrap_or_default();
        // Writing to a Vec cannot fail.
        let _ = writer.write_record([
            version,
            &item.code,
            item.kind.as_str(),
            &item.name,
            &points,
            &price,
            &from,
            &to,
        ]);
    }
    writer.into_inner().unwrap_or_default()
}

/// Releases, newest first.
pub async fn list_releases(client: &impl GenericClient) -> Result<Vec<ReleaseSummary>, DbError> {
    let rows = client
        .query(
            "SELECT version, created_at, items FROM recept.master_releases \
             ORDER BY created_at DESC, version DESC",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| ReleaseSummary {
            version: row.get(0),
            created_at: row.get(1),
            items: row.get(2),
        })
        .collect())
}

/// The newest release, which new tenants copy unless told otherwise.
pub async fn current_release(client: &impl GenericClient) -> Result<Option<String>, DbError> {
    Ok(client
        .query_opt(
            "SELECT version FROM recept.master_releases \
             ORDER BY created_at DESC, version DESC LIMIT 1",
            &[],
        )
        .await?
        .map(|row| row.get(0)))
}

pub async fn release_exists(client: &impl GenericClient, version: &str) -> Result<bool, DbError> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM recept.master_releases WHERE version = $1",
            &[&version],
        )
        .await?
        .is_some())
}

/// Parses and imports one release file, or says which lines are wrong.
pub async fn import_file(
    pools: &Pools,
    file: &std::path::Path,
    version: &str,
    actor: &Actor,
) -> anyhow::Result<ReleaseSummary> {
    use anyhow::Context;
    let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let items = super::parse_release(&data).map_err(|e| match e {
        super::ImportError::Lines(lines) => {
            let listed: Vec<String> = lines
                .iter()
                .map(|l| format!("  line {}: {}", l.line, l.message))
                .collect();
            anyhow::anyhow!(
                "{} was refused; nothing was imported:\n{}",
                file.display(),
                listed.join("\n")
            )
        }
        super::ImportError::Empty => anyhow::anyhow!("{} has no items", file.display()),
    })?;
    Ok(import_release(pools, version, &items, actor).await?)
}

/// Imports the national basic master files of `dir` as release `version`,
/// whole or not at all; bad rows are reported by file and line.
pub async fn import_official_dir(
    pools: &Pools,
    dir: &std::path::Path,
    version: &str,
    actor: &Actor,
) -> anyhow::Result<(ReleaseSummary, super::OfficialRelease)> {
    let read = super::read_official_dir(dir).map_err(|problems| {
        let listed: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
        anyhow::anyhow!(
            "the master files in {} were refused; nothing was imported:\n{}",
            dir.display(),
            listed.join("\n")
        )
    })?;
    if read.items.is_empty() {
        anyhow::bail!("the master files in {} hold no items", dir.display());
    }
    let summary = import_release(pools, version, &read.items, actor).await?;
    Ok((summary, read))
}
