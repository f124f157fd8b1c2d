//! What the month's claims file needs from the tenant's schema: the
//! clinic's identity, the confirmed claims with their patient and
//! insurance, the lines of the visits they hold, and the patients'
//! diseases.

use chrono::NaiveDate;
use uuid::Uuid;

use crate::pools::{DbError, TenantConn};

/// The clinic as the IR record needs it.
pub struct ClinicIdentity {
    pub name: String,
    pub institution_code: Option<String>,
    pub prefecture_code: Option<String>,
    pub phone: Option<String>,
}

/// A confirmed claim with what its RE and HO records need.
pub struct ClaimHead {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub insurer_number: String,
    pub total_points: i32,
    pub visit_days: i32,
    pub charge_yen: i32,
    pub charge_before_ceiling_yen: i32,
    pub name: String,
    pub kana: Option<String>,
    pub sex: String,
    pub birth_date: NaiveDate,
    pub symbol: Option<String>,
    pub number: Option<String>,
    pub kind: Option<String>,
    pub relation: Option<String>,
    pub income_category: Option<String>,
    /// The share and its rule on the claim's first visit.
    pub copay_rate: i16,
    pub copay_rule: String,
}

/// A line of a visit a confirmed claim holds.
pub struct ClaimLine {
    pub claim_id: Uuid,
    pub date: NaiveDate,
    pub code: String,
    pub kind: String,
    pub quantity: i32,
    pub points: i32,
    pub unit_no: Option<i16>,
    pub unit_kind: Option<String>,
    pub unit_days: Option<i16>,
    /// Whether this is the last line of its unit.
    pub unit_last: bool,
}

/// A disease of a claim's patient that the month's claim reports.
pub struct ClaimDisease {
    pub claim_id: Uuid,
    pub code: String,
    pub start_date: NaiveDate,
    pub outcome: String,
    pub outcome_date: Option<NaiveDate>,
    pub main: bool,
    pub suspected: bool,
}

/// Everything the file of `month` (its first day) is built from.
pub struct MonthClaims {
    pub clinic: ClinicIdentity,
    pub claims: Vec<ClaimHead>,
    pub lines: Vec<ClaimLine>,
    pub diseases: Vec<ClaimDisease>,
}

