//! Patients: registration and guarded changes. Names and free text are
//! trimmed and bounded; insurances have valid insurer numbers and copay
//! rates and periods that do not overlap; a change names the version it
//! was made from.

use chrono::NaiveDate;
use uuid::Uuid;

use super::write::{write_once, written, Made};
use super::{ClinicError, IdempotencyKey, Invalid, Written};
use crate::billing::copay::{IncomeCategory, InsuranceKind};
use crate::db::patients::{self, NewInsurance, PatientFields, Update};
use crate::pools::TenantConn;

/// The most insurances one patient holds.
pub const MAX_INSURANCES: usize = 10;

/// An insurance as the client sent it.
pub struct InsuranceInput {
    pub insurer_number: String,
    pub symbol: Option<String>,
    pub number: Option<String>,
    /// What kind of insurance, so that the share follows the rules.
    pub kind: Option<InsuranceKind>,
    /// `insured` or `dependent`.
    pub relation: Option<&'static str>,
    pub income_category: Option<IncomeCategory>,
    /// An explicit share that overrides the rules.
    pub copay_rate: Option<i64>,
    pub valid_from: NaiveDate,
    pub valid_to: Option<NaiveDate>,
}

/// A change to a patient: `None` keeps a field, `Some(None)` clears an
/// optional one; `insurances` replaces the whole list when present.
#[derive(Default)]
pub struct PatientChange {
    pub name: Option<String>,
    pub name_kana: Option<Option<String>>,
    pub birth_date: Option<NaiveDate>,
    pub sex: Option<&'static str>,
    pub phone: Option<Option<String>>,
    pub address: Option<Option<String>>,
    pub notes: Option<Option<String>>,
    pub insurances: Option<Vec<InsuranceInput>>,
}

/// A patient's entity tag: its version, quoted.
pub fn etag(version: i32) -> String {
    format!("\"{version}\"")
}

/// Registers a patient with its insurances.
pub async fn register_patient(
    conn: &TenantConn,
    key: Option<IdempotencyKey>,
    fields: PatientFields,
    insurances: Vec<InsuranceInput>,
) -> Result<Written, ClinicError> {
    let mut invalid = Invalid::default();
    let fields = check_fields(fields, &mut invalid);
    let insurances = check_insurances(insurances, &mut invalid);
    invalid.or(())?;
    write_once(conn, key, async |tx| {
        let patient = patients::insert(tx, &fields, &insurances).await?;
        written(Made::Created, &patient, Some(etag(patient.version)))
    })
    .await
}

/// Changes a patient made from version `expected` (`None`: whatever is
/// current). A change that could never be made is refused as such before
/// the version is compared.
pub async fn update_patient(
    conn: &TenantConn,
    id: Uuid,
    expected: Option<i32>,
    change: PatientChange,
) -> Result<Written, ClinicError> {
    write_once(conn, None, async |tx| {
        let current = patients::get_in(tx, id)
            .await?
            .ok_or_else(|| ClinicError::NotFound(format!("no patient {id}")))?;
        let version = current.version;
        let mut invalid = Invalid::default();
        let fields = check_fields(
            PatientFields {
                name: change.name.unwrap_or(current.name),
                name_kana: change.name_kana.unwrap_or(current.name_kana),
                birth_date: change.birth_date.unwrap_or(current.birth_date),
                sex: change.sex.map_or(current.sex, str::to_string),
                phone: change.phone.unwrap_or(current.phone),
                address: change.address.unwrap_or(current.address),
                notes: change.notes.unwrap_or(current.notes),
            },
            &mut invalid,
        );
        let insurances = change
            .insurances
            .map(|list| check_insurances(list, &mut invalid));
        invalid.or(())?;
        let expected = expected.unwrap_or(version);
        let stale = |now: i32| {
            ClinicError::Stale(format!(
                "the patient changed (now version {now}); fetch it again"
            ))
        };
        if version != expected {
            return Err(stale(version));
        }
        match patients::update(tx, id, expected, &fields, insurances.as_deref()).await? {
            Update::NotFound => Err(ClinicError::NotFound(format!("no patient {id}"))),
            Update::Stale(now) => Err(stale(now)),
            Update::Updated(patient) => {
                written(Made::Changed, &patient, Some(etag(patient.version)))
            }
        }
    })
    .await
}

