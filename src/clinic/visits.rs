//! Visits (encounters) and their payments: a visit is priced on entry
//! from the clinic's master copy valid on its date and charged by the
//! patient's insurance on that date; voiding it takes it out of the
//! month's draft claims; a payment never pays more than is owed.

use chrono::NaiveDate;
use uuid::Uuid;

use super::input::is_code;
use super::write::{write_once, written, Made};
use super::{ClinicError, IdempotencyKey, Invalid, Written};
use crate::billing::pricing::{price_lines, resolve_diagnoses, LineRequest};
use crate::billing::{patient_charge, UNINSURED_COPAY_PERCENT};
use crate::db::claims;
use crate::db::encounters::{self, NewEncounter, VoidOutcome};
use crate::db::payments::{self, PaymentOutcome};
use crate::master::MasterCache;
use crate::pools::TenantConn;

/// The most lines one visit holds.
pub const MAX_LINES: usize = 100;
/// The most diagnoses one visit carries.
pub const MAX_DIAGNOSES: usize = 20;
/// The most of one item on one line.
pub const MAX_QUANTITY: i64 = 9_999;

/// One line of a visit as the client sent it.
pub struct VisitLine {
    pub code: String,
    pub quantity: i64,
}

/// A visit to record, checked: 1 to [`MAX_LINES`] lines of well-formed
/// codes and quantities, at most [`MAX_DIAGNOSES`] diagnoses, short texts.
pub struct NewVisit {
    patient_id: Uuid,
    date: NaiveDate,
    department: Option<String>,
    doctor: Option<String>,
    notes: Option<String>,
    diagnoses: Vec<String>,
    lines: Vec<LineRequest>,
}

impl NewVisit {
    /// Checks every field, naming each one that is wrong.
    #[allow(clippy::too_many_arguments)]
    pub fn parse(
        patient_id: Uuid,
        date: NaiveDate,
        department: Option<String>,
        doctor: Option<String>,
        notes: Option<String>,
        diagnoses: Vec<String>,
        lines: Vec<VisitLine>,
    ) -> Result<NewVisit, ClinicError> {
        let mut invalid = Invalid::default();
        if lines.is_empty() || lines.len() > MAX_LINES {
            invalid.push("items", format!("must have 1 to {MAX_LINES} lines"));
        }
        for (i, line) in lines.iter().enumerate() {
            if !(1..=MAX_QUANTITY).contains(&line.quantity) {
                invalid.push(
                    format!("items/{i}/quantity"),
                    format!("must be 1 to {MAX_QUANTITY}"),
                );
            }
            if !is_code(&line.code) {
                invalid.push(
                    format!("items/{i}/code"),
                    "must be 1 to 20 letters or digits",
                );
            }
        }
        if diagnoses.len() > MAX_DIAGNOSES {
            invalid.push("diagnoses", format!("at most {MAX_DIAGNOSES}"));
        }
        for (i, code) in diagnoses.iter().enumerate() {
            if !is_code(code) {
                invalid.push(
                    format!("diagnoses/{i}"),
                    "must be 1 to 20 letters or digits",
                );
            }
        }
        for (field, value, max) in [
            ("department", &department, 50),
            ("doctor", &doctor, 50),
            ("notes", &notes, 2000),
        ] {
            if value.as_ref().is_some_and(|v| v.chars().count() > max) {
                invalid.push(field, format!("must be at most {max} characters"));
            }
        }
        invalid.or(NewVisit {
            patient_id,
            date,
            department,
            doctor,
            notes,
            diagnoses,
            lines: lines
                .into_iter()
                .map(|l| LineRequest {
                    code: l.code,
                    quantity: l.quantity,
                })
                .collect(),
        })
    }
}