/// Reads the month's confirmed claims and what their file needs, in one
/// transaction (confirmed claims never change, so the reads agree).
pub async fn month_claims(conn: &TenantConn, month: NaiveDate) -> Result<MonthClaims, DbError> {
    let next = month
        .checked_add_months(chrono::Months::new(1))
        .ok_or_else(|| DbError::Corrupt("month out of range".into()))?;
    conn.write(async |tx| -> Result<MonthClaims, DbError> {
        let clinic = tx
            .query_one(
                "SELECT name, institution_code, prefecture_code, phone FROM clinic",
                &[],
            )
            .await?;
        let clinic = ClinicIdentity {
            name: clinic.get(0),
            institution_code: clinic.get(1),
            prefecture_code: clinic.get(2),
            phone: clinic.get(3),
        };
        let claims = tx
            .query(
                // Each claim's first visit in one set-based pass, not a
                // subquery per claim (whose plan fresh data can make slow).
                "WITH first AS ( \
                   SELECT DISTINCT ON (ce.claim_id) ce.claim_id, e.insurance_id, e.copay_rate, \
                     e.copay_rule \
                   FROM claims c JOIN claim_encounters ce ON ce.claim_id = c.id \
                   JOIN encounters e ON e.id = ce.encounter_id \
                   WHERE c.month = $1 AND c.status = 'confirmed' \
                   ORDER BY ce.claim_id, e.date, e.id) \
                 SELECT c.id, c.patient_id, c.insurer_number, c.total_points, c.visit_days, \
                   c.charge_yen, c.charge_before_ceiling_yen, p.name, p.name_kana, p.sex, \
                   p.birth_date, i.symbol, i.number, i.kind, i.relation, i.income_category, \
                   f.copay_rate, f.copay_rule \
                 FROM claims c JOIN patients p ON p.id = c.patient_id \
                 JOIN first f ON f.claim_id = c.id \
                 LEFT JOIN insurances i ON i.id = f.insurance_id \
                 WHERE c.month = $1 AND c.status = 'confirmed' \
                 ORDER BY c.insurer_number, c.patient_id",
                &[&month],
            )
            .await?
            .iter()
            .map(|r| ClaimHead {
                id: r.get(0),
                patient_id: r.get(1),
                insurer_number: r.get(2),
                total_points: r.get(3),
                visit_days: r.get(4),
                charge_yen: r.get(5),
                charge_before_ceiling_yen: r.get(6),
                name: r.get(7),
                kana: r.get(8),
                sex: r.get(9),
                birth_date: r.get(10),
                symbol: r.get(11),
                number: r.get(12),
                kind: r.get(13),
                relation: r.get(14),
                income_category: r.get(15),
                copay_rate: r.get(16),
                copay_rule: r.get(17),
            })
            .collect();
        let lines_with_visits = tx
            .query(
                "SELECT ce.claim_id, e.date, l.code, l.kind, l.quantity, l.points, l.unit_no, \
                   l.unit_kind, l.unit_days, e.id \
                 FROM claims c JOIN claim_encounters ce ON ce.claim_id = c.id \
                 JOIN encounters e ON e.id = ce.encounter_id \
                 JOIN encounter_lines l ON l.encounter_id = e.id \
                 WHERE c.month = $1 AND c.status = 'confirmed' \
                 ORDER BY ce.claim_id, e.date, e.id, l.line_no",
                &[&month],
            )
            .await?
            .iter()
            .map(|r| {
                let line = ClaimLine {
                    claim_id: r.get(0),
                    date: r.get(1),
                    code: r.get(2),
                    kind: r.get(3),
                    quantity: r.get(4),
                    points: r.get(5),
                    unit_no: r.get(6),
                    unit_kind: r.get(7),
                    unit_days: r.get(8),
                    unit_last: false,
                };
                (r.get::<_, Uuid>(9), line)
            })
            .collect::<Vec<_>>();
        // A unit's last line is the one the next line of its visit does not
        // continue (lines come by visit and line number). Found here rather
        // than by a correlated subquery, whose plan fresh data can make
        // quadratic.
        let mut lines: Vec<ClaimLine> = Vec::with_capacity(lines_with_visits.len());
        let mut rows = lines_with_visits.into_iter().peekable();
        while let Some((visit, mut line)) = rows.next() {
            let continued = rows.peek().is_some_and(|(next_visit, next)| {
                *next_visit == visit && next.unit_no == line.unit_no
            });
            line.unit_last = line.unit_no.is_some() && !continued;
            lines.push(line);
        }
        // The patient's diseases current in the month, and any disease
        // diagnosed on a visit of the claim that the list lacks (as
        // continuing, from the first visit it was diagnosed on).
        let diseases = tx
            .query(
                "SELECT c.id, d.code, d.start_date, d.outcome, d.outcome_date, d.main, d.suspected \
                 FROM claims c JOIN patient_diseases d ON d.patient_id = c.patient_id \
                 WHERE c.month = $1 AND c.status = 'confirmed' AND d.start_date < $2 \
                   AND (d.outcome_date IS NULL OR d.outcome_date >= $1) \
                 UNION ALL \
                 SELECT c.id, g.code, min(e.date), 'continuing', NULL::date, false, false \
                 FROM claims c JOIN claim_encounters ce ON ce.claim_id = c.id \
                 JOIN encounters e ON e.id = ce.encounter_id \
                 JOIN encounter_diagnoses g ON g.encounter_id = e.id \
                 WHERE c.month = $1 AND c.status = 'confirmed' \
                   AND NOT EXISTS (SELECT 1 FROM patient_diseases d \
                     WHERE d.patient_id = c.patient_id AND d.code = g.code) \
                 GROUP BY c.id, g.code \
                 ORDER BY 1, 6 DESC, 3, 2",
                &[&month, &next],
            )
            .await?
            .iter()
            .map(|r| ClaimDisease {
                claim_id: r.get(0),
                code: r.get(1),
                start_date: r.get(2),
                outcome: r.get(3),
                outcome_date: r.get(4),
                main: r.get(5),
                suspected: r.get(6),
            })
            .collect();
        Ok(MonthClaims {
            clinic,
            claims,
            lines,
            diseases,
        })
    })
    .await
}
