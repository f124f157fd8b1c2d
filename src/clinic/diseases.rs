//! A patient's disease list (傷病名): each disease a code of the clinic's
//! master copy valid on its start date, with an outcome (継続, 治ゆ, 死亡,
//! 中止) dated when it is not continuing, and the main-disease and
//! suspected flags a claim carries.

use chrono::NaiveDate;
use uuid::Uuid;

use super::input::is_code;
use super::write::{write_once, written, Made};
use super::{ClinicError, IdempotencyKey, Invalid, Written};
use crate::billing::pricing::resolve_diagnoses;
use crate::db::diseases::{self, DiseaseFields};
use crate::db::encounters::master_release_for_pricing;
use crate::master::MasterCache;
use crate::pools::TenantConn;

/// The most diseases one patient's list holds (a list, and a claim, that
/// must stay readable).
pub const MAX_DISEASES: i64 = 200;

/// How a disease ended, or that it did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Continuing,
    Cured,
    Died,
    Stopped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Continuing => "continuing",
            Outcome::Cured => "cured",
            Outcome::Died => "died",
            Outcome::Stopped => "stopped",
        }
    }

    fn parse(text: &str) -> Option<Outcome> {
        [
            Outcome::Continuing,
            Outcome::Cured,
            Outcome::Died,
            Outcome::Stopped,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }
}

/// A disease as the client sent it.
pub struct NewDisease {
    pub code: String,
    pub start_date: NaiveDate,
    pub outcome: Option<Outcome>,
    pub outcome_date: Option<NaiveDate>,
    pub main: bool,
    pub suspected: bool,
}

/// A change to a disease: `None` keeps a field, `Some(None)` clears the
/// outcome date.
#[derive(Default)]
pub struct DiseaseChange {
    pub outcome: Option<Outcome>,
    pub outcome_date: Option<Option<NaiveDate>>,
    pub main: Option<bool>,
    pub suspected: Option<bool>,
}

/// A disease's fields checked together: a dated outcome unless continuing,
/// never before the start.
fn check_fields(
    start: NaiveDate,
    outcome: Outcome,
    outcome_date: Option<NaiveDate>,
    main: bool,
    suspected: bool,
) -> Result<DiseaseFields, ClinicError> {
    let mut invalid = Invalid::default();
    match (outcome, outcome_date) {
        (Outcome::Continuing, Some(_)) => {
            invalid.push("outcome_date", "a continuing disease has no outcome date")
        }
        (Outcome::Continuing, None) => {}
        (_, None) => invalid.push(
            "outcome_date",
            format!("is required when the outcome is {}", outcome.as_str()),
        ),
        (_, Some(date)) if date < start => {
            invalid.push("outcome_date", format!("is before the start date {start}"))
        }
        _ => {}
    }
    invalid.or(DiseaseFields {
        outcome: outcome.as_str(),
        outcome_date,
        main,
        suspected,
    })
}

/// Adds a disease to a patient: its code must be a disease of the master
/// copy valid on its start date.
pub async fn add_disease(
    conn: &TenantConn,
    key: Option<IdempotencyKey>,
    cache: &MasterCache,
    tenant: Uuid,
    patient: Uuid,
    disease: NewDisease,
) -> Result<Written, ClinicError> {
    if !is_code(&disease.code) {
        return Err(ClinicError::invalid(
            "code",
            "must be 1 to 20 letters or digits",
        ));
    }
    let fields = check_fields(
        disease.start_date,
        disease.outcome.unwrap_or(Outcome::Continuing),
        disease.outcome_date,
        disease.main,
        disease.suspected,
    )?;
    write_once(conn, key, async |tx| {
        if !diseases::lock_patient(tx, patient).await? {
            return Err(ClinicError::NotFound(format!("no patient {patient}")));
        }
        if diseases::count(tx, patient).await? >= MAX_DISEASES {
            return Err(ClinicError::Conflict(format!(
                "patient {patient} already has {MAX_DISEASES} diseases; remove entries made by \
                 mistake first"
            )));
        }
        let release = master_release_for_pricing(tx).await?;
        let items = cache
            .lookup(
                tx,
                tenant,
                release.as_deref().unwrap_or(""),
                &[&disease.code],
            )
            .await?;
        let name = match resolve_diagnoses(
            disease.start_date,
            std::slice::from_ref(&disease.code),
            &items,
        ) {
            Ok(mut resolved) => resolved.remove(0).1,
            Err(problems) => {
                let message = problems
                    .into_iter()
                    .next()
                    .map(|p| p.message)
                    .unwrap_or_default();
                return Err(ClinicError::invalid("code", message));
            }
        };
        let added = diseases::insert(
            tx,
            patient,
            &disease.code,
            &name,
            disease.start_date,
            &fields,
        )
        .await?;
        written(Made::Created, &added, None)
    })
    .await
}

/// Changes a disease's outcome or flags.
pub async fn change_disease(
    conn: &TenantConn,
    patient: Uuid,
    id: Uuid,
    change: DiseaseChange,
) -> Result<Written, ClinicError> {
    write_once(conn, None, async |tx| {
        let current = diseases::get_for_update(tx, patient, id)
            .await?
            .ok_or_else(|| {
                ClinicError::NotFound(format!("no disease {id} of patient {patient}"))
            })?;
        let outcome = match change.outcome {
            Some(outcome) => outcome,
            None => Outcome::parse(&current.outcome).ok_or_else(|| {
                ClinicError::Db(crate::pools::DbError::Corrupt(format!(
                    "unknown outcome `{}`",
                    current.outcome
                )))
            })?,
        };
        // Back to continuing clears the date unless one is sent.
        let outcome_date = match change.outcome_date {
            Some(date) => date,
            None if outcome == Outcome::Continuing => None,
            None => current.outcome_date,
        };
        let fields = check_fields(
            current.start_date,
            outcome,
            outcome_date,
            change.main.unwrap_or(current.main),
            change.suspected.unwrap_or(current.suspected),
        )?;
        let changed = diseases::update(tx, id, &fields).await?;
        written(Made::Changed, &changed, None)
    })
    .await
}

/// Removes a disease entered by mistake; answers what was removed.
pub async fn remove_disease(
    conn: &TenantConn,
    patient: Uuid,
    id: Uuid,
) -> Result<Written, ClinicError> {
    write_once(conn, None, async |tx| {
        let removed = diseases::delete(tx, patient, id).await?.ok_or_else(|| {
            ClinicError::NotFound(format!("no disease {id} of patient {patient}"))
        })?;
        written(Made::Changed, &removed, None)
    })
    .await
}
