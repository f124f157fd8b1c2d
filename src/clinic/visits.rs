//! Visits (encounters) and their payments: a visit is priced on entry
//! from the clinic's master copy valid on its date and charged by the
//! patient's insurance on that date; voiding it takes it out of the
//! month's draft claims; a payment never pays more than is owed.

use chrono::{Datelike, NaiveDate};
use uuid::Uuid;

use super::input::is_code;
use super::write::{write_once, write_once_planned, written, Made};
use super::{ClinicError, IdempotencyKey, Invalid, Written};
use crate::billing::ceiling::{
    charge_after, charges_under_ceiling, outpatient_ceiling, MonthVisit,
};
use crate::billing::copay::{copay_percent, CopayRule, InsuranceKind};
use crate::billing::drug_units::UnitKind;
use crate::billing::pricing::{
    price_lines, price_units, resolve_diagnoses, LineRequest, UnitRequest,
};
use crate::billing::{patient_charge, UNINSURED_COPAY_PERCENT, YEN_PER_POINT};
use crate::db::claims;
use crate::db::encounters::{self, NewEncounter, PatientOnDate, VoidOutcome};
use crate::db::payments::{self, PaymentOutcome};
use crate::master::MasterCache;
use crate::pools::{Planning, TenantConn, Tx};

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

/// A drug unit (剤) of a visit as the client sent it.
pub struct VisitUnit {
    pub kind: UnitKind,
    /// Days (internal) or doses (as needed); absent or 1 for external.
    pub days: Option<i64>,
    pub drugs: Vec<VisitLine>,
}

/// The most drugs in one unit.
pub const MAX_UNIT_DRUGS: usize = 20;
/// The most days (or doses) of one unit.
pub const MAX_UNIT_DAYS: i64 = 365;

/// A visit to record, checked: 1 to [`MAX_LINES`] lines (procedure and
/// drug lines, and the drugs of its units) of well-formed codes and
/// quantities, at most [`MAX_DIAGNOSES`] diagnoses, short texts.
pub struct NewVisit {
    patient_id: Uuid,
    date: NaiveDate,
    department: Option<String>,
    doctor: Option<String>,
    notes: Option<String>,
    diagnoses: Vec<String>,
    lines: Vec<LineRequest>,
    units: Vec<UnitRequest>,
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
        units: Vec<VisitUnit>,
    ) -> Result<NewVisit, ClinicError> {
        let mut invalid = Invalid::default();
        let unit_drugs: usize = units.iter().map(|u| u.drugs.len()).sum();
        if lines.len() + unit_drugs == 0 || lines.len() + unit_drugs > MAX_LINES {
            invalid.push(
                "items",
                format!("must have 1 to {MAX_LINES} lines, counting the drugs of drug_units"),
            );
        }
        let mut checked_units = Vec::with_capacity(units.len());
        for (u, unit) in units.into_iter().enumerate() {
            let at = |f: &str| format!("drug_units/{u}/{f}");
            if unit.drugs.is_empty() || unit.drugs.len() > MAX_UNIT_DRUGS {
                invalid.push(
                    at("drugs"),
                    format!("must have 1 to {MAX_UNIT_DRUGS} drugs"),
                );
            }
            let days = match (unit.kind, unit.days) {
                (UnitKind::External, None | Some(1)) => 1,
                (UnitKind::External, Some(_)) => {
                    invalid.push(
                        at("days"),
                        "an external unit is one dispensing: leave days out",
                    );
                    1
                }
                (_, Some(days)) if (1..=MAX_UNIT_DAYS).contains(&days) => days,
                (UnitKind::Internal, _) => {
                    invalid.push(at("days"), format!("must be 1 to {MAX_UNIT_DAYS} days"));
                    1
                }
                (UnitKind::AsNeeded, _) => {
                    invalid.push(at("days"), format!("must be 1 to {MAX_UNIT_DAYS} doses"));
                    1
                }
            };
            for (d, drug) in unit.drugs.iter().enumerate() {
                check_line(&mut invalid, &format!("drug_units/{u}/drugs/{d}"), drug);
            }
            checked_units.push(UnitRequest {
                kind: unit.kind,
                days,
                drugs: unit
                    .drugs
                    .into_iter()
                    .map(|l| LineRequest {
                        code: l.code,
                        quantity: l.quantity,
                    })
                    .collect(),
            });
        }
        for (i, line) in lines.iter().enumerate() {
            check_line(&mut invalid, &format!("items/{i}"), line);
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
            units: checked_units,
        })
    }
}

