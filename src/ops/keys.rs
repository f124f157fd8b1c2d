//! Clinic API keys: issued and revoked, each with its audit record.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::OpError;
use crate::audit::{self, Actor};
use crate::pools::{Pools, Role};
use crate::tenancy::{KeySecrets, Registry, Slug};

/// The longest label a key may carry, in characters.
const LABEL_CHARS: usize = 100;

/// A key just issued: its secret is shown this once, only its hash is
/// stored.
#[derive(Debug, Serialize)]
pub struct NewKey {
    pub id: Uuid,
    pub key: String,
    pub prefix: String,
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Issues a key for a tenant that is not deleted.
pub async fn issue_key(
    pools: &Pools,
    secrets: &KeySecrets,
    slug: &Slug,
    label: Option<String>,
    actor: &Actor,
) -> Result<NewKey, OpError> {
    if label
        .as_ref()
        .is_some_and(|l| l.chars().count() > LABEL_CHARS)
    {
        return Err(OpError::Invalid {
            field: "label",
            message: format!("must be at most {LABEL_CHARS} characters"),
        });
    }
    let mut client = pools.control(Role::Admin).await?;
    let tx = client.transaction().await?;
    let tenant = super::live_tenant(&tx, slug).await?;
    let key = secrets.issue();
    let created_at = Registry::insert_key(&tx, tenant.id, &key, label.as_deref()).await?;
    let detail = serde_json::json!({"key_id": key.id, "prefix": key.prefix});
    audit::record(&tx, actor, "key.issue", Some(slug.as_str()), Some(detail)).await?;
    tx.commit().await?;
    tracing::info!(tenant = %slug, key_id = %key.id, "api key issued");
    Ok(NewKey {
        id: key.id,
        key: key.secret,
        prefix: key.prefix,
        label,
        created_at,
    })
}

/// Revokes a live key of a tenant.
pub async fn revoke_key(
    pools: &Pools,
    slug: &Slug,
    key_id: Uuid,
    actor: &Actor,
) -> Result<(), OpError> {
    let not_found = || OpError::NotFound(format!("tenant `{slug}` has no live key `{key_id}`"));
    let mut client = pools.control(Role::Admin).await?;
    let tx = client.transaction().await?;
    let tenant = Registry::find(&tx, slug).await?.ok_or_else(not_found)?;
    if !Registry::revoke_key(&tx, tenant.id, key_id).await? {
        return Err(not_found());
    }
    let detail = serde_json::json!({"key_id": key_id});
    audit::record(&tx, actor, "key.revoke", Some(slug.as_str()), Some(detail)).await?;
    tx.commit().await?;
    tracing::info!(tenant = %slug, key_id = %key_id, "api key revoked");
    Ok(())
}
