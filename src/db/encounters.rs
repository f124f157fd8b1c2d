//! Encounters (visits) with their priced lines and diagnoses.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::billing::pricing::PricedLine;
use crate::pools::{DbError, TenantConn, Tx};

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Line {
    /// The master code priced.
    pub code: String,
    /// `procedure` or `drug`.
    pub kind: String,
    /// The item's name in the master copy used.
    pub name: String,
    /// How many, as entered.
    pub quantity: i32,
    /// The line's points (1 point = 10 yen): a procedure's points x quantity; a drug's yen (unit price x quantity) at 15 yen or less is 1 point, otherwise 1 + ceil((yen - 15) / 10).
    pub points: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Diagnosis {
    /// The disease code.
    pub code: String,
    /// The disease's name in the master copy used.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Encounter {
    /// The visit's id.
    pub id: Uuid,
    /// The patient seen.
    pub patient_id: Uuid,
    /// The day of the visit.
    pub date: NaiveDate,
    /// The department.
    pub department: Option<String>,
    /// The doctor.
    pub doctor: Option<String>,
    /// Free text.
    pub notes: Option<String>,
    /// The patient's insurance valid on the day; null when none was.
    pub insurance_id: Option<Uuid>,
    /// That insurance's insurer number.
    pub insurer_number: Option<String>,
    /// Percent the patient pays: 10, 20, 30, or 100 without valid insurance.
    pub copay_rate: i16,
    /// The sum of the lines' points.
    pub total_points: i32,
    /// What the patient pays: total points x 10 yen x copay rate, rounded to the nearest 10 yen (5 rounds up).
    pub charge_yen: i32,
    /// The master release the visit was priced from.
    pub master_release: Option<String>,
    /// `active`, or `voided` once voided.
    pub status: String,
    /// Why it was voided.
    pub void_reason: Option<String>,
    /// When it was voided.
    pub voided_at: Option<DateTime<Utc>>,
    /// The diseases diagnosed.
    pub diagnoses: Vec<Diagnosis>,
    /// The priced lines, in the order entered.
    pub lines: Vec<Line>,
    /// When the visit was recorded.
    pub created_at: DateTime<Utc>,
}

/// Everything an encounter is stored with (already priced).
pub struct NewEncounter<'a> {
    pub patient_id: Uuid,
    pub date: NaiveDate,
    pub department: Option<&'a str>,
    pub doctor: Option<&'a str>,
    pub notes: Option<&'a str>,
    pub insurance: Option<&'a InsuranceOnDate>,
    pub copay_rate: i16,
    pub total_points: i64,
    pub charge_yen: i64,
    pub master_release: Option<&'a str>,
    pub diagnoses: &'a [(String, String)],
    pub lines: &'a [PricedLine],
}

/// The insurance that applies to a patient on a date.
#[derive(Debug, Clone)]
pub struct InsuranceOnDate {
    pub id: Uuid,
    pub insurer_number: String,
    pub copay_rate: i16,
}

pub const SELECT_ENCOUNTER: &str = "SELECT e.id, e.patient_id, e.date, e.department, e.doctor, \
     e.notes, e.insurance_id, e.insurer_number, e.copay_rate, e.total_points, e.charge_yen, \
     e.master_release, e.status, e.void_reason, e.voided_at, e.created_at, \
     coalesce((SELECT json_agg(json_build_object('code', d.code, 'name', d.name) ORDER BY d.position) \
       FROM encounter_diagnoses d WHERE d.encounter_id = e.id), '[]'::json) AS diagnoses, \
     coalesce((SELECT json_agg(json_build_object('code', l.code, 'kind', l.kind, 'name', l.name, \
       'quantity', l.quantity, 'points', l.points) ORDER BY l.line_no) \
       FROM encounter_lines l WHERE l.encounter_id = e.id), '[]'::json) AS lines \
     FROM encounters e";

