//! A clinic's identity, set by an admin: checked (the institution code's
//! check digit with its prefecture and fee table), written in the clinic's
//! schema and audited.

use super::{live_tenant, OpError};
use crate::audit::{self, Actor};
use crate::billing::institution::{check_institution_code, check_prefecture, MEDICAL_FEE_TABLE};
use crate::pools::{Pools, Role};
use crate::tenancy::profile::{self, ClinicProfile};
use crate::tenancy::Slug;

/// A profile as the admin sent it.
pub struct ProfileInput {
    pub name: String,
    pub institution_code: String,
    pub prefecture_code: String,
    /// Only `medical` (医科) for now.
    pub fee_table: Option<String>,
    pub address: Option<String>,
    pub phone: Option<String>,
}

/// Checks every field, naming each one that is wrong.
fn check(input: ProfileInput) -> Result<ClinicProfile, OpError> {
    let mut invalid: Vec<(&'static str, String)> = Vec::new();
    let name = input.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        invalid.push((
            "name",
            "must be 1 to 100 characters without control characters".into(),
        ));
    }
    let fee_table = input.fee_table.unwrap_or_else(|| "medical".into());
    if fee_table != "medical" {
        invalid.push((
            "fee_table",
            "must be `medical` (医科); other tables are not supported".into(),
        ));
    }
    match check_prefecture(&input.prefecture_code) {
        Ok(prefecture) => {
            if let Err(e) =
                check_institution_code(prefecture, MEDICAL_FEE_TABLE, &input.institution_code)
            {
                invalid.push(("institution_code", e.to_string()));
            }
        }
        Err(e) => invalid.push(("prefecture_code", e.to_string())),
    }
    let address = input
        .address
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty());
    if address
        .as_ref()
        .is_some_and(|a| a.chars().count() > 200 || a.chars().any(char::is_control))
    {
        invalid.push((
            "address",
            "must be at most 200 characters without control characters".into(),
        ));
    }
    let phone = input
        .phone
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty());
    if phone.as_ref().is_some_and(|p| {
        p.len() > 20
            || !p.bytes().all(|b| b.is_ascii_digit() || b == b'-')
            || !p.bytes().any(|b| b.is_ascii_digit())
    }) {
        invalid.push(("phone", "must be at most 20 digits and hyphens".into()));
    }
    if !invalid.is_empty() {
        return Err(OpError::InvalidFields(invalid));
    }
    Ok(ClinicProfile {
        name,
        institution_code: Some(input.institution_code),
        prefecture_code: Some(input.prefecture_code),
        fee_table: Some(fee_table),
        address,
        phone,
        updated_at: None,
    })
}

/// A tenant's profile.
pub async fn clinic_profile(pools: &Pools, slug: &Slug) -> Result<ClinicProfile, OpError> {
    let mut control = pools.control(Role::Admin).await?;
    let tx = control.transaction().await?;
    let tenant = live_tenant(&tx, slug).await?;
    drop(tx);
    drop(control);
    let client = pools.get(&tenant.cluster, Role::Admin).await?;
    profile::read(&**client, &tenant.schema)
        .await?
        .ok_or_else(|| OpError::Conflict(format!("tenant `{slug}` has no clinic row")))
}

/// Sets a tenant's profile, audited. On the control cluster the profile
/// and its audit record commit together; elsewhere the profile commits
/// first and the audit record after it.
pub async fn set_profile(
    pools: &Pools,
    slug: &Slug,
    input: ProfileInput,
    actor: &Actor,
) -> Result<ClinicProfile, OpError> {
    let wanted = check(input)?;
    let mut control = pools.control(Role::Admin).await?;
    let tx = control.transaction().await?;
    let tenant = live_tenant(&tx, slug).await?;
    let detail = serde_json::json!({
        "institution_code": wanted.institution_code,
        "prefecture_code": wanted.prefecture_code,
        "name": wanted.name,
    });
    audit::record(
        &tx,
        actor,
        "tenant.profile",
        Some(slug.as_str()),
        Some(detail),
    )
    .await?;
    let missing = || OpError::Conflict(format!("tenant `{slug}` has no clinic row"));
    let stored = if tenant.cluster == pools.control_cluster() {
        profile::write(&*tx, &tenant.schema, &wanted)
            .await?
            .ok_or_else(missing)?
    } else {
        let mut remote = pools.get(&tenant.cluster, Role::Admin).await?;
        let remote_tx = remote.transaction().await?;
        let stored = profile::write(&*remote_tx, &tenant.schema, &wanted)
            .await?
            .ok_or_else(missing)?;
        remote_tx.commit().await?;
        stored
    };
    tx.commit().await?;
    tracing::info!(tenant = %slug, "clinic profile set");
    Ok(stored)
}
