//! Payments against encounters.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::pools::{DbError, Tx};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Payment {
    /// The payment's id.
    pub id: Uuid,
    /// The visit paid for.
    pub encounter_id: Uuid,
    /// The patient of that visit.
    pub patient_id: Uuid,
    /// Yen paid.
    pub amount_yen: i32,
    /// `cash`, `card` or `other`.
    pub method: String,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// What recording a payment found.
pub enum PaymentOutcome {
    NoEncounter,
    Voided,
    /// Paying this much would exceed the charge; this much is still owed.
    Overpaid {
        outstanding: i64,
    },
    Recorded(Payment),
}

/// Records a payment unless it pays more than the encounter still owes.
/// The encounter row is locked so concurrent payments cannot overpay.
pub async fn record(
    tx: &Tx<'_>,
    encounter: Uuid,
    amount: i32,
    method: &str,
) -> Result<PaymentOutcome, DbError> {
    let lock = tx
        .prepare_cached(
            "SELECT patient_id, charge_yen, status FROM encounters WHERE id = $1 FOR UPDATE",
        )
        .await?;
    let Some(row) = tx.query_opt(&lock, &[&encounter]).await? else {
        return Ok(PaymentOutcome::NoEncounter);
    };
    let patient: Uuid = row.get(0);
    let charge: i32 = row.get(1);
    let status: String = row.get(2);
    if status != "active" {
        return Ok(PaymentOutcome::Voided);
    }
    let paid = tx
        .prepare_cached(
            "SELECT coalesce(sum(amount_yen), 0)::int8 FROM payments WHERE encounter_id = $1",
        )
        .await?;
    let paid: i64 = tx.query_one(&paid, &[&encounter]).await?.get(0);
    let outstanding = i64::from(charge) - paid;
    if i64::from(amount) > outstanding {
        return Ok(PaymentOutcome::Overpaid { outstanding });
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO payments (id, encounter_id, patient_id, amount_yen, method) \
             VALUES ($1, $2, $3, $4, $5) RETURNING created_at",
        )
        .await?;
    let id = Uuid::now_v7();
    let created_at: DateTime<Utc> = tx
        .query_one(&insert, &[&id, &encounter, &patient, &amount, &method])
        .await?
        .get(0);
    Ok(PaymentOutcome::Recorded(Payment {
        id,
        encounter_id: encounter,
        patient_id: patient,
        amount_yen: amount,
        method: method.to_string(),
        created_at,
    }))
}
