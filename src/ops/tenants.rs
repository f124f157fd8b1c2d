//! A tenant's status: suspended, resumed or deleted, with its audit record.

use super::OpError;
use crate::audit::{self, Actor};
use crate::pools::{Pools, Role};
use crate::tenancy::{Registry, Slug, TenantRecord, TenantStatus};

/// Sets a tenant's status. A deleted tenant stays deleted (its schema is
/// dropped by `recept tenants purge` after the grace period). Hosts stop
/// serving a suspended or deleted tenant within their key cache's
/// lifetime; the caller clears its own cache at once.
pub async fn set_status(
    pools: &Pools,
    slug: &Slug,
    status: TenantStatus,
    actor: &Actor,
) -> Result<TenantRecord, OpError> {
    let mut client = pools.control(Role::Admin).await?;
    let tx = client.transaction().await?;
    super::live_tenant(&tx, slug).await?;
    let record = Registry::set_status(&tx, slug, status)
        .await?
        .ok_or_else(|| OpError::NotFound(format!("no tenant `{slug}`")))?;
    let action = match status {
        TenantStatus::Active => "tenant.resume",
        TenantStatus::Suspended => "tenant.suspend",
        TenantStatus::Deleted => "tenant.delete",
    };
    audit::record(&tx, actor, action, Some(slug.as_str()), None).await?;
    tx.commit().await?;
    tracing::info!(tenant = %slug, status = status.as_str(), "tenant status changed");
    Ok(record)
}