pub fn encounter_from_row(row: &Row) -> Result<Encounter, DbError> {
    let unreadable = |e: serde_json::Error| DbError::Corrupt(format!("unreadable encounter: {e}"));
    Ok(Encounter {
        id: row.get("id"),
        patient_id: row.get("patient_id"),
        date: row.get("date"),
        department: row.get("department"),
        doctor: row.get("doctor"),
        notes: row.get("notes"),
        insurance_id: row.get("insurance_id"),
        insurer_number: row.get("insurer_number"),
        copay_rate: row.get("copay_rate"),
        total_points: row.get("total_points"),
        charge_yen: row.get("charge_yen"),
        master_release: row.get("master_release"),
        status: row.get("status"),
        void_reason: row.get("void_reason"),
        voided_at: row.get("voided_at"),
        created_at: row.get("created_at"),
        diagnoses: serde_json::from_value(row.get("diagnoses")).map_err(unreadable)?,
        lines: serde_json::from_value(row.get("lines")).map_err(unreadable)?,
    })
}

pub async fn get(conn: &TenantConn, id: Uuid) -> Result<Option<Encounter>, DbError> {
    let sql = format!("{SELECT_ENCOUNTER} WHERE e.id = $1");
    conn.read(&sql, &[&id])
        .await?
        .first()
        .map(encounter_from_row)
        .transpose()
}

pub async fn get_in(tx: &Tx, id: Uuid) -> Result<Option<Encounter>, DbError> {
    let statement = tx
        .prepare_cached(&format!("{SELECT_ENCOUNTER} WHERE e.id = $1"))
        .await?;
    tx.query_opt(&statement, &[&id])
        .await?
        .as_ref()
        .map(encounter_from_row)
        .transpose()
}

/// Encounters filtered by patient and date range, by (date, id) after `after`.
pub async fn list(
    conn: &TenantConn,
    patient: Option<Uuid>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    after: Option<(NaiveDate, Uuid)>,
    limit: i64,
) -> Result<Vec<Encounter>, DbError> {
    let sql = format!(
        "{SELECT_ENCOUNTER} WHERE ($1::uuid IS NULL OR e.patient_id = $1) \
           AND ($2::date IS NULL OR e.date >= $2) AND ($3::date IS NULL OR e.date <= $3) \
           AND ($4::date IS NULL OR (e.date, e.id) > ($4, $5::uuid)) \
         ORDER BY e.date, e.id LIMIT $6"
    );
    let (after_date, after_id) = match after {
        Some((d, id)) => (Some(d), Some(id)),
        None => (None, None),
    };
    conn.read(
        &sql,
        &[&patient, &from, &to, &after_date, &after_id, &limit],
    )
    .await?
    .iter()
    .map(encounter_from_row)
    .collect()
}

/// Locks the patient row (so its encounters are entered one at a time) and
/// returns the insurance valid on `date`; `None` for an unknown patient.
pub async fn patient_insurance_on(
    tx: &Tx,
    patient: Uuid,
    date: NaiveDate,
) -> Result<Option<Option<InsuranceOnDate>>, DbError> {
    let statement = tx
        .prepare_cached(
            "SELECT p.id, i.id, i.insurer_number, i.copay_rate FROM patients p \
             LEFT JOIN LATERAL (SELECT id, insurer_number, copay_rate FROM insurances \
               WHERE patient_id = p.id AND valid_from <= $2 AND (valid_to IS NULL OR valid_to >= $2) \
               ORDER BY valid_from DESC LIMIT 1) i ON true \
             WHERE p.id = $1 FOR KEY SHARE OF p",
        )
        .await?;
    let Some(row) = tx.query_opt(&statement, &[&patient, &date]).await? else {
        return Ok(None);
    };
    let insurance = row.get::<_, Option<Uuid>>(1).map(|id| InsuranceOnDate {
        id,
        insurer_number: row.get(2),
        copay_rate: row.get(3),
    });
    Ok(Some(insurance))
}

/// The release the tenant's master copy holds, locked against rollouts
/// until the transaction ends.
pub async fn master_release_for_pricing(tx: &Tx) -> Result<Option<String>, DbError> {
    let statement = tx
        .prepare_cached("SELECT release FROM master_meta FOR SHARE")
        .await?;
    Ok(tx.query_one(&statement, &[]).await?.get(0))
}