fn check_line(invalid: &mut Invalid, at: &str, line: &VisitLine) {
    if !(1..=MAX_QUANTITY).contains(&line.quantity) {
        invalid.push(
            format!("{at}/quantity"),
            format!("must be 1 to {MAX_QUANTITY}"),
        );
    }
    if !is_code(&line.code) {
        invalid.push(format!("{at}/code"), "must be 1 to 20 letters or digits");
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
    codes.extend(
        visit
            .units
            .iter()
            .flat_map(|u| u.drugs.iter().map(|d| d.code.as_str())),
    );
    codes.extend(visit.diagnoses.iter().map(String::as_str));
    // Every statement finds its rows by key (the patient's month is one
    // patient's), so each is planned once for any parameters: the
    // tenant's own statements keep their plan from the first visit.
    write_once_planned(conn, key, Planning::Generic, async |tx| {
        // The copy's release (locked against rollouts) and the patient's
        // birth and insurance on the day, in one round trip.
        let (release, patient) = futures::try_join!(
            encounters::master_release_for_pricing(tx),
            encounters::patient_on(tx, visit.patient_id, visit.date),
        )?;
        let patient = patient
            .ok_or_else(|| ClinicError::NotFound(format!("no patient {}", visit.patient_id)))?;
        let items = cache
            .lookup(tx, tenant, release.as_deref().unwrap_or(""), &codes)
            .await?;
        let priced = price_lines(visit.date, &visit.lines, &items);
        let units = price_units(visit.date, &visit.units, &items);
        let diagnoses = resolve_diagnoses(visit.date, &visit.diagnoses, &items);
        let (mut priced, units, diagnoses) = match (priced, units, diagnoses) {
            (Ok(p), Ok(u), Ok(d)) => (p, u, d),
            (p, u, d) => {
                let mut invalid = Invalid::default();
                for problem in p.err().into_iter().flatten() {
                    invalid.push(format!("items/{}/code", problem.index), problem.message);
                }
                for problem in u.err().into_iter().flatten() {
                    let at = match problem.drug {
                        Some(d) => format!("drug_units/{}/drugs/{d}/code", problem.unit),
                        None => format!("drug_units/{}", problem.unit),
                    };
                    invalid.push(at, problem.message);
                }
                for problem in d.err().into_iter().flatten() {
                    invalid.push(format!("diagnoses/{}", problem.index), problem.message);
                }
                return Err(ClinicError::Invalid(invalid.0));
            }
        };
        priced.extend(units);
        let total_points: i64 = priced.iter().map(|l| l.points).sum();
        let (copay_rate, rule) = share(&patient, visit.date)?;
        let raw = patient_charge(total_points, copay_rate);
        // The month so far: the patient row is locked (`patient_on`), so
        // the visits before this one cannot change under it. Entering the
        // month's latest visit, the usual case, charges this visit alone;
        // a visit dated before others settles the whole month after.
        let (mut charge, mut ceiling, mut settle) = (raw, None, None);
        if let Some(insurance) = &patient.insurance {
            let (from, to) = month_of(visit.date);
            let so_far = encounters::month_so_far(
                tx,
                visit.patient_id,
                &insurance.insurer_number,
                from,
                to,
                visit.date,
            )
            .await?;
            let this = MonthVisit {
                charge: raw,
                cost: total_points * YEN_PER_POINT,
                ceiling: outpatient_ceiling(
                    patient.birth_date,
                    visit.date,
                    insurance.kind.unwrap_or(InsuranceKind::National),
                    insurance.income_category,
                ),
            };
            (charge, ceiling) = charge_after(
                this,
                so_far.points_before * YEN_PER_POINT,
                so_far.charged_before,
            );
            if so_far.later {
                settle = Some(insurance.insurer_number.as_str());
            }
        }
        let id = encounters::insert(
            tx,
            &NewEncounter {
                patient_id: visit.patient_id,
                date: visit.date,
                department: visit.department.as_deref(),
                doctor: visit.doctor.as_deref(),
                notes: visit.notes.as_deref(),
                insurance: patient.insurance.as_ref(),
                copay_rate: copay_rate as i16,
                copay_rule: rule.as_str(),
                total_points,
                charge_before_ceiling_yen: raw,
                charge_yen: charge,
                ceiling_yen: ceiling,
                master_release: release.as_deref(),
                diagnoses: &diagnoses,
                lines: &priced,
            },
        )
        .await?;
        if let Some(insurer) = settle {
            settle_month(tx, visit.patient_id, insurer, visit.date).await?;
        }
        let encounter = encounters::get_in(tx, id).await?.ok_or_else(|| {
            ClinicError::Db(crate::pools::DbError::Corrupt(format!(
                "encounter {id} vanished inside its own transaction"
            )))
        })?;
        written(Made::Created, &encounter, None)
    })
    .await
}

/// The patient's share on `date` and the rule that gave it: the rate typed
/// on the insurance when there is one, else the rules (`billing::copay`).
fn share(patient: &PatientOnDate, date: NaiveDate) -> Result<(i64, CopayRule), ClinicError> {
    let Some(insurance) = &patient.insurance else {
        return Ok((UNINSURED_COPAY_PERCENT, CopayRule::Uninsured));
    };
    match (insurance.copay_rate, insurance.kind) {
        (Some(rate), _) => Ok((i64::from(rate), CopayRule::Override)),
        (None, Some(kind)) => Ok(copay_percent(
            patient.birth_date,
            date,
            kind,
            insurance.income_category,
        )),
        (None, None) => Err(ClinicError::Db(crate::pools::DbError::Corrupt(format!(
            "insurance {} has neither a kind nor a rate",
            insurance.id
        )))),
    }
}

/// Charges the month of `date` for `patient` under `insurer_number` again
/// under the outpatient high-cost ceiling, visit by visit in order; visits
/// of a confirmed claim count but keep their charge. Draft claims holding
/// a visit whose charge changed are recomputed.
async fn settle_month(
    tx: &Tx<'_>,
    patient: Uuid,
    insurer_number: &str,
    date: NaiveDate,
) -> Result<(), ClinicError> {
    // Before the month is read, in a statement of its own: a read in the
    // same statement would keep the snapshot taken before the lock waited.
    encounters::lock_patient_charges(tx, patient).await?;
    let (from, to) = month_of(date);
    let visits = encounters::month_visits(tx, patient, insurer_number, from, to).await?;
    let month: Vec<MonthVisit> = visits
        .iter()
        .map(|v| MonthVisit {
            charge: i64::from(v.charge_before_ceiling),
            cost: i64::from(v.total_points) * YEN_PER_POINT,
            ceiling: outpatient_ceiling(
                v.birth_date,
                v.date,
                // An insurance entered with only a rate: the age decides.
                v.kind.unwrap_or(InsuranceKind::National),
                v.income_category,
            ),
        })
        .collect();
    let settled = charges_under_ceiling(&month);
    let mut changes = Vec::new();
    for (visit, (charge, ceiling)) in visits.iter().zip(settled) {
        let stored = (i64::from(visit.charge), visit.ceiling.map(i64::from));
        if !visit.confirmed && stored != (charge, ceiling) {
            changes.push((visit.id, charge, ceiling));
        }
    }
    encounters::set_charges(tx, &changes).await?;
    let changed: Vec<Uuid> = changes.iter().map(|c| c.0).collect();
    claims::refresh_drafts_holding(tx, &changed).await?;
    Ok(())
}

/// The first day of `date`'s month and of the next.
fn month_of(date: NaiveDate) -> (NaiveDate, NaiveDate) {
    let from = date.with_day(1).unwrap_or(date);
    let to = from
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(NaiveDate::MAX);
    (from, to)
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
            VoidOutcome::Voided {
                patient,
                insurer_number,
                date,
            } => {
                // Later visits of the month may owe more now.
                if let Some(insurer) = insurer_number {
                    settle_month(tx, patient, &insurer, date).await?;
                }
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
            // The request is well formed; what it conflicts with is the
            // visit's balance now (another desk may have just taken it), so
            // it is a conflict with the visit's state, as a voided one is.
            PaymentOutcome::Overpaid { outstanding } => Err(ClinicError::Conflict(format!(
                "amount_yen {} exceeds what encounter {encounter} still owes ({outstanding} yen)",
                payment.amount_yen
            ))),
            PaymentOutcome::Recorded(recorded) => written(Made::Created, &recorded, None),
        }
    })
    .await
}
