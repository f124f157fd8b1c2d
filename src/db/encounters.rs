//! Encounters (visits) with their priced lines and diagnoses.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::billing::copay::{IncomeCategory, InsuranceKind};
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
    /// The line's points (1 point = 10 yen): a procedure's points x quantity; a drug line sent on its own is a unit of one drug for one day: its yen (unit price x quantity) at 15 yen or less is 1 point, otherwise 1 + ceil((yen - 15) / 10). A drug of a unit holds 0 but on the unit's last line, which holds the unit's points.
    pub points: i32,
    /// The drug unit (剤) the line belongs to, numbered from 1 in the visit; null for a procedure or a drug line sent on its own.
    #[serde(default)]
    pub unit: Option<i16>,
    /// The unit's kind: `internal` (内服, per day), `as_needed` (頓服, per dose) or `external` (外用, per dispensing).
    #[serde(default)]
    pub unit_kind: Option<String>,
    /// The unit's days (internal) or doses (as needed); 1 for external.
    #[serde(default)]
    pub unit_days: Option<i16>,
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
    /// Which rule gave the share: `preschool` (2割 before school age), `working_age` (3割), `elderly` (70-74: 2割, 現役並み 3割), `late_elderly` (1割, 一般Ⅱ 2割, 現役並み 3割), `override` (the rate typed on the insurance) or `uninsured` (no valid insurance: 100%).
    pub copay_rule: String,
    /// The sum of the lines' points.
    pub total_points: i32,
    /// What the visit costs the patient before the month's high-cost ceiling: total points x 10 yen x share, rounded to the nearest 10 yen (5 rounds up).
    pub charge_before_ceiling_yen: i32,
    /// What the patient pays for it: the charge before the ceiling, or less once the month's charges for this patient and insurer reach the outpatient ceiling (高額療養費), recomputed when an earlier visit of the month is entered or voided.
    pub charge_yen: i32,
    /// The month's ceiling as it stood at this visit, in yen; null when none applies at the window (under 70 without an income category, or no insurance).
    pub ceiling_yen: Option<i32>,
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
    pub copay_rule: &'a str,
    pub total_points: i64,
    /// Before the month's ceiling.
    pub charge_before_ceiling_yen: i64,
    /// After it, and the ceiling that applied.
    pub charge_yen: i64,
    pub ceiling_yen: Option<i64>,
    pub master_release: Option<&'a str>,
    pub diagnoses: &'a [(String, String)],
    pub lines: &'a [PricedLine],
}

/// The insurance that applies to a patient on a date.
#[derive(Debug, Clone)]
pub struct InsuranceOnDate {
    pub id: Uuid,
    pub insurer_number: String,
    pub kind: Option<InsuranceKind>,
    pub income_category: Option<IncomeCategory>,
    /// An explicit share that overrides the rules.
    pub copay_rate: Option<i16>,
}

/// A patient as pricing needs them: born when, insured how on the day.
pub struct PatientOnDate {
    pub birth_date: NaiveDate,
    pub insurance: Option<InsuranceOnDate>,
}

pub const SELECT_ENCOUNTER: &str = "SELECT e.id, e.patient_id, e.date, e.department, e.doctor, \
     e.notes, e.insurance_id, e.insurer_number, e.copay_rate, e.copay_rule, e.total_points, \
     e.charge_before_ceiling_yen, e.charge_yen, e.ceiling_yen, e.master_release, e.status, e.void_reason, e.voided_at, e.created_at, \
     coalesce((SELECT json_agg(json_build_object('code', d.code, 'name', d.name) ORDER BY d.position) \
       FROM encounter_diagnoses d WHERE d.encounter_id = e.id), '[]'::json) AS diagnoses, \
     coalesce((SELECT json_agg(json_build_object('code', l.code, 'kind', l.kind, 'name', l.name, \
       'quantity', l.quantity, 'points', l.points, 'unit', l.unit_no, 'unit_kind', l.unit_kind, \
       'unit_days', l.unit_days) ORDER BY l.line_no) \
       FROM encounter_lines l WHERE l.encounter_id = e.id), '[]'::json) AS lines \
     FROM encounters e";

