//! Monthly claims: one per patient, insurer and month. Drafts are
//! regenerated freely; a confirmed claim never changes.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::pools::{DbError, TenantConn, Tx};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Claim {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub insurer_number: String,
    /// `YYYY-MM`.
    pub month: String,
    pub total_points: i32,
    pub visit_days: i32,
    pub charge_yen: i32,
    pub diagnoses: Vec<String>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
}

const CLAIM_COLUMNS: &str = "id, patient_id, insurer_number, to_char(month, 'YYYY-MM') AS month, \
     total_points, visit_days, charge_yen, diagnoses, status, created_at, confirmed_at";

fn claim_from_row(row: &Row) -> Claim {
    Claim {
        id: row.get("id"),
        patient_id: row.get("patient_id"),
        insurer_number: row.get("insurer_number"),
        month: row.get("month"),
        total_points: row.get("total_points"),
        visit_days: row.get("visit_days"),
        charge_yen: row.get("charge_yen"),
        diagnoses: row.get("diagnoses"),
        status: row.get("status"),
        created_at: row.get("created_at"),
        confirmed_at: row.get("confirmed_at"),
    }
}

/// Replaces the month's drafts with fresh ones from its active, insured
/// encounters that no confirmed claim holds, and returns the month's drafts.
pub async fn generate(tx: &Tx, month: NaiveDate) -> Result<Vec<Claim>, DbError> {
    let next = month
        .checked_add_months(chrono::Months::new(1))
        .ok_or_else(|| DbError::Unavailable("month out of range".into()))?;
    // One generation per tenant and month at a time.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':claims:' || $1))",
        &[&month.to_string()],
    )
    .await?;
    tx.execute(
        "DELETE FROM claims WHERE month = $1 AND status = 'draft'",
        &[&month],
    )
    .await?;
    tx.execute(
        "WITH eligible AS ( \
           SELECT e.id, e.patient_id, e.insurer_number, e.date, e.total_points, e.charge_yen \
           FROM encounters e \
           WHERE e.date >= $1 AND e.date < $2 AND e.status = 'active' \
             AND e.insurer_number IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM claim_encounters ce JOIN claims c ON c.id = ce.claim_id \
                             WHERE ce.encounter_id = e.id AND c.status = 'confirmed') \
             AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.patient_id = e.patient_id \
                             AND c.insurer_number = e.insurer_number AND c.month = $1)), \
         groups AS MATERIALIZED ( \
           SELECT gen_random_uuid() AS id, patient_id, insurer_number, \
                  sum(total_points)::int4 AS points, count(DISTINCT date)::int4 AS days, \
                  sum(charge_yen)::int4 AS charge, array_agg(id) AS ids \
           FROM eligible GROUP BY patient_id, insurer_number), \
         inserted AS ( \
           INSERT INTO claims (id, patient_id, insurer_number, month, total_points, visit_days, \
                               charge_yen, diagnoses) \
           SELECT g.id, g.patient_id, g.insurer_number, $1, g.points, g.days, g.charge, \
                  coalesce((SELECT array_agg(DISTINCT d.code ORDER BY d.code) \
                            FROM encounter_diagnoses d WHERE d.encounter_id = ANY (g.ids)), '{}') \
           FROM groups g RETURNING id) \
         INSERT INTO claim_encounters (claim_id, encounter_id) \
         SELECT g.id, unnest(g.ids) FROM groups g JOIN inserted i ON i.id = g.id",
        &[&month, &next],
    )
    .await?;
    let rows = tx
        .query(
            &format!(
                "SELECT {CLAIM_COLUMNS} FROM claims WHERE month = $1 AND status = 'draft' \
                 ORDER BY patient_id, insurer_number"
            ),
            &[&month],
        )
        .await?;
    Ok(rows.iter().map(claim_from_row).collect())
}

/// Recomputes a draft claim from the encounters it still holds; removes it
/// when it holds none.
pub async fn refresh_totals(tx: &Tx, claim: Uuid) -> Result<(), DbError> {
    tx.execute(
        "UPDATE claims c SET \
           total_points = coalesce((SELECT sum(e.total_points) FROM claim_encounters ce \
              JOIN encounters e ON e.id = ce.encounter_id WHERE ce.claim_id = c.id), 0), \
           visit_days = (SELECT count(DISTINCT e.date) FROM claim_encounters ce \
              JOIN encounters e ON e.id = ce.encounter_id WHERE ce.claim_id = c.id), \
           charge_yen = coalesce((SELECT sum(e.charge_yen) FROM claim_encounters ce \
              JOIN encounters e ON e.id = ce.encounter_id WHERE ce.claim_id = c.id), 0), \
           diagnoses = coalesce((SELECT array_agg(DISTINCT d.code ORDER BY d.code) \
              FROM claim_encounters ce JOIN encounter_diagnoses d ON d.encounter_id = ce.encounter_id \
              WHERE ce.claim_id = c.id), '{}') \
         WHERE c.id = $1 AND c.status = 'draft'",
        &[&claim],
    )
    .await?;
    tx.execute(
        "DELETE FROM claims c WHERE c.id = $1 AND c.status = 'draft' \
         AND NOT EXISTS (SELECT 1 FROM claim_encounters ce WHERE ce.claim_id = c.id)",
        &[&claim],
    )
    .await?;
    Ok(())
}

