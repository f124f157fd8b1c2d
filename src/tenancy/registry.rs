//! SQL on the tenant registry and API keys in the control schema.
//! Every statement names the control schema explicitly.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Slug, TenantCtx, TenantStatus};
use crate::pools::DbError;

/// A tenant as the registry holds it.
#[derive(Debug, Clone, Serialize)]
pub struct TenantRecord {
    pub id: Uuid,
    pub slug: Slug,
    pub name: String,
    pub cluster: String,
    pub schema: String,
    pub status: TenantStatus,
    /// The master release the tenant's copy holds.
    pub master_release: Option<String>,
    /// The newest tenant migration applied to its schema.
    pub schema_version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An API key as listed to admins: never its secret or hash.
#[derive(Debug, Clone, Serialize)]
pub struct KeyRecord {
    pub id: Uuid,
    pub prefix: String,
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Namespace for the registry's statements.
pub struct Registry;

const COLUMNS: &str =
    "id, slug, name, cluster, schema_name, status, created_at, updated_at, master_release, \
     schema_version";

fn record(row: &Row) -> Result<TenantRecord, DbError> {
    let slug: String = row.get(1);
    let status: String = row.get(5);
    Ok(TenantRecord {
        id: row.get(0),
        slug: Slug::parse(&slug).map_err(|_| corrupt(format!("bad slug `{slug}`")))?,
        name: row.get(2),
        cluster: row.get(3),
        schema: row.get(4),
        status: TenantStatus::parse(&status)
            .ok_or_else(|| corrupt(format!("bad status `{status}`")))?,
        created_at: row.get(6),
        updated_at: row.get(7),
        master_release: row.get(8),
        schema_version: row.get(9),
    })
}

fn corrupt(what: String) -> DbError {
    DbError::Corrupt(format!("tenant registry holds {what}"))
}

impl Registry {
    pub async fn insert(
        client: &impl GenericClient,
        slug: &Slug,
        name: &str,
        cluster: &str,
        master_release: Option<&str>,
        schema_version: i32,
    ) -> Result<TenantRecord, DbError> {
        let sql = format!(
            "INSERT INTO recept.tenants (id, slug, name, cluster, schema_name, master_release, \
             schema_version) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
        );
        let row = client
            .query_one(
                &sql,
                &[
                    &Uuid::now_v7(),
                    &slug.as_str(),
                    &name,
                    &cluster,
                    &slug.schema_name(),
                    &master_release,
                    &schema_version,
                ],
            )
            .await?;
        record(&row)
    }

    pub async fn find(
        client: &impl GenericClient,
        slug: &Slug,
    ) -> Result<Option<TenantRecord>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM recept.tenants WHERE slug = $1");
        let statement = client.prepare_cached(&sql).await?;
        client
            .query_opt(&statement, &[&slug.as_str()])
            .await?
            .map(|row| record(&row))
            .transpose()
    }

    /// The tenant, its row locked until the transaction ends: for a write
    /// that depends on its status.
    pub async fn lock(
        client: &impl GenericClient,
        slug: &Slug,
    ) -> Result<Option<TenantRecord>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM recept.tenants WHERE slug = $1 FOR UPDATE");
        client
            .query_opt(&sql, &[&slug.as_str()])
            .await?
            .map(|row| record(&row))
            .transpose()
    }

