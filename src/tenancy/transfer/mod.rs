//! One tenant's data as a file: `recept tenants export` writes a consistent
//! snapshot of every table of the tenant's schema, `recept tenants import`
//! creates a tenant from it (under the same or another slug, on any
//! cluster) with exactly those rows.
//!
//! The file is line-based: a JSON header, then for each table a JSON line
//! naming it and its columns followed by its rows in PostgreSQL's `COPY`
//! text format (which escapes newlines inside values) and a `\.` line.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};

use super::{create_tenant, CreateTenantError, Registry, Slug, TenantStatus};
use crate::audit::Actor;
use crate::migrate::latest_tenant_version;
use crate::names::quote_ident;
use crate::pools::{DbError, Pools, Role};

mod moving;

pub use moving::{move_tenant, MoveReport};

const FORMAT: &str = "recept-tenant-export";

#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub slug: String,
    pub name: String,
    pub schema_version: i32,
    pub master_release: Option<String>,
    pub exported_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TableHeader {
    table: String,
    columns: Vec<String>,
    rows: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("no tenant `{0}`")]
    NoTenant(String),
    #[error("tenant `{0}` is deleted")]
    Deleted(String),
    #[error("not a tenant export: {0}")]
    BadFile(String),
    #[error(
        "the export is at tenant migration {found}, this binary's tenants at {wanted}: \
         import it with the binary that exported it, then migrate"
    )]
    Version { found: i32, wanted: i32 },
    #[error("cannot move: {0}")]
    Move(String),
    #[error(transparent)]
    Create(#[from] CreateTenantError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("writing or reading the export: {0}")]
    Io(#[from] std::io::Error),
}

impl From<tokio_postgres::Error> for TransferError {
    fn from(e: tokio_postgres::Error) -> Self {
        TransferError::Db(e.into())
    }
}

/// The tenant's tables (without the migration history), parents before
/// the tables whose foreign keys point at them, with their columns.
async fn tables(
    client: &impl deadpool_postgres::GenericClient,
    schema: &str,
) -> Result<Vec<(String, Vec<String>)>, TransferError> {
    let rows = client
        .query(
            "SELECT c.relname::text, \
               coalesce(array_agg(DISTINCT r.relname::text) \
                 FILTER (WHERE r.relname IS NOT NULL AND r.oid <> c.oid), '{}'), \
               (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a \
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                 AND a.attgenerated = '') \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'f' \
             LEFT JOIN pg_class r ON r.oid = k.confrelid \
             WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname <> 'refinery_schema_history' \
             GROUP BY c.oid, c.relname ORDER BY c.relname",
            &[&schema],
        )
        .await?;
    let mut parents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut columns: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows {
        let table: String = row.get(0);
        parents.insert(
            table.clone(),
            row.get::<_, Vec<String>>(1).into_iter().collect(),
        );
        columns.insert(table, row.get(2));
    }
    let mut ordered = Vec::new();
    while !parents.is_empty() {
        let ready: Vec<String> = parents
            .iter()
            .filter(|(_, p)| p.iter().all(|p| !parents.contains_key(p)))
            .map(|(t, _)| t.clone())
            .collect();
        if ready.is_empty() {
            return Err(TransferError::BadFile(format!(
                "the foreign keys of {schema} form a cycle"
            )));
        }
        for table in ready {
            parents.remove(&table);
            let cols = columns.remove(&table).unwrap_or_default();
            ordered.push((table, cols));
        }
    }
    Ok(ordered)
}

fn column_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes a consistent snapshot of tenant `slug` to `out`. Returns the rows
/// written per table.
pub async fn export(
    pools: &Pools,
    slug: &Slug,
    out: &mut impl Write,
) -> Result<Vec<(String, u64)>, TransferError> {
    let tenant = {
        let control = pools.control(Role::Admin).await?;
        Registry::find(&control, slug)
            .await?
            .ok_or_else(|| TransferError::NoTenant(slug.to_string()))?
    };
    if tenant.status == TenantStatus::Deleted {
        return Err(TransferError::Deleted(slug.to_string()));
    }
    let mut client = pools.get(&tenant.cluster, Role::Migration).await?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let header = Header {
        format: FORMAT.into(),
        version: 1,
        slug: slug.to_string(),
        name: tenant.name.clone(),
        schema_version: tenant.schema_version,
        master_release: tenant.master_release.clone(),
        exported_at: chrono::Utc::now(),
    };
    writeln!(
        out,
        "{}",
        serde_json::to_string(&header).map_err(std::io::Error::other)?
    )?;
    let counts = write_tables(&tx, &tenant.schema, out).await?;
    tx.commit().await?;
    out.flush()?;
    Ok(counts)
}

/// Writes every table of `schema_name` as seen by `tx`: for each, a JSON
/// line and its rows in `COPY` text, ended by `\.`.
async fn write_tables(
    tx: &deadpool_postgres::Transaction<'_>,
    schema_name: &str,
    out: &mut impl Write,
) -> Result<Vec<(String, u64)>, TransferError> {
    let schema = quote_ident(schema_name);
    let mut counts = Vec::new();
    for (table, columns) in tables(tx, schema_name).await? {
        let mut data = Vec::new();
        let stream = tx
            .copy_out(&format!(
                "COPY {schema}.{} ({}) TO STDOUT",
                quote_ident(&table),
                column_list(&columns)
            ))
            .await?;
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk?);
        }
        let rows = data.iter().filter(|b| **b == b'\n').count() as u64;
        let head = TableHeader {
            table: table.clone(),
            columns,
            rows,
        };
        writeln!(
            out,
            "{}",
            serde_json::to_string(&head).map_err(std::io::Error::other)?
        )?;
        out.write_all(&data)?;
        writeln!(out, "\\.")?;
        counts.push((table, rows));
    }
    Ok(counts)
}

