//! A clinic's identity (its profile) in the clinic's own schema: the
//! medical institution code and what a claims file says of the clinic.
//! Read and written by the admin door, with the schema named in each
//! statement.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::names::quote_ident;
use crate::pools::DbError;

/// A clinic's profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClinicProfile {
    /// The clinic's name (also what `/v1/tenant` shows).
    pub name: String,
    /// The 7-digit medical institution code (医療機関コード).
    pub institution_code: Option<String>,
    /// The prefecture number, `01`–`47` (都道府県番号).
    pub prefecture_code: Option<String>,
    /// The fee table: `medical` (医科).
    pub fee_table: Option<String>,
    pub address: Option<String>,
    pub phone: Option<String>,
    /// When the profile was last set; null before.
    pub updated_at: Option<DateTime<Utc>>,
}

/// The profile in `schema`; `None` when its clinic row is missing.
pub async fn read(
    client: &(impl GenericClient + Sync),
    schema: &str,
) -> Result<Option<ClinicProfile>, DbError> {
    let sql = format!(
        "SELECT name, institution_code, prefecture_code, fee_table, address, phone, \
         profile_updated_at FROM {}.clinic",
        quote_ident(schema)
    );
    Ok(client.query_opt(&sql, &[]).await?.map(|row| ClinicProfile {
        name: row.get(0),
        institution_code: row.get(1),
        prefecture_code: row.get(2),
        fee_table: row.get(3),
        address: row.get(4),
        phone: row.get(5),
        updated_at: row.get(6),
    }))
}

/// Replaces the profile in `schema`; the stored one, or `None` when the
/// clinic row is missing.
pub async fn write(
    client: &(impl GenericClient + Sync),
    schema: &str,
    profile: &ClinicProfile,
) -> Result<Option<ClinicProfile>, DbError> {
    let sql = format!(
        "UPDATE {}.clinic SET name = $1, institution_code = $2, prefecture_code = $3, \
         fee_table = $4, address = $5, phone = $6, profile_updated_at = $7",
        quote_ident(schema)
    );
    let updated = client
        .execute(
            &sql,
            &[
                &profile.name,
                &profile.institution_code,
                &profile.prefecture_code,
                &profile.fee_table,
                &profile.address,
                &profile.phone,
                &Utc::now(),
            ],
        )
        .await?;
    if updated == 0 {
        return Ok(None);
    }
    read(client, schema).await
}