/// Optional text trimmed to `None` when empty, at most `max` characters
/// without control characters.
fn text(
    invalid: &mut Invalid,
    field: &str,
    value: Option<String>,
    max: usize,
    required: bool,
) -> Option<String> {
    let value = value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    match &value {
        None if required => invalid.push(field, "is required"),
        Some(v) if v.chars().count() > max || v.chars().any(char::is_control) => invalid.push(
            field,
            format!("must be at most {max} characters, without control characters"),
        ),
        _ => {}
    }
    value
}

/// Checks and normalizes the patient's fields.
fn check_fields(fields: PatientFields, invalid: &mut Invalid) -> PatientFields {
    let name = text(invalid, "name", Some(fields.name), 100, true).unwrap_or_default();
    let name_kana = text(invalid, "name_kana", fields.name_kana, 100, false);
    let phone = text(invalid, "phone", fields.phone, 30, false);
    let address = text(invalid, "address", fields.address, 200, false);
    let notes = text(invalid, "notes", fields.notes, 2000, false);
    let today = chrono::Utc::now().date_naive();
    let oldest = NaiveDate::from_ymd_opt(1900, 1, 1).expect("a valid date");
    if fields.birth_date > today || fields.birth_date < oldest {
        invalid.push("birth_date", "must be between 1900-01-01 and today");
    }
    PatientFields {
        name,
        name_kana,
        birth_date: fields.birth_date,
        sex: fields.sex,
        phone,
        address,
        notes,
    }
}

/// Checks insurances: insurer numbers, copay rates, non-overlapping periods.
fn check_insurances(list: Vec<InsuranceInput>, invalid: &mut Invalid) -> Vec<NewInsurance> {
    if list.len() > MAX_INSURANCES {
        invalid.push("insurances", format!("at most {MAX_INSURANCES}"));
        return Vec::new();
    }
    let mut checked = Vec::with_capacity(list.len());
    for (i, ins) in list.into_iter().enumerate() {
        let at = |f: &str| format!("insurances/{i}/{f}");
        let insurer = ins.insurer_number.trim().to_string();
        if !(insurer.len() == 6 || insurer.len() == 8)
            || !insurer.bytes().all(|b| b.is_ascii_digit())
        {
            invalid.push(at("insurer_number"), "must be 6 or 8 digits");
        }
        if ins
            .copay_rate
            .is_some_and(|rate| ![10, 20, 30].contains(&rate))
        {
            invalid.push(at("copay_rate"), "must be 10, 20 or 30 (percent)");
        }
        if ins.kind.is_none() && ins.copay_rate.is_none() {
            invalid.push(
                at("kind"),
                "give the insurance's kind (the share then follows from age and income \
                 category) or an explicit copay_rate",
            );
        }
        if ins.kind == Some(InsuranceKind::LateElderly)
            && ins.income_category.is_some_and(|c| !c.is_elderly())
        {
            invalid.push(
                at("income_category"),
                "a late-elderly insurance takes a 70-and-over category (genekinami_1..3, \
                 ippan, ippan_2, teishotoku_1, teishotoku_2)",
            );
        }
        let symbol = text(invalid, &at("symbol"), ins.symbol, 20, false);
        let number = text(invalid, &at("number"), ins.number, 20, false);
        if ins.valid_to.is_some_and(|to| to < ins.valid_from) {
            invalid.push(at("valid_to"), "is before valid_from");
        }
        checked.push(NewInsurance {
            insurer_number: insurer,
            symbol,
            number,
            kind: ins.kind,
            relation: ins.relation,
            income_category: ins.income_category,
            copay_rate: ins.copay_rate.map(|rate| rate.clamp(0, 100) as i16),
            valid_from: ins.valid_from,
            valid_to: ins.valid_to,
        });
    }
    let mut periods: Vec<(usize, &NewInsurance)> = checked.iter().enumerate().collect();
    periods.sort_by_key(|(_, ins)| ins.valid_from);
    for pair in periods.windows(2) {
        let ((_, first), (i, next)) = (pair[0], pair[1]);
        if first.valid_to.is_none_or(|to| to >= next.valid_from) {
            invalid.push(
                format!("insurances/{i}/valid_from"),
                "overlaps another insurance's period",
            );
        }
    }
    checked
}
