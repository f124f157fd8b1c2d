//! Patients and their insurances.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::types::Json;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::billing::copay::{IncomeCategory, InsuranceKind};
use crate::pools::{unqualified, DbError, TenantConn, Tx};

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Insurance {
    /// The insurance record's id.
    pub id: Uuid,
    /// The insurer's number (保険者番号): 6 or 8 digits.
    pub insurer_number: String,
    /// The symbol on the insurance card (記号).
    pub symbol: Option<String>,
    /// The number on the insurance card (番号).
    pub number: Option<String>,
    /// `employee` (被用者保険), `national` (国民健康保険) or `late_elderly`
    /// (後期高齢者医療); null for an insurance entered with only a rate.
    pub kind: Option<InsuranceKind>,
    /// `insured` (本人) or `dependent` (家族).
    pub relation: Option<String>,
    /// The income category on the patient's certificate (所得区分): under
    /// 70 `a`, `i`, `u`, `e`, `o` (ア–オ); from 70 `genekinami_3`,
    /// `genekinami_2`, `genekinami_1`, `ippan`, `ippan_2`, `teishotoku_2`,
    /// `teishotoku_1`.
    pub income_category: Option<IncomeCategory>,
    /// An explicit share in percent (10, 20 or 30) that overrides the
    /// rules; null when the share follows from age and kind.
    pub copay_rate: Option<i16>,
    /// The first day the insurance is valid.
    pub valid_from: NaiveDate,
    /// The last day it is valid; null while it stays valid.
    pub valid_to: Option<NaiveDate>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Patient {
    /// The patient's id, unique within the clinic.
    pub id: Uuid,
    /// The patient's name.
    pub name: String,
    /// The name's reading in kana.
    pub name_kana: Option<String>,
    /// The date of birth.
    pub birth_date: NaiveDate,
    /// `male`, `female` or `other`.
    pub sex: String,
    /// Phone number.
    pub phone: Option<String>,
    /// Address.
    pub address: Option<String>,
    /// Free text for the front desk.
    pub notes: Option<String>,
    /// The patient's insurances, by start date; their periods do not overlap.
    pub insurances: Vec<Insurance>,
    /// Bumped by every change; sent as the ETag.
    pub version: i32,
    /// When the patient was registered.
    pub created_at: DateTime<Utc>,
    /// When the patient last changed.
    pub updated_at: DateTime<Utc>,
}

/// The fields a patient is created or replaced with (already validated).
#[derive(Debug, Clone)]
pub struct PatientFields {
    pub name: String,
    pub name_kana: Option<String>,
    pub birth_date: NaiveDate,
    pub sex: String,
    pub phone: Option<String>,
    pub address: Option<String>,
    pub notes: Option<String>,
}

/// An insurance as entered (already validated).
#[derive(Debug, Clone)]
pub struct NewInsurance {
    pub insurer_number: String,
    pub symbol: Option<String>,
    pub number: Option<String>,
    pub kind: Option<InsuranceKind>,
    pub relation: Option<&'static str>,
    pub income_category: Option<IncomeCategory>,
    pub copay_rate: Option<i16>,
    pub valid_from: NaiveDate,
    pub valid_to: Option<NaiveDate>,
}

/// One patient with its insurances, by id (`$1`); its tables carry the
/// marks of [`crate::pools::TENANT`]. The benchmarks reuse it.
///
/// The insurances come as whole rows (`json_agg(i)`, NULL when there are
/// none) and are put in order here: a tenant's own statement of this
/// text is kept at each of its home connections, and this shape takes a
/// third less of the backend's memory (about 29 against 41 KB in use
/// with its plan, `pg_backend_memory_contexts`) and less planning on a
/// shared connection than naming each field with `json_build_object`
/// and ordering in SQL (load/RESULTS.md, "A leaner patient read").
pub const SELECT_PATIENT: &str = "SELECT p.id, p.name, p.name_kana, p.birth_date, p.sex, p.phone, \
     p.address, p.notes, p.version, p.created_at, p.updated_at, \
     (SELECT json_agg(i) FROM \"{tenant}\".insurances i WHERE i.patient_id = p.id) AS insurances \
     FROM \"{tenant}\".patients p WHERE p.id = $1";

fn patient_from_row(row: &Row) -> Result<Patient, DbError> {
    // Read straight from the column's text, not through a `Value`; the
    // rows' other columns (`patient_id`) are not fields and are skipped.
    let mut insurances = row
        .try_get::<_, Option<Json<Vec<Insurance>>>>("insurances")
        .map_err(|e| DbError::Corrupt(format!("unreadable insurances: {e}")))?
        .map(|json| json.0)
        .unwrap_or_default();
    insurances.sort_by_key(|i| (i.valid_from, i.id));
    Ok(Patient {
        id: row.get("id"),
        name: row.get("name"),
        name_kana: row.get("name_kana"),
        birth_date: row.get("birth_date"),
        sex: row.get("sex"),
        phone: row.get("phone"),
        address: row.get("address"),
        notes: row.get("notes"),
        insurances,
        version: row.get("version"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

/// One patient, in one round trip.
pub async fn get(conn: &TenantConn, id: Uuid) -> Result<Option<Patient>, DbError> {
    conn.read(SELECT_PATIENT, &[&id])
        .await?
        .first()
        .map(patient_from_row)
        .transpose()
}

/// One patient, inside a write.
pub async fn get_in(tx: &Tx<'_>, id: Uuid) -> Result<Option<Patient>, DbError> {
    let statement = tx.prepare_cached(&unqualified(SELECT_PATIENT)).await?;
    tx.query_opt(&statement, &[&id])
        .await?
        .as_ref()
        .map(patient_from_row)
        .transpose()
}

/// Creates a patient with its insurances.
pub async fn insert(
    tx: &Tx<'_>,
    fields: &PatientFields,
    insurances: &[NewInsurance],
) -> Result<Patient, DbError> {
    let id = Uuid::now_v7();
    let statement = tx
        .prepare_cached(
            "INSERT INTO patients (id, name, name_kana, birth_date, sex, phone, address, notes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await?;
    tx.execute(
        &statement,
        &[
            &id,
            &fields.name,
            &fields.name_kana,
            &fields.birth_date,
            &fields.sex,
            &fields.phone,
            &fields.address,
            &fields.notes,
        ],
    )
    .await?;
    insert_insurances(tx, id, insurances).await?;
    get_in(tx, id)
        .await?
        .ok_or_else(|| DbError::Corrupt("a patient vanished inside its transaction".into()))
}

async fn insert_insurances(
    tx: &Tx<'_>,
    patient: Uuid,
    insurances: &[NewInsurance],
) -> Result<(), DbError> {
    if insurances.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = insurances.iter().map(|_| Uuid::now_v7()).collect();
    let insurers: Vec<&str> = insurances
        .iter()
        .map(|i| i.insurer_number.as_str())
        .collect();
    let symbols: Vec<Option<&str>> = insurances.iter().map(|i| i.symbol.as_deref()).collect();
    let numbers: Vec<Option<&str>> = insurances.iter().map(|i| i.number.as_deref()).collect();
    let kinds: Vec<Option<&str>> = insurances
        .iter()
        .map(|i| i.kind.map(|k| k.as_str()))
        .collect();
    let relations: Vec<Option<&str>> = insurances.iter().map(|i| i.relation).collect();
    let categories: Vec<Option<&str>> = insurances
        .iter()
        .map(|i| i.income_category.map(|c| c.as_str()))
        .collect();
    let rates: Vec<Option<i16>> = insurances.iter().map(|i| i.copay_rate).collect();
    let froms: Vec<NaiveDate> = insurances.iter().map(|i| i.valid_from).collect();
    let tos: Vec<Option<NaiveDate>> = insurances.iter().map(|i| i.valid_to).collect();
    let statement = tx
        .prepare_cached(
            "INSERT INTO insurances (id, patient_id, insurer_number, symbol, number, kind, \
             relation, income_category, copay_rate, valid_from, valid_to) \
             SELECT id, $2, ins, sym, num, k, rel, cat, rate, vf, vt FROM unnest($1::uuid[], \
             $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
             $9::int2[], $10::date[], $11::date[]) \
             AS u(id, ins, sym, num, k, rel, cat, rate, vf, vt)",
        )
        .await?;
    tx.execute(
        &statement,
        &[
            &ids,
            &patient,
            &insurers,
            &symbols,
            &numbers,
            &kinds,
            &relations,
            &categories,
            &rates,
            &froms,
            &tos,
        ],
    )
    .await?;
    Ok(())
}

/// What a guarded update found.
pub enum Update {
    NotFound,
    /// The patient changed since the version the client saw.
    Stale(i32),
    Updated(Box<Patient>),
}

/// Replaces the patient's fields (and insurances, when given) if it is
/// still at `expected_version`.
pub async fn update(
    tx: &Tx<'_>,
    id: Uuid,
    expected_version: i32,
    fields: &PatientFields,
    insurances: Option<&[NewInsurance]>,
) -> Result<Update, DbError> {
    let current = tx
        .query_opt(
            "SELECT version FROM patients WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?;
    let Some(current) = current else {
        return Ok(Update::NotFound);
    };
    let version: i32 = current.get(0);
    if version != expected_version {
        return Ok(Update::Stale(version));
    }
    tx.execute(
        "UPDATE patients SET name = $2, name_kana = $3, birth_date = $4, sex = $5, phone = $6, \
         address = $7, notes = $8, version = version + 1, updated_at = $9 WHERE id = $1",
        &[
            &id,
            &fields.name,
            &fields.name_kana,
            &fields.birth_date,
            &fields.sex,
            &fields.phone,
            &fields.address,
            &fields.notes,
            &chrono::Utc::now(),
        ],
    )
    .await?;
    if let Some(insurances) = insurances {
        // Insurances that encounters already refer to are kept; the rest
        // are replaced by the new list.
        tx.execute(
            "DELETE FROM insurances i WHERE i.patient_id = $1 \
             AND NOT EXISTS (SELECT 1 FROM encounters e WHERE e.insurance_id = i.id)",
            &[&id],
        )
        .await?;
        insert_insurances(tx, id, insurances).await?;
    }
    Ok(match get_in(tx, id).await? {
        Some(patient) => Update::Updated(Box::new(patient)),
        None => Update::NotFound,
    })
}

/// A patient in a search result.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PatientSummary {
    /// The patient's id.
    pub id: Uuid,
    /// The patient's name.
    pub name: String,
    /// The name's reading in kana.
    pub name_kana: Option<String>,
    /// The date of birth.
    pub birth_date: NaiveDate,
    /// `male`, `female` or `other`.
    pub sex: String,
}

/// Patients whose name or kana starts with `prefix`, by id, after `after`.
pub async fn search(
    conn: &TenantConn,
    prefix: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<PatientSummary>, DbError> {
    let pattern = prefix.map(|p| format!("{}%", super::like_escape(p)));
    let rows = conn
        .read(
            "SELECT id, name, name_kana, birth_date, sex FROM patients \
             WHERE ($1::text IS NULL OR name LIKE $1 OR name_kana LIKE $1) \
               AND ($2::uuid IS NULL OR id > $2) \
             ORDER BY id LIMIT $3",
            &[&pattern, &after, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| PatientSummary {
            id: row.get(0),
            name: row.get(1),
            name_kana: row.get(2),
            birth_date: row.get(3),
            sex: row.get(4),
        })
        .collect())
}

/// The patient's billed, paid and outstanding yen; `None` if no such patient.
pub async fn balance(conn: &TenantConn, id: Uuid) -> Result<Option<(i64, i64)>, DbError> {
    let rows = conn
        .read(
            "SELECT (SELECT coalesce(sum(charge_yen), 0)::int8 FROM encounters \
                     WHERE patient_id = p.id AND status = 'active'), \
                    (SELECT coalesce(sum(amount_yen), 0)::int8 FROM payments WHERE patient_id = p.id) \
             FROM patients p WHERE p.id = $1",
            &[&id],
        )
        .await?;
    Ok(rows.first().map(|row| (row.get(0), row.get(1))))
}
