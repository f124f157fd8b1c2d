//! What recept must know of a cluster that is a Citus coordinator: whether
//! it is one, where a tenant's data really is, and that the control schema
//! was not made a distributed one.

use tokio_postgres::GenericClient;

use super::DbError;
use crate::names::CONTROL_SCHEMA;

/// Whether the database behind `client` has the Citus extension.
pub async fn is_citus(client: &(impl GenericClient + Sync)) -> Result<bool, DbError> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_extension WHERE extname = 'citus'", &[])
        .await?
        .is_some())
}

/// Whether `schema` is one of Citus's distributed schemas (its tables live
/// on a worker). `false` on plain PostgreSQL.
pub async fn is_distributed_schema(
    client: &(impl GenericClient + Sync),
    schema: &str,
) -> Result<bool, DbError> {
    if !is_citus(client).await? {
        return Ok(false);
    }
    Ok(client
        .query_opt(
            "SELECT 1 FROM pg_dist_schema WHERE schemaid = to_regnamespace($1)",
            &[&schema],
        )
        .await?
        .is_some())
}

/// The bytes a schema's tables (with their indexes and TOAST) take where
/// they are stored: on plain PostgreSQL in this database, on Citus in the
/// shards its workers hold (the coordinator keeps only empty shells).
pub async fn schema_bytes(
    client: &(impl GenericClient + Sync),
    schema: &str,
) -> Result<i64, DbError> {
    let sql = if is_citus(client).await? {
        "SELECT coalesce(sum(s.shard_size), 0)::int8 FROM citus_shards s \
         JOIN pg_class c ON c.oid = s.table_name \
         WHERE c.relnamespace = to_regnamespace($1)"
    } else {
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8 FROM pg_class c \
         WHERE c.relnamespace = to_regnamespace($1) AND c.relkind IN ('r', 'm')"
    };
    Ok(client.query_one(sql, &[&schema]).await?.get(0))
}

/// Fails when the control schema is a distributed schema: it was created
/// while `citus.enable_schema_based_sharding` was on, before recept kept it
/// off, and its tables live on a worker where tenants' queries cannot
/// reach them.
pub async fn check_control_schema(client: &(impl GenericClient + Sync)) -> anyhow::Result<()> {
    if is_distributed_schema(client, CONTROL_SCHEMA).await? {
        anyhow::bail!(
            "the control schema `{CONTROL_SCHEMA}` is a distributed schema on this Citus \
             coordinator; recept keeps it on the coordinator. Make it a plain schema again \
             with `SELECT citus_schema_undistribute('{CONTROL_SCHEMA}')` and start again"
        );
    }
    Ok(())
}