/// Stores a priced encounter with its lines and diagnoses.
pub async fn insert(tx: &Tx, e: &NewEncounter<'_>) -> Result<Uuid, DbError> {
    let id = Uuid::now_v7();
    let insert_encounter = tx
        .prepare_cached(
            "INSERT INTO encounters (id, patient_id, date, department, doctor, notes, insurance_id, \
             insurer_number, copay_rate, total_points, charge_yen, master_release) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .await?;
    let insert_lines = tx
        .prepare_cached(
            "INSERT INTO encounter_lines (encounter_id, line_no, code, kind, name, quantity, points) \
             SELECT $1, n, c, k, nm, q, p FROM unnest($2::int2[], $3::text[], $4::text[], \
             $5::text[], $6::int4[], $7::int4[]) AS u(n, c, k, nm, q, p)",
        )
        .await?;
    let insert_diagnoses = tx
        .prepare_cached(
            "INSERT INTO encounter_diagnoses (encounter_id, position, code, name) \
             SELECT $1, n, c, nm FROM unnest($2::int2[], $3::text[], $4::text[]) AS u(n, c, nm)",
        )
        .await?;
    let insurance_id = e.insurance.map(|i| i.id);
    let insurer = e.insurance.map(|i| i.insurer_number.as_str());
    let total = i32::try_from(e.total_points).map_err(|_| too_large())?;
    let charge = i32::try_from(e.charge_yen).map_err(|_| too_large())?;
    let line_no: Vec<i16> = (1..=e.lines.len() as i16).collect();
    let codes: Vec<&str> = e.lines.iter().map(|l| l.code.as_str()).collect();
    let kinds: Vec<&str> = e.lines.iter().map(|l| l.kind.as_str()).collect();
    let names: Vec<&str> = e.lines.iter().map(|l| l.name.as_str()).collect();
    let quantities: Vec<i32> = e.lines.iter().map(|l| l.quantity as i32).collect();
    let points = e
        .lines
        .iter()
        .map(|l| i32::try_from(l.points).map_err(|_| too_large()))
        .collect::<Result<Vec<i32>, _>>()?;
    let positions: Vec<i16> = (1..=e.diagnoses.len() as i16).collect();
    let diagnosis_codes: Vec<&str> = e.diagnoses.iter().map(|d| d.0.as_str()).collect();
    let diagnosis_names: Vec<&str> = e.diagnoses.iter().map(|d| d.1.as_str()).collect();
    let encounter_params: [&(dyn ToSql + Sync); 12] = [
        &id,
        &e.patient_id,
        &e.date,
        &e.department,
        &e.doctor,
        &e.notes,
        &insurance_id,
        &insurer,
        &e.copay_rate,
        &total,
        &charge,
        &e.master_release,
    ];
    let line_params: [&(dyn ToSql + Sync); 7] =
        [&id, &line_no, &codes, &kinds, &names, &quantities, &points];
    let diagnosis_params: [&(dyn ToSql + Sync); 4] =
        [&id, &positions, &diagnosis_codes, &diagnosis_names];
    // Three statements, one round trip.
    futures::try_join!(
        tx.execute(&insert_encounter, &encounter_params),
        tx.execute(&insert_lines, &line_params),
        tx.execute(&insert_diagnoses, &diagnosis_params),
    )?;
    Ok(id)
}

fn too_large() -> DbError {
    DbError::Corrupt("an amount does not fit the database column".into())
}

/// Why an encounter cannot be voided.
pub enum VoidOutcome {
    NotFound,
    AlreadyVoided,
    /// It is part of this confirmed claim.
    InConfirmedClaim(Uuid),
    Voided,
}

/// Voids an encounter unless a confirmed claim includes it. Draft claims
/// that hold it are the caller's to release (`claims::release_encounter`).
pub async fn void(tx: &Tx, id: Uuid, reason: Option<&str>) -> Result<VoidOutcome, DbError> {
    let row = tx
        .query_opt(
            "SELECT e.status, (SELECT c.id FROM claim_encounters ce JOIN claims c ON c.id = ce.claim_id \
               WHERE ce.encounter_id = e.id AND c.status = 'confirmed' LIMIT 1) \
             FROM encounters e WHERE e.id = $1 FOR UPDATE OF e",
            &[&id],
        )
        .await?;
    let Some(row) = row else {
        return Ok(VoidOutcome::NotFound);
    };
    let status: String = row.get(0);
    if let Some(claim) = row.get::<_, Option<Uuid>>(1) {
        return Ok(VoidOutcome::InConfirmedClaim(claim));
    }
    if status == "voided" {
        return Ok(VoidOutcome::AlreadyVoided);
    }
    tx.execute(
        "UPDATE encounters SET status = 'voided', void_reason = $2, voided_at = $3 WHERE id = $1",
        &[&id, &reason, &chrono::Utc::now()],
    )
    .await?;
    Ok(VoidOutcome::Voided)
}
