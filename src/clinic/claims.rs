//! A month's claims: drafts generated from the month's active, insured
//! visits (and regenerated freely), confirmation (after which a claim and
//! its visits never change), and the export of the confirmed ones.

use serde::Serialize;
use uuid::Uuid;

use super::write::{write_once, written, Made};
use super::{ClinicError, Month, Written};
use crate::db::claims::{self, Claim, ConfirmOutcome, EXPORT_COLUMNS};
use crate::pools::TenantConn;

/// A month's claims.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClaimList {
    /// The month, `YYYY-MM`.
    pub month: String,
    /// The month's claims: one per patient and insurer.
    pub claims: Vec<Claim>,
}

/// Replaces the month's drafts with fresh ones and answers them.
pub async fn generate_claims(conn: &TenantConn, month: Month) -> Result<Written, ClinicError> {
    write_once(conn, None, async |tx| {
        let drafts = claims::generate(tx, month.first_day()).await?;
        let list = ClaimList {
            month: month.to_string(),
            claims: drafts,
        };
        written(Made::Changed, &list, None)
    })
    .await
}

/// Confirms a draft claim: from now on it and its visits are final.
pub async fn confirm_claim(conn: &TenantConn, id: Uuid) -> Result<Written, ClinicError> {
    write_once(conn, None, async |tx| {
        match claims::confirm(tx, id).await? {
            ConfirmOutcome::NotFound => Err(ClinicError::NotFound(format!("no claim {id}"))),
            ConfirmOutcome::AlreadyConfirmed => Err(ClinicError::Conflict(format!(
                "claim {id} is already confirmed"
            ))),
            ConfirmOutcome::Confirmed(claim) => written(Made::Changed, &claim, None),
        }
    })
    .await
}

/// The month's confirmed claims as CSV: a header line, then one line per
/// claim (see [`EXPORT_COLUMNS`]; diagnoses last, space-separated).
pub async fn export_claims_csv(conn: &TenantConn, month: Month) -> Result<Vec<u8>, ClinicError> {
    let rows = claims::export(conn, month.first_day()).await?;
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<&str> = EXPORT_COLUMNS.to_vec();
    header.push("diagnoses");
    writer
        .write_record(&header)
        .and_then(|_| rows.iter().try_for_each(|row| writer.write_record(row)))
        .map_err(|e| ClinicError::Internal(e.into()))?;
    writer
        .into_inner()
        .map_err(|e| ClinicError::Internal(anyhow::anyhow!("{e}")))
}
