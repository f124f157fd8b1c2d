//! The month's electronic claims file for one payer: built from the
//! confirmed claims, after checking that the clinic and each claim have
//! what the file needs. A problem is reported naming the claim and the
//! field, and nothing is written.

use std::collections::HashMap;

use chrono::Datelike;
use uuid::Uuid;

use super::{ClinicError, Invalid, Month};
use crate::db::claims_file::{month_claims, ClaimDisease, ClaimHead, ClaimLine};
use crate::pools::TenantConn;
use crate::uke::{self, Payer};

/// The 特記事項 of an under-70 certificate category (区ア–区オ).
fn category_note(category: Option<&str>) -> Option<&'static str> {
    match category? {
        "a" => Some("26"),
        "i" => Some("27"),
        "u" => Some("28"),
        "e" => Some("29"),
        "o" => Some("30"),
        _ => None,
    }
}

/// レセプト種別 of an outpatient claim under medical insurance alone:
/// 1310 + 8 for late-elderly (0 when 現役並み), else 1110 + 4 before school
/// age, 8 for 70–74 (0 when 現役並み), 6 for a dependent, 2 otherwise.
fn claim_kind(claim: &ClaimHead) -> u16 {
    let high_earner = claim
        .income_category
        .as_deref()
        .is_some_and(|c| c.starts_with("genekinami"));
    let late_elderly =
        claim.kind.as_deref() == Some("late_elderly") || claim.insurer_number.starts_with("39");
    if late_elderly {
        return if high_earner { 1310 } else { 1318 };
    }
    match claim.copay_rule.as_str() {
        "preschool" => 1114,
        "elderly" if high_earner => 1110,
        "elderly" => 1118,
        _ if claim.relation.as_deref() == Some("dependent") => 1116,
        _ => 1112,
    }
}

fn outcome_code(disease: &ClaimDisease, month: Month) -> u8 {
    let month_end = month
        .first_day()
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(month.first_day());
    // An outcome after the month is not yet one in this month's claim.
    if disease.outcome_date.is_none_or(|d| d >= month_end) {
        return 1;
    }
    match disease.outcome.as_str() {
        "cured" => 2,
        "died" => 3,
        "stopped" => 4,
        _ => 1,
    }
}

fn line(l: &ClaimLine) -> uke::Line {
    let day = l.date.day();
    let quantity = i64::from(l.quantity);
    let points = i64::from(l.points);
    match (l.kind.as_str(), l.unit_kind.as_deref()) {
        ("drug", Some(kind)) => {
            let days = i64::from(l.unit_days.unwrap_or(1)).max(1);
            let count = if kind == "external" { 1 } else { days };
            uke::Line {
                drug: true,
                group: match kind {
                    "as_needed" => "22",
                    "external" => "23",
                    _ => "21",
                },
                code: l.code.clone(),
                amount: Some(quantity),
                // The unit's points for one day (dose) on its last line.
                points: l.unit_last.then(|| points / count),
                count,
                day,
            }
        }
        ("drug", None) => uke::Line {
            drug: true,
            group: "21",
            code: l.code.clone(),
            amount: Some(quantity),
            points: Some(points),
            count: 1,
            day,
        },
        _ => uke::Line {
            drug: false,
            group: uke::procedure_group(&l.code),
            code: l.code.clone(),
            amount: None,
            points: Some(points / quantity.max(1)),
            count: quantity,
            day,
        },
    }
}

/// The month's claims file for `payer`.
pub async fn export_claims_uke(
    conn: &TenantConn,
    month: Month,
    payer: Payer,
) -> Result<Vec<u8>, ClinicError> {
    let data = month_claims(conn, month.first_day()).await?;
    let mut invalid = Invalid::default();
    let clinic = &data.clinic;
    let (Some(code), Some(prefecture)) = (&clinic.institution_code, &clinic.prefecture_code) else {
        return Err(ClinicError::invalid(
            "clinic/institution_code",
            "the clinic's institution code and prefecture are not set; an admin sets them with \
             PUT /admin/tenants/{slug}/profile",
        ));
    };
    let institution = uke::Institution {
        payer,
        prefecture: prefecture.clone(),
        code: code.clone(),
        name: clinic.name.clone(),
        phone: clinic.phone.clone(),
    };
    let mut lines: HashMap<Uuid, Vec<uke::Line>> = HashMap::new();
    for l in &data.lines {
        lines.entry(l.claim_id).or_default().push(line(l));
    }
    let to_payer: std::collections::HashSet<Uuid> = data
        .claims
        .iter()
        .filter(|c| Payer::of_insurer(&c.insurer_number) == payer)
        .map(|c| c.id)
        .collect();
    let mut diseases: HashMap<Uuid, Vec<uke::Disease>> = HashMap::new();
    for d in data
        .diseases
        .iter()
        .filter(|d| to_payer.contains(&d.claim_id))
    {
        if d.code.len() != 7 || !d.code.bytes().all(|b| b.is_ascii_digit()) {
            invalid.push(
                format!("claims/{}/diseases/{}", d.claim_id, d.code),
                "is not a 7-digit disease code of the national master",
            );
        }
        diseases.entry(d.claim_id).or_default().push(uke::Disease {
            code: d.code.clone(),
            start: d.start_date,
            outcome: outcome_code(d, month),
            main: d.main,
            suspected: d.suspected,
        });
    }
    let mut claims = Vec::new();
    for c in data.claims.iter().filter(|c| to_payer.contains(&c.id)) {
        let at = |field: &str| format!("claims/{}/{field}", c.id);
        let sex = match c.sex.as_str() {
            "male" => 1,
            "female" => 2,
            _ => {
                invalid.push(
                    at("patient/sex"),
                    format!(
                        "patient {} is recorded as `{}`; a claim states male or female",
                        c.patient_id, c.sex
                    ),
                );
                0
            }
        };
        let claim_diseases = diseases.remove(&c.id).unwrap_or_default();
        if claim_diseases.is_empty() {
            invalid.push(at("diseases"), "a claim names at least one disease");
        }
        let national = c.insurer_number.len() == 6;
        claims.push(uke::Claim {
            kind: claim_kind(c),
            name: c.name.clone(),
            kana: c.kana.clone(),
            sex,
            birth: c.birth_date,
            benefit: national.then(|| (100 - c.copay_rate.clamp(0, 100)) as u8),
            notes: category_note(c.income_category.as_deref())
                .into_iter()
                .collect(),
            insurer: c.insurer_number.clone(),
            symbol: c.symbol.clone(),
            number: c.number.clone(),
            days: c.visit_days.max(0) as u32,
            points: i64::from(c.total_points),
            burden: (c.charge_yen < c.charge_before_ceiling_yen).then_some(i64::from(c.charge_yen)),
            diseases: claim_diseases,
            lines: lines.remove(&c.id).unwrap_or_default(),
        });
    }
    if claims.is_empty() {
        invalid.push(
            "month",
            format!("no confirmed claims to this payer in {month}"),
        );
    }
    invalid.or(())?;
    let records = uke::records(&institution, month.first_day(), &claims);
    uke::encode(&records).map_err(|e| {
        ClinicError::invalid(
            format!("record/{}", e.record),
            format!("`{}` has a character Shift_JIS cannot hold", e.text),
        )
    })
}