/// Creates tenant `as_slug` (or the exported slug) on `cluster` with
/// exactly the exported rows. All or nothing: if the rows cannot be loaded,
/// the new tenant is marked deleted and its schema dropped.
pub async fn import(
    pools: &Pools,
    input: &mut impl BufRead,
    as_slug: Option<Slug>,
    cluster: &str,
    actor: &Actor,
) -> Result<(Slug, Vec<(String, u64)>), TransferError> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    let header: Header = serde_json::from_str(line.trim_end())
        .map_err(|e| TransferError::BadFile(format!("the first line: {e}")))?;
    if header.format != FORMAT || header.version != 1 {
        return Err(TransferError::BadFile(format!(
            "format {} version {}",
            header.format, header.version
        )));
    }
    let wanted = latest_tenant_version();
    if header.schema_version != wanted {
        return Err(TransferError::Version {
            found: header.schema_version,
            wanted,
        });
    }
    let slug = match as_slug {
        Some(slug) => slug,
        None => Slug::parse(&header.slug)
            .map_err(|_| TransferError::BadFile(format!("slug `{}`", header.slug)))?,
    };
    let record = create_tenant(
        pools,
        &slug,
        &header.name,
        cluster,
        header.master_release.as_deref(),
        actor,
    )
    .await?;
    let loaded = async {
        let mut client = pools.get(&record.cluster, Role::Migration).await?;
        let tx = client.transaction().await?;
        let counts = load_into(&tx, &record.schema, input).await?;
        tx.commit().await?;
        Ok::<_, TransferError>(counts)
    }
    .await;
    match loaded {
        Ok(counts) => Ok((slug, counts)),
        Err(e) => {
            // Leave nothing half-made behind.
            if let Ok(client) = pools.get(&record.cluster, Role::Admin).await {
                let _ = super::provision::drop_schema(&client, &record.schema).await;
            }
            if let Ok(control) = pools.control(Role::Admin).await {
                let _ = Registry::set_status(&control, &slug, TenantStatus::Deleted).await;
                let _ = control
                    .execute(
                        "UPDATE recept.tenants SET purged_at = now() WHERE slug = $1",
                        &[&slug.as_str()],
                    )
                    .await;
            }
            Err(e)
        }
    }
}

/// Replaces every table of `schema_name` with the rows of `input`, in the
/// caller's transaction.
async fn load_into(
    tx: &deadpool_postgres::Transaction<'_>,
    schema_name: &str,
    input: &mut impl BufRead,
) -> Result<Vec<(String, u64)>, TransferError> {
    let schema = quote_ident(schema_name);
    let known: BTreeMap<String, Vec<String>> = tables(tx, schema_name).await?.into_iter().collect();
    // What creating the tenant filled (its clinic row, the master copy) is
    // replaced by the export's rows.
    let all: Vec<String> = known
        .keys()
        .map(|t| format!("{schema}.{}", quote_ident(t)))
        .collect();
    if !all.is_empty() {
        tx.batch_execute(&format!("TRUNCATE {}", all.join(", ")))
            .await?;
    }
    let mut counts = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            break;
        }
        let head: TableHeader = serde_json::from_str(line.trim_end())
            .map_err(|e| TransferError::BadFile(format!("a table line: {e}")))?;
        if !known.contains_key(&head.table) {
            return Err(TransferError::BadFile(format!(
                "no table {} in this schema",
                head.table
            )));
        }
        let sink = tx
            .copy_in(&format!(
                "COPY {schema}.{} ({}) FROM STDIN",
                quote_ident(&head.table),
                column_list(&head.columns)
            ))
            .await?;
        let mut sink = std::pin::pin!(sink);
        let mut chunk = Vec::with_capacity(64 * 1024);
        let mut rows = 0u64;
        loop {
            let mut row = Vec::new();
            if input.read_until(b'\n', &mut row)? == 0 {
                return Err(TransferError::BadFile(format!("{} ends early", head.table)));
            }
            if row == b"\\.\n" {
                break;
            }
            rows += 1;
            chunk.extend_from_slice(&row);
            if chunk.len() >= 64 * 1024 {
                sink.send(Bytes::from(std::mem::take(&mut chunk))).await?;
            }
        }
        if !chunk.is_empty() {
            sink.send(Bytes::from(chunk)).await?;
        }
        let copied = sink.as_mut().finish().await?;
        if copied != rows || rows != head.rows {
            return Err(TransferError::BadFile(format!(
                "{}: {} rows announced, {} read, {} loaded",
                head.table, head.rows, rows, copied
            )));
        }
        counts.push((head.table, rows));
    }
    Ok(counts)
}
