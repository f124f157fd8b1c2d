//! A patient's disease list (傷病名): independent of single visits, each
//! with its start, its outcome and flags.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::pools::{DbError, TenantConn, Tx};

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Disease {
    /// The entry's id.
    pub id: Uuid,
    /// The patient it belongs to.
    pub patient_id: Uuid,
    /// The disease code (傷病名コード) in the master copy.
    pub code: String,
    /// The disease's name in the master copy valid on `start_date`.
    pub name: String,
    /// The day the disease started (診療開始日).
    pub start_date: NaiveDate,
    /// `continuing` (継続), `cured` (治ゆ), `died` (死亡) or `stopped` (中止).
    pub outcome: String,
    /// The day of the outcome; null while continuing.
    pub outcome_date: Option<NaiveDate>,
    /// The main disease (主病).
    pub main: bool,
    /// Suspected (疑い).
    pub suspected: bool,
    /// When it was entered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A disease's changeable fields (already checked).
#[derive(Debug, Clone)]
pub struct DiseaseFields {
    pub outcome: &'static str,
    pub outcome_date: Option<NaiveDate>,
    pub main: bool,
    pub suspected: bool,
}

const COLUMNS: &str = "id, patient_id, code, name, start_date, outcome, outcome_date, main, \
     suspected, created_at, updated_at";

fn disease_from_row(row: &Row) -> Disease {
    Disease {
        id: row.get("id"),
        patient_id: row.get("patient_id"),
        code: row.get("code"),
        name: row.get("name"),
        start_date: row.get("start_date"),
        outcome: row.get("outcome"),
        outcome_date: row.get("outcome_date"),
        main: row.get("main"),
        suspected: row.get("suspected"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

/// The patient's diseases by start date; `None` for an unknown patient.
pub async fn list(conn: &TenantConn, patient: Uuid) -> Result<Option<Vec<Disease>>, DbError> {
    let rows = conn
        .read(
            "SELECT EXISTS (SELECT 1 FROM patients WHERE id = $1), \
               coalesce((SELECT json_agg(json_build_object('id', d.id, 'patient_id', d.patient_id, \
                 'code', d.code, 'name', d.name, 'start_date', d.start_date, 'outcome', d.outcome, \
                 'outcome_date', d.outcome_date, 'main', d.main, 'suspected', d.suspected, \
                 'created_at', d.created_at, 'updated_at', d.updated_at) \
                 ORDER BY d.start_date, d.id) \
               FROM patient_diseases d WHERE d.patient_id = $1), '[]'::json)",
            &[&patient],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    if !row.get::<_, bool>(0) {
        return Ok(None);
    }
    serde_json::from_value(row.get(1))
        .map(Some)
        .map_err(|e| DbError::Corrupt(format!("unreadable disease list: {e}")))
}

/// Locks the patient row against another change to its list until the
/// transaction ends; whether it exists.
pub async fn lock_patient(tx: &Tx<'_>, patient: Uuid) -> Result<bool, DbError> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM patients WHERE id = $1 FOR NO KEY UPDATE",
            &[&patient],
        )
        .await?
        .is_some())
}

/// How many diseases the patient's list holds.
pub async fn count(tx: &Tx<'_>, patient: Uuid) -> Result<i64, DbError> {
    Ok(tx
        .query_one(
            "SELECT count(*) FROM patient_diseases WHERE patient_id = $1",
            &[&patient],
        )
        .await?
        .get(0))
}

/// Adds a disease to a patient known to exist.
#[allow(clippy::too_many_arguments)]
pub async fn insert(
    tx: &Tx<'_>,
    patient: Uuid,
    code: &str,
    name: &str,
    start_date: NaiveDate,
    fields: &DiseaseFields,
) -> Result<Disease, DbError> {
    let now = Utc::now();
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO patient_diseases (id, patient_id, code, name, start_date, outcome, \
                 outcome_date, main, suspected, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING {COLUMNS}"
            ),
            &[
                &Uuid::now_v7(),
                &patient,
                &code,
                &name,
                &start_date,
                &fields.outcome,
                &fields.outcome_date,
                &fields.main,
                &fields.suspected,
                &now,
            ],
        )
        .await?;
    Ok(disease_from_row(&row))
}

/// One of the patient's diseases, locked for a change.
pub async fn get_for_update(
    tx: &Tx<'_>,
    patient: Uuid,
    id: Uuid,
) -> Result<Option<Disease>, DbError> {
    Ok(tx
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM patient_diseases WHERE id = $1 AND patient_id = $2 \
                 FOR UPDATE"
            ),
            &[&id, &patient],
        )
        .await?
        .as_ref()
        .map(disease_from_row))
}

/// Replaces a disease's changeable fields.
pub async fn update(tx: &Tx<'_>, id: Uuid, fields: &DiseaseFields) -> Result<Disease, DbError> {
    let row = tx
        .query_one(
            &format!(
                "UPDATE patient_diseases SET outcome = $2, outcome_date = $3, main = $4, \
                 suspected = $5, updated_at = $6 WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[
                &id,
                &fields.outcome,
                &fields.outcome_date,
                &fields.main,
                &fields.suspected,
                &Utc::now(),
            ],
        )
        .await?;
    Ok(disease_from_row(&row))
}

/// Removes one of the patient's diseases; what was removed, if it existed.
pub async fn delete(tx: &Tx<'_>, patient: Uuid, id: Uuid) -> Result<Option<Disease>, DbError> {
    Ok(tx
        .query_opt(
            &format!(
                "DELETE FROM patient_diseases WHERE id = $1 AND patient_id = $2 RETURNING {COLUMNS}"
            ),
            &[&id, &patient],
        )
        .await?
        .as_ref()
        .map(disease_from_row))
}