    /// Tenants ordered by slug, after `after` (keyset pagination).
    pub async fn list(
        client: &impl GenericClient,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<TenantRecord>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM recept.tenants WHERE slug > coalesce($1, '') \
             ORDER BY slug LIMIT $2"
        );
        let statement = client.prepare_cached(&sql).await?;
        client
            .query(&statement, &[&after, &limit])
            .await?
            .iter()
            .map(record)
            .collect()
    }

    pub async fn set_status(
        client: &impl GenericClient,
        slug: &Slug,
        status: TenantStatus,
    ) -> Result<Option<TenantRecord>, DbError> {
        let sql = format!(
            "UPDATE recept.tenants SET status = $2, updated_at = $3::timestamptz, \
             deleted_at = CASE WHEN $2 = 'deleted' THEN $3::timestamptz END \
             WHERE slug = $1 RETURNING {COLUMNS}"
        );
        // The time is a parameter, so the statement holds no volatile
        // function wherever the registry lives (Citus refuses them in CASE
        // on a distributed table).
        let now = chrono::Utc::now();
        client
            .query_opt(&sql, &[&slug.as_str(), &status.as_str(), &now])
            .await?
            .map(|row| record(&row))
            .transpose()
    }

    pub async fn insert_key(
        client: &impl GenericClient,
        tenant_id: Uuid,
        key: &super::IssuedKey,
        label: Option<&str>,
    ) -> Result<DateTime<Utc>, DbError> {
        let row = client
            .query_one(
                "INSERT INTO recept.api_keys (id, tenant_id, key_hash, prefix, label, tagged) \
                 VALUES ($1, $2, $3, $4, $5, true) RETURNING created_at",
                &[&key.id, &tenant_id, &&key.hash[..], &key.prefix, &label],
            )
            .await?;
        Ok(row.get(0))
    }

    /// The hashes of the unrevoked keys issued before keys were tagged.
    pub async fn legacy_key_hashes(
        client: &impl GenericClient,
    ) -> Result<std::collections::HashSet<[u8; 32]>, DbError> {
        let rows = client
            .query(
                "SELECT key_hash FROM recept.api_keys WHERE NOT tagged AND revoked_at IS NULL",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let hash: &[u8] = row.get(0);
                <[u8; 32]>::try_from(hash).map_err(|_| corrupt("a key hash is not 32 bytes".into()))
            })
            .collect()
    }

    /// The tenant's keys, newest first, without secrets.
    pub async fn list_keys(
        client: &impl GenericClient,
        tenant_id: Uuid,
    ) -> Result<Vec<KeyRecord>, DbError> {
        let rows = client
            .query(
                "SELECT id, prefix, label, created_at, revoked_at FROM recept.api_keys \
                 WHERE tenant_id = $1 ORDER BY created_at DESC",
                &[&tenant_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| KeyRecord {
                id: row.get(0),
                prefix: row.get(1),
                label: row.get(2),
                created_at: row.get(3),
                revoked_at: row.get(4),
            })
            .collect())
    }

    /// Revokes a key of the tenant; `false` when it has no such live key.
    pub async fn revoke_key(
        client: &impl GenericClient,
        tenant_id: Uuid,
        key_id: Uuid,
    ) -> Result<bool, DbError> {
        let n = client
            .execute(
                "UPDATE recept.api_keys SET revoked_at = now() \
                 WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL",
                &[&key_id, &tenant_id],
            )
            .await?;
        Ok(n == 1)
    }

    /// The tenant a live key belongs to.
    pub async fn resolve_key(
        client: &impl GenericClient,
        hash: &[u8; 32],
    ) -> Result<Option<TenantCtx>, DbError> {
        let statement = client
            .prepare_cached(
                "SELECT t.id, t.slug, t.cluster, t.schema_name, t.status, t.schema_version, \
                 t.moving_to IS NOT NULL \
                 FROM recept.api_keys k JOIN recept.tenants t ON t.id = k.tenant_id \
                 WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
            )
            .await?;
        let Some(row) = client.query_opt(&statement, &[&&hash[..]]).await? else {
            return Ok(None);
        };
        let slug: String = row.get(1);
        let status: String = row.get(4);
        let cluster: String = row.get(2);
        let schema: String = row.get(3);
        Ok(Some(TenantCtx {
            id: row.get(0),
            slug: Slug::parse(&slug).map_err(|_| corrupt(format!("bad slug `{slug}`")))?,
            cluster: cluster.into(),
            schema: schema.into(),
            status: TenantStatus::parse(&status)
                .ok_or_else(|| corrupt(format!("bad status `{status}`")))?,
            schema_version: row.get(5),
            moving: row.get(6),
        }))
    }
}