/// The month's claims, drafts and confirmed.
pub async fn list(conn: &TenantConn, month: NaiveDate) -> Result<Vec<Claim>, DbError> {
    let sql = format!(
        "SELECT {CLAIM_COLUMNS} FROM claims WHERE month = $1 ORDER BY patient_id, insurer_number"
    );
    Ok(conn
        .read(&sql, &[&month])
        .await?
        .iter()
        .map(claim_from_row)
        .collect())
}

/// A claim with the encounters it holds.
pub async fn get(
    conn: &TenantConn,
    id: Uuid,
) -> Result<Option<(Claim, Vec<super::encounters::Encounter>)>, DbError> {
    conn.write(async |tx| -> Result<_, DbError> {
        let sql = format!("SELECT {CLAIM_COLUMNS} FROM claims WHERE id = $1");
        let Some(row) = tx.query_opt(&sql, &[&id]).await? else {
            return Ok(None);
        };
        let encounters = tx
            .query(
                &format!(
                    "{} WHERE e.id IN (SELECT encounter_id FROM claim_encounters WHERE claim_id = $1) \
                     ORDER BY e.date, e.id",
                    super::encounters::SELECT_ENCOUNTER
                ),
                &[&id],
            )
            .await?
            .iter()
            .map(super::encounters::encounter_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((claim_from_row(&row), encounters)))
    })
    .await
}

/// What confirming found.
pub enum ConfirmOutcome {
    NotFound,
    AlreadyConfirmed,
    Confirmed(Claim),
}

pub async fn confirm(tx: &Tx, id: Uuid) -> Result<ConfirmOutcome, DbError> {
    let sql = format!(
        "UPDATE claims SET status = 'confirmed', confirmed_at = now() \
         WHERE id = $1 AND status = 'draft' RETURNING {CLAIM_COLUMNS}"
    );
    if let Some(row) = tx.query_opt(&sql, &[&id]).await? {
        return Ok(ConfirmOutcome::Confirmed(claim_from_row(&row)));
    }
    let exists = tx
        .query_opt("SELECT 1 FROM claims WHERE id = $1", &[&id])
        .await?
        .is_some();
    Ok(if exists {
        ConfirmOutcome::AlreadyConfirmed
    } else {
        ConfirmOutcome::NotFound
    })
}

/// The columns of the claims export, in order.
pub const EXPORT_COLUMNS: [&str; 13] = [
    "claim_id",
    "month",
    "insurer_number",
    "insurance_symbol",
    "insurance_number",
    "patient_id",
    "patient_name",
    "patient_name_kana",
    "birth_date",
    "sex",
    "visit_days",
    "total_points",
    "charge_yen",
];

/// The month's confirmed claims as CSV rows (see [`EXPORT_COLUMNS`]; a
/// last column `diagnoses` lists disease codes separated by spaces).
pub async fn export(conn: &TenantConn, month: NaiveDate) -> Result<Vec<Vec<String>>, DbError> {
    let rows = conn
        .read(
            "SELECT c.id::text, to_char(c.month, 'YYYY-MM'), c.insurer_number, \
               coalesce(i.symbol, ''), coalesce(i.number, ''), p.id::text, p.name, \
               coalesce(p.name_kana, ''), p.birth_date::text, p.sex, c.visit_days::text, \
               c.total_points::text, c.charge_yen::text, array_to_string(c.diagnoses, ' ') \
             FROM claims c JOIN patients p ON p.id = c.patient_id \
             LEFT JOIN LATERAL (SELECT symbol, number FROM insurances \
               WHERE patient_id = c.patient_id AND insurer_number = c.insurer_number \
               ORDER BY valid_from DESC LIMIT 1) i ON true \
             WHERE c.month = $1 AND c.status = 'confirmed' ORDER BY c.insurer_number, p.id",
            &[&month],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| (0..14).map(|i| row.get::<_, String>(i)).collect())
        .collect())
}