/// Records a visit: prices its lines from the master copy valid on its
/// date (locked against a rollout for the transaction), resolves its
/// diagnoses, charges it by the insurance valid that day, and answers the
/// stored encounter.
pub async fn record_visit(
    conn: &TenantConn,
    key: Option<IdempotencyKey>,
    cache: &MasterCache,
    tenant: Uuid,
    visit: NewVisit,
) -> Result<Written, ClinicError> {
    let mut codes: Vec<&str> = visit.lines.iter().map(|l| l.code.as_str()).collect();
    codes.extend(visit.diagnoses.iter().map(String::as_str));
    write_once(conn, key, async |tx| {
        // The copy's release (locked against rollouts) and the patient's
        // insurance on the day, in one round trip.
        let (release, insurance) = futures::try_join!(
            encounters::master_release_for_pricing(tx),
            encounters::patient_insurance_on(tx, visit.patient_id, visit.date),
        )?;
        let insurance = insurance
            .ok_or_else(|| ClinicError::NotFound(format!("no patient {}", visit.patient_id)))?;
        let items = cache
            .lookup(tx, tenant, release.as_deref().unwrap_or(""), &codes)
            .await?;
        let priced = price_lines(visit.date, &visit.lines, &items);
        let diagnoses = resolve_diagnoses(visit.date, &visit.diagnoses, &items);
        let (priced, diagnoses) = match (priced, diagnoses) {
            (Ok(p), Ok(d)) => (p, d),
            (p, d) => {
                let mut invalid = Invalid::default();
                for problem in p.err().into_iter().flatten() {
                    invalid.push(format!("items/{}/code", problem.index), problem.message);
                }
                for problem in d.err().into_iter().flatten() {
                    invalid.push(format!("diagnoses/{}", problem.index), problem.message);
                }
                return Err(ClinicError::Invalid(invalid.0));
            }
        };
        let total_points: i64 = priced.iter().map(|l| l.points).sum();
        let copay_rate = insurance
            .as_ref()
            .map_or(UNINSURED_COPAY_PERCENT, |i| i64::from(i.copay_rate));
        let id = encounters::insert(
            tx,
            &NewEncounter {
                patient_id: visit.patient_id,
                date: visit.date,
                department: visit.department.as_deref(),
                doctor: visit.doctor.as_deref(),
                notes: visit.notes.as_deref(),
                insurance: insurance.as_ref(),
                copay_rate: copay_rate as i16,
                total_points,
                charge_yen: patient_charge(total_points, copay_rate),
                master_release: release.as_deref(),
                diagnoses: &diagnoses,
                lines: &priced,
            },
        )
        .await?;
        let encounter = encounters::get_in(tx, id).await?.ok_or_else(|| {
            ClinicError::Db(crate::pools::DbError::Corrupt(format!(
                "encounter {id} vanished inside its own transaction"
            )))
        })?;
        written(Made::Created, &encounter, None)
    })
    .await
}

/// Voids a visit: it no longer counts anywhere, and the month's draft
/// claims that held it are recomputed. A visit in a confirmed claim cannot
/// change (corrections are a void and a new visit before confirmation).
pub async fn void_visit(
    conn: &TenantConn,
    id: Uuid,
    reason: Option<String>,
) -> Result<Written, ClinicError> {
    if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(ClinicError::invalid(
            "reason",
            "must be at most 500 characters",
        ));
    }
    write_once(conn, None, async |tx| {
        match encounters::void(tx, id, reason.as_deref()).await? {
            VoidOutcome::NotFound => Err(ClinicError::NotFound(format!("no encounter {id}"))),
            VoidOutcome::AlreadyVoided => Err(ClinicError::Conflict(format!(
                "encounter {id} is already voided"
            ))),
            VoidOutcome::InConfirmedClaim(claim) => Err(ClinicError::Conflict(format!(
                "encounter {id} is part of confirmed claim {claim}; it cannot change"
            ))),
            VoidOutcome::Voided => {
                claims::release_encounter(tx, id).await?;
                let encounter = encounters::get_in(tx, id)
                    .await?
                    .ok_or_else(|| ClinicError::NotFound(format!("no encounter {id}")))?;
                written(Made::Changed, &encounter, None)
            }
        }
    })
    .await
}

/// How a payment was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentMethod {
    Cash,
    Card,
    Other,
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Cash => "cash",
            PaymentMethod::Card => "card",
            PaymentMethod::Other => "other",
        }
    }
}

/// A payment to record, checked: a positive amount that fits in yen.
pub struct NewPayment {
    encounter_id: Uuid,
    amount_yen: i32,
    method: PaymentMethod,
}

impl NewPayment {
    pub fn parse(
        encounter_id: Uuid,
        amount_yen: i64,
        method: PaymentMethod,
    ) -> Result<NewPayment, ClinicError> {
        let amount_yen = i32::try_from(amount_yen)
            .ok()
            .filter(|a| *a > 0)
            .ok_or_else(|| {
                ClinicError::invalid("amount_yen", "must be a positive number of yen")
            })?;
        Ok(NewPayment {
            encounter_id,
            amount_yen,
            method,
        })
    }
}

/// Records a payment against a visit that is not voided, never more than
/// the visit still owes.
pub async fn pay(
    conn: &TenantConn,
    key: Option<IdempotencyKey>,
    payment: NewPayment,
) -> Result<Written, ClinicError> {
    let encounter = payment.encounter_id;
    write_once(conn, key, async |tx| {
        match payments::record(tx, encounter, payment.amount_yen, payment.method.as_str()).await? {
            PaymentOutcome::NoEncounter => {
                Err(ClinicError::NotFound(format!("no encounter {encounter}")))
            }
            PaymentOutcome::Voided => Err(ClinicError::Conflict(format!(
                "encounter {encounter} is voided"
            ))),
            PaymentOutcome::Overpaid { outstanding } => Err(ClinicError::invalid(
                "amount_yen",
                format!("exceeds what the encounter still owes ({outstanding} yen)"),
            )),
            PaymentOutcome::Recorded(recorded) => written(Made::Created, &recorded, None),
        }
    })
    .await
}