/// The statements of entering a visit (`clinic::visits::record_visit`),
/// public so that the many-tenants benchmark gives pgbench the very same
/// SQL.
///
/// The patient, locked, and the insurance valid on `$2` ([`patient_on`]).
pub const PATIENT_ON: &str =
    "SELECT p.birth_date, i.id, i.insurer_number, i.kind, i.income_category, i.copay_rate \
     FROM patients p \
     LEFT JOIN LATERAL (SELECT id, insurer_number, kind, income_category, copay_rate \
       FROM insurances \
       WHERE patient_id = p.id AND valid_from <= $2 AND (valid_to IS NULL OR valid_to >= $2) \
       ORDER BY valid_from DESC LIMIT 1) i ON true \
     WHERE p.id = $1 FOR NO KEY UPDATE OF p";
/// The copy's release, locked against rollouts
/// ([`master_release_for_pricing`]).
pub const RELEASE_FOR_PRICING: &str = "SELECT release FROM master_meta FOR SHARE";
/// The month so far ([`month_so_far`]).
pub const MONTH_SO_FAR: &str =
    "SELECT coalesce(sum(total_points) FILTER (WHERE date <= $5), 0)::int8, \
       coalesce(sum(charge_yen) FILTER (WHERE date <= $5), 0)::int8, \
       count(*) FILTER (WHERE date > $5) > 0 \
     FROM encounters WHERE patient_id = $1 AND insurer_number = $2 \
       AND date >= $3 AND date < $4 AND status = 'active'";
/// The three inserts of [`insert`], sent in one round trip.
pub const INSERT_ENCOUNTER: &str =
    "INSERT INTO encounters (id, patient_id, date, department, doctor, notes, insurance_id, \
     insurer_number, copay_rate, total_points, charge_yen, master_release, copay_rule, \
     charge_before_ceiling_yen, ceiling_yen) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";
pub const INSERT_LINES: &str =
    "INSERT INTO encounter_lines (encounter_id, line_no, code, kind, name, quantity, points, \
     unit_no, unit_kind, unit_days) \
     SELECT $1, n, c, k, nm, q, p, un, uk, ud FROM unnest($2::int2[], $3::text[], $4::text[], \
     $5::text[], $6::int4[], $7::int4[], $8::int2[], $9::text[], $10::int2[]) \
     AS u(n, c, k, nm, q, p, un, uk, ud)";
pub const INSERT_DIAGNOSES: &str =
    "INSERT INTO encounter_diagnoses (encounter_id, position, code, name) \
     SELECT $1, n, c, nm FROM unnest($2::int2[], $3::text[], $4::text[]) AS u(n, c, nm)";

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
        copay_rule: row.get("copay_rule"),
        total_points: row.get("total_points"),
        charge_before_ceiling_yen: row.get("charge_before_ceiling_yen"),
        charge_yen: row.get("charge_yen"),
        ceiling_yen: row.get("ceiling_yen"),
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

