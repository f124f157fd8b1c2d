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

/// What a move did.
#[derive(Debug)]
pub struct MoveReport {
    pub from: String,
    pub to: String,
    /// Rows per table, verified equal on both sides.
    pub tables: Vec<(String, u64)>,
    /// How long the tenant's requests were answered 503.
    pub paused: std::time::Duration,
    /// Where the old copy stays until `recept tenants purge`.
    pub old_copy: String,
}

/// Count and digest of every row of each table, as `client` sees them.
async fn digests(
    client: &impl deadpool_postgres::GenericClient,
    schema_name: &str,
) -> Result<Vec<(String, i64, String)>, TransferError> {
    let schema = quote_ident(schema_name);
    let mut out = Vec::new();
    for (table, _) in tables(client, schema_name).await? {
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) \
                     FROM {schema}.{} t",
                    quote_ident(&table)
                ),
                &[],
            )
            .await?;
        out.push((table, row.get(0), row.get(1)));
    }
    Ok(out)
}

/// Moves tenant `slug` to cluster `to`. Its clinic requests are answered
/// `503` from the start (after every host's key cache has seen the move,
/// `settle`) until the registry names the new cluster; other tenants are
/// not touched. The copy is verified row for row before the switch, and the
/// old schema is renamed and kept until `recept tenants purge`.
pub async fn move_tenant(
    pools: &Pools,
    slug: &Slug,
    to: &str,
    settle: std::time::Duration,
    actor: &Actor,
) -> Result<MoveReport, TransferError> {
    if !pools.has_cluster(to) {
        return Err(TransferError::Create(CreateTenantError::UnknownCluster(
            to.to_string(),
        )));
    }
    let tenant = {
        let control = pools.control(Role::Admin).await?;
        Registry::find(&control, slug)
            .await?
            .ok_or_else(|| TransferError::NoTenant(slug.to_string()))?
    };
    if tenant.status == TenantStatus::Deleted {
        return Err(TransferError::Deleted(slug.to_string()));
    }
    if tenant.cluster == to {
        return Err(TransferError::Move(format!("{slug} is already on {to}")));
    }
    {
        let control = pools.control(Role::Admin).await?;
        let started = control
            .execute(
                "UPDATE recept.tenants SET moving_to = $2 WHERE slug = $1 AND moving_to IS NULL",
                &[&slug.as_str(), &to],
            )
            .await?;
        if started == 0 {
            return Err(TransferError::Move(format!(
                "{slug} is already being moved"
            )));
        }
    }
    let paused = std::time::Instant::now();
    let moved = copy_and_switch(pools, &tenant, to, settle, actor).await;
    if moved.is_err() {
        // The tenant stays where it was, served again.
        if let Ok(control) = pools.control(Role::Admin).await {
            let _ = control
                .execute(
                    "UPDATE recept.tenants SET moving_to = NULL WHERE slug = $1",
                    &[&slug.as_str()],
                )
                .await;
        }
    }
    let (tables, old_copy) = moved?;
    Ok(MoveReport {
        from: tenant.cluster,
        to: to.to_string(),
        tables,
        paused: paused.elapsed(),
        old_copy,
    })
}

async fn copy_and_switch(
    pools: &Pools,
    tenant: &super::TenantRecord,
    to: &str,
    settle: std::time::Duration,
    actor: &Actor,
) -> Result<(Vec<(String, u64)>, String), TransferError> {
    // Every host re-reads the tenant within its key cache's lifetime.
    tokio::time::sleep(settle).await;
    let mut source = pools.get(&tenant.cluster, Role::Migration).await?;
    let source_tx = source
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await?;
    let schema = quote_ident(&tenant.schema);
    // Writes still in flight finish first; none starts after (the tenant is
    // answered 503 meanwhile). The snapshot is taken after the locks.
    let all: Vec<String> = tables(&source_tx, &tenant.schema)
        .await?
        .into_iter()
        .map(|(t, _)| format!("{schema}.{}", quote_ident(&t)))
        .collect();
    source_tx
        .batch_execute(&format!("LOCK TABLE {} IN SHARE MODE", all.join(", ")))
        .await?;
    let mut data = Vec::new();
    write_tables(&source_tx, &tenant.schema, &mut data).await?;
    let expected = digests(&source_tx, &tenant.schema).await?;

    let mut target = pools.get(to, Role::Migration).await?;
    let target_tx = target.transaction().await?;
    super::provision::build_schema(
        &target_tx,
        pools,
        to,
        &tenant.slug,
        &tenant.name,
        tenant.master_release.as_deref(),
    )
    .await?;
    let tables = load_into(&target_tx, &tenant.schema, &mut data.as_slice()).await?;
    let copied = digests(&target_tx, &tenant.schema).await?;
    if copied != expected {
        return Err(TransferError::Move(format!(
            "the copy of {} differs from the original; nothing was switched",
            tenant.slug
        )));
    }
    target_tx.commit().await?;

    let old_copy = format!(
        "{}_moved_{}",
        tenant.schema,
        chrono::Utc::now().format("%Y%m%d%H%M%S")
    );
    let switched = async {
        let mut control = pools.control(Role::Admin).await?;
        let tx = control.transaction().await?;
        tx.execute(
            "UPDATE recept.tenants SET cluster = $2, moving_to = NULL, updated_at = now() WHERE id = $1",
            &[&tenant.id, &to],
        )
        .await?;
        tx.execute(
            "INSERT INTO recept.moved_copies (cluster, schema_name, tenant_id) VALUES ($1, $2, $3)",
            &[&tenant.cluster, &old_copy, &tenant.id],
        )
        .await?;
        let detail = serde_json::json!({"from": tenant.cluster, "to": to, "old_copy": old_copy});
        crate::audit::record(&tx, actor, "tenant.move", Some(tenant.slug.as_str()), Some(detail))
            .await?;
        tx.commit().await?;
        Ok::<_, TransferError>(())
    }
    .await;
    if let Err(e) = switched {
        // Not switched: the new copy goes, the original stays in use.
        if let Ok(client) = pools.get(to, Role::Admin).await {
            let _ = super::provision::drop_schema(&client, &tenant.schema).await;
        }
        return Err(e);
    }
    source_tx
        .batch_execute(&format!(
            "ALTER SCHEMA {schema} RENAME TO {}",
            quote_ident(&old_copy)
        ))
        .await?;
    source_tx.commit().await?;
    Ok((tables, old_copy))
}
