//! Moving a tenant to another cluster: served nowhere while it moves, its
//! rows copied and verified table by table before the registry names the
//! new cluster, and the old copy renamed and kept until it is purged.

use super::{load_into, tables, write_tables, TransferError};
use crate::audit::Actor;
use crate::names::{quote_ident, Slug};
use crate::pools::{Pools, Role};
use crate::tenancy::{CreateTenantError, Registry, TenantStatus};

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
    tenant: &crate::tenancy::TenantRecord,
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
    crate::tenancy::provision::build_schema(
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
            let _ = crate::tenancy::provision::drop_schema(&client, &tenant.schema).await;
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