pub async fn get_in(tx: &Tx<'_>, id: Uuid) -> Result<Option<Encounter>, DbError> {
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

/// Locks the patient's charges (`FOR NO KEY UPDATE`: its visits are
/// entered, voided and charged one at a time; see
/// [`lock_patient_charges`]) and returns its birth date and the insurance
/// valid on `date`; `None` for an unknown patient.
pub async fn patient_on(
    tx: &Tx<'_>,
    patient: Uuid,
    date: NaiveDate,
) -> Result<Option<PatientOnDate>, DbError> {
    let statement = tx.prepare_own(PATIENT_ON).await?;
    let Some(row) = tx.query_opt(&statement, &[&patient, &date]).await? else {
        return Ok(None);
    };
    let insurance = match row.get::<_, Option<Uuid>>(1) {
        None => None,
        Some(id) => Some(InsuranceOnDate {
            id,
            insurer_number: row.get(2),
            kind: parse_stored(row.get(3), InsuranceKind::parse, "insurance kind")?,
            income_category: parse_stored(row.get(4), IncomeCategory::parse, "income category")?,
            copay_rate: row.get(5),
        }),
    };
    Ok(Some(PatientOnDate {
        birth_date: row.get(0),
        insurance,
    }))
}

/// A stored code read back: absent stays absent; one recept does not know
/// is a fault in the data.
fn parse_stored<T>(
    text: Option<String>,
    parse: impl Fn(&str) -> Option<T>,
    what: &str,
) -> Result<Option<T>, DbError> {
    text.map(|t| parse(&t).ok_or_else(|| DbError::Corrupt(format!("unknown {what} `{t}`"))))
        .transpose()
}

/// The release the tenant's master copy holds, locked against rollouts
/// until the transaction ends.
pub async fn master_release_for_pricing(tx: &Tx<'_>) -> Result<Option<String>, DbError> {
    let statement = tx.prepare_cached(RELEASE_FOR_PRICING).await?;
    Ok(tx.query_one(&statement, &[]).await?.get(0))
}

/// Stores a priced encounter with its lines and diagnoses.
pub async fn insert(tx: &Tx<'_>, e: &NewEncounter<'_>) -> Result<Uuid, DbError> {
    let id = Uuid::now_v7();
    let insert_encounter = tx.prepare_cached(INSERT_ENCOUNTER).await?;
    let insert_lines = tx.prepare_cached(INSERT_LINES).await?;
    let insert_diagnoses = tx.prepare_cached(INSERT_DIAGNOSES).await?;
    let insurance_id = e.insurance.map(|i| i.id);
    let insurer = e.insurance.map(|i| i.insurer_number.as_str());
    let total = i32::try_from(e.total_points).map_err(|_| too_large())?;
    let charge = i32::try_from(e.charge_yen).map_err(|_| too_large())?;
    let before = i32::try_from(e.charge_before_ceiling_yen).map_err(|_| too_large())?;
    let ceiling = e
        .ceiling_yen
        .map(|c| i32::try_from(c).map_err(|_| too_large()))
        .transpose()?;
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
    let unit_nos: Vec<Option<i16>> = e.lines.iter().map(|l| l.unit.map(|u| u.no)).collect();
    let unit_kinds: Vec<Option<&str>> = e
        .lines
        .iter()
        .map(|l| l.unit.map(|u| u.kind.as_str()))
        .collect();
    let unit_days: Vec<Option<i16>> = e.lines.iter().map(|l| l.unit.map(|u| u.days)).collect();
    let positions: Vec<i16> = (1..=e.diagnoses.len() as i16).collect();
    let diagnosis_codes: Vec<&str> = e.diagnoses.iter().map(|d| d.0.as_str()).collect();
    let diagnosis_names: Vec<&str> = e.diagnoses.iter().map(|d| d.1.as_str()).collect();
    let encounter_params: [&(dyn ToSql + Sync); 15] = [
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
        &e.copay_rule,
        &before,
        &ceiling,
    ];
    let line_params: [&(dyn ToSql + Sync); 10] = [
        &id,
        &line_no,
        &codes,
        &kinds,
        &names,
        &quantities,
        &points,
        &unit_nos,
        &unit_kinds,
        &unit_days,
    ];
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
    /// Voided: the visit's patient, insurer and date, whose month is to
    /// be settled again.
    Voided {
        patient: Uuid,
        insurer_number: Option<String>,
        date: NaiveDate,
    },
}

/// Voids an encounter unless a confirmed claim includes it. Draft claims
/// that hold it are the caller's to release (`claims::release_encounter`).
pub async fn void(tx: &Tx<'_>, id: Uuid, reason: Option<&str>) -> Result<VoidOutcome, DbError> {
    let row = tx
        .query_opt(
            "SELECT e.status, (SELECT c.id FROM claim_encounters ce JOIN claims c ON c.id = ce.claim_id \
               WHERE ce.encounter_id = e.id AND c.status = 'confirmed' LIMIT 1), \
               e.patient_id, e.insurer_number, e.date \
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
    Ok(VoidOutcome::Voided {
        patient: row.get(2),
        insurer_number: row.get(3),
        date: row.get(4),
    })
}

/// Locks the patient's charges until the transaction ends, as
/// [`patient_on`] does for a visit being entered: two visits of one
/// patient entered or voided at once are charged one after the other, the
/// second seeing the first.
pub async fn lock_patient_charges(tx: &Tx<'_>, patient: Uuid) -> Result<(), DbError> {
    let statement = tx
        .prepare_cached("SELECT 1 FROM patients WHERE id = $1 FOR NO KEY UPDATE")
        .await?;
    tx.query_opt(&statement, &[&patient]).await?;
    Ok(())
}

/// The month so far, as a new visit on `date` sees it: what the active
/// visits up to that day cost (points) and were charged, and whether any
/// visit of the month comes after it.
pub struct MonthSoFar {
    pub points_before: i64,
    pub charged_before: i64,
    pub later: bool,
}

/// [`MonthSoFar`] for `patient` under `insurer_number` in `[from, to)`,
/// read in one row (a statement of its own, after the patient was locked).
pub async fn month_so_far(
    tx: &Tx<'_>,
    patient: Uuid,
    insurer_number: &str,
    from: NaiveDate,
    to: NaiveDate,
    date: NaiveDate,
) -> Result<MonthSoFar, DbError> {
    let statement = tx.prepare_own(MONTH_SO_FAR).await?;
    let row = tx
        .query_one(&statement, &[&patient, &insurer_number, &from, &to, &date])
        .await?;
    Ok(MonthSoFar {
        points_before: row.get(0),
        charged_before: row.get(1),
        later: row.get(2),
    })
}

/// An active visit of a month, as the high-cost ceiling sees it.
pub struct MonthVisitRow {
    pub id: Uuid,
    pub date: NaiveDate,
    pub total_points: i32,
    pub charge_before_ceiling: i32,
    pub charge: i32,
    pub ceiling: Option<i32>,
    /// The insurance the visit was charged under, and the patient's birth.
    pub kind: Option<InsuranceKind>,
    pub income_category: Option<IncomeCategory>,
    pub birth_date: NaiveDate,
    /// Held by a confirmed claim: counted, never changed.
    pub confirmed: bool,
}

/// The active visits of `patient` under `insurer_number` dated in
/// `[from, to)`, in the order the month is charged: by date, then by
/// entry (ids are time-ordered).
pub async fn month_visits(
    tx: &Tx<'_>,
    patient: Uuid,
    insurer_number: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<MonthVisitRow>, DbError> {
    let statement = tx
        .prepare_cached(
            "SELECT e.id, e.date, e.total_points, e.charge_before_ceiling_yen, e.charge_yen, \
               e.ceiling_yen, i.kind, i.income_category, p.birth_date, \
               EXISTS (SELECT 1 FROM claim_encounters ce JOIN claims c ON c.id = ce.claim_id \
                       WHERE ce.encounter_id = e.id AND c.status = 'confirmed') \
             FROM encounters e JOIN patients p ON p.id = e.patient_id \
             LEFT JOIN insurances i ON i.id = e.insurance_id \
             WHERE e.patient_id = $1 AND e.insurer_number = $2 AND e.date >= $3 AND e.date < $4 \
               AND e.status = 'active' \
             ORDER BY e.date, e.id",
        )
        .await?;
    tx.query(&statement, &[&patient, &insurer_number, &from, &to])
        .await?
        .iter()
        .map(|row| {
            Ok(MonthVisitRow {
                id: row.get(0),
                date: row.get(1),
                total_points: row.get(2),
                charge_before_ceiling: row.get(3),
                charge: row.get(4),
                ceiling: row.get(5),
                kind: parse_stored(row.get(6), InsuranceKind::parse, "insurance kind")?,
                income_category: parse_stored(
                    row.get(7),
                    IncomeCategory::parse,
                    "income category",
                )?,
                birth_date: row.get(8),
                confirmed: row.get(9),
            })
        })
        .collect()
}

/// Sets visits' charges after the ceiling: `(id, charge, ceiling)`.
pub async fn set_charges(tx: &Tx<'_>, changes: &[(Uuid, i64, Option<i64>)]) -> Result<(), DbError> {
    if changes.is_empty() {
        return Ok(());
    }
    let column = |yen: i64| i32::try_from(yen).map_err(|_| too_large());
    let ids: Vec<Uuid> = changes.iter().map(|c| c.0).collect();
    let charges = changes
        .iter()
        .map(|c| column(c.1))
        .collect::<Result<Vec<i32>, _>>()?;
    let ceilings = changes
        .iter()
        .map(|c| c.2.map(column).transpose())
        .collect::<Result<Vec<Option<i32>>, _>>()?;
    tx.execute(
        "UPDATE encounters e SET charge_yen = u.charge, ceiling_yen = u.ceiling \
         FROM unnest($1::uuid[], $2::int4[], $3::int4[]) AS u(id, charge, ceiling) \
         WHERE e.id = u.id",
        &[&ids, &charges, &ceilings],
    )
    .await?;
    Ok(())
}
