//! Pricing an encounter's lines from the tenant's master items (pure).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDate;

use super::drug_units::{unit_points, UnitKind};
use super::{drug_points, procedure_points};
use super::{Kind, MasterItem};

/// A line as entered: a code and a quantity (already checked positive).
#[derive(Debug, Clone)]
pub struct LineRequest {
    pub code: String,
    pub quantity: i64,
}

/// A drug unit as entered: its kind, its days (internal) or doses (as
/// needed), and its drugs with their quantity per day, dose or dispensing.
#[derive(Debug, Clone)]
pub struct UnitRequest {
    pub kind: UnitKind,
    pub days: i64,
    pub drugs: Vec<LineRequest>,
}

/// The unit a drug line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitRef {
    /// 1 for the visit's first unit.
    pub no: i16,
    pub kind: UnitKind,
    pub days: i16,
}

/// A priced line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub code: String,
    pub kind: Kind,
    pub name: String,
    pub quantity: i64,
    pub points: i64,
    /// For a drug of a unit: the unit. Its points sit on the unit's last
    /// line; the others hold 0.
    pub unit: Option<UnitRef>,
}

/// A problem with drug `drug` of unit `unit` (or with the unit itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitProblem {
    pub unit: usize,
    pub drug: Option<usize>,
    pub message: String,
}

/// Prices drug units: each unit's drugs are summed in yen for one day
/// (dose, dispensing) and its points multiplied by its days
/// (`drug_units`), or every problem is reported.
pub fn price_units(
    date: NaiveDate,
    units: &[UnitRequest],
    items: &ItemsByCode,
) -> Result<Vec<PricedLine>, Vec<UnitProblem>> {
    let mut priced = Vec::new();
    let mut problems = Vec::new();
    for (u, unit) in units.iter().enumerate() {
        let mut drugs = Vec::with_capacity(unit.drugs.len());
        let mut lines = Vec::with_capacity(unit.drugs.len());
        for (d, drug) in unit.drugs.iter().enumerate() {
            let problem = |message: String| UnitProblem {
                unit: u,
                drug: Some(d),
                message,
            };
            match valid_item(items, &drug.code, date) {
                Ok(item) => match (item.kind, item.unit_price) {
                    (Kind::Drug, Some(price)) => {
                        drugs.push((price, drug.quantity));
                        lines.push((item, drug.quantity));
                    }
                    (Kind::Drug, None) => {
                        problems.push(problem(format!("code {} has no price", drug.code)))
                    }
                    _ => problems.push(problem(format!(
                        "code {} is not a drug; a unit holds drugs only",
                        drug.code
                    ))),
                },
                Err(message) => problems.push(problem(message)),
            }
        }
        if lines.len() != unit.drugs.len() {
            continue;
        }
        let points = unit_points(unit.kind, &drugs, unit.days);
        let unit_ref = UnitRef {
            no: (u + 1) as i16,
            kind: unit.kind,
            days: unit.days as i16,
        };
        let last = lines.len() - 1;
        for (i, (item, quantity)) in lines.into_iter().enumerate() {
            priced.push(PricedLine {
                code: item.code.clone(),
                kind: item.kind,
                name: item.name.clone(),
                quantity,
                points: if i == last { points } else { 0 },
                unit: Some(unit_ref),
            });
        }
    }
    if problems.is_empty() {
        Ok(priced)
    } else {
        Err(problems)
    }
}

/// A problem with the line at `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    pub index: usize,
    pub message: String,
}

/// Every row of each code in the tenant's copy.
pub type ItemsByCode = HashMap<String, Arc<Vec<MasterItem>>>;

/// The row of `code` valid on `date`, or why there is none.
fn valid_item<'a>(
    items: &'a ItemsByCode,
    code: &str,
    date: NaiveDate,
) -> Result<&'a MasterItem, String> {
    let rows = items
        .get(code)
        .filter(|rows| !rows.is_empty())
        .ok_or_else(|| format!("code {code} is not in the master"))?;
    rows.iter()
        .find(|item| item.valid_on(date))
        .ok_or_else(|| format!("code {code} is not valid on {date}"))
}

/// Prices every line, or reports every line that cannot be priced.
pub fn price_lines(
    date: NaiveDate,
    lines: &[LineRequest],
    items: &ItemsByCode,
) -> Result<Vec<PricedLine>, Vec<LineProblem>> {
    let mut priced = Vec::with_capacity(lines.len());
    let mut problems = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let item = match valid_item(items, &line.code, date) {
            Ok(item) => item,
            Err(message) => {
                problems.push(LineProblem { index, message });
                continue;
            }
        };
        let points = match (item.kind, item.points, item.unit_price) {
            (Kind::Procedure, Some(points), _) => procedure_points(points.into(), line.quantity),
            (Kind::Drug, _, Some(price)) => drug_points(price, line.quantity),
            (Kind::Disease, _, _) => {
                problems.push(LineProblem {
                    index,
                    message: format!("code {} is a disease, not a billable item", line.code),
                });
                continue;
            }
            _ => {
                problems.push(LineProblem {
                    index,
                    message: format!("code {} has no price", line.code),
                });
                continue;
            }
        };
        priced.push(PricedLine {
            code: line.code.clone(),
            kind: item.kind,
            name: item.name.clone(),
            quantity: line.quantity,
            points,
            unit: None,
        });
    }
    if problems.is_empty() {
        Ok(priced)
    } else {
        Err(problems)
    }
}

/// The names of diagnosis codes, each a disease valid on `date`.
pub fn resolve_diagnoses(
    date: NaiveDate,
    codes: &[String],
    items: &ItemsByCode,
) -> Result<Vec<(String, String)>, Vec<LineProblem>> {
    let mut resolved = Vec::with_capacity(codes.len());
    let mut problems = Vec::new();
    for (index, code) in codes.iter().enumerate() {
        match valid_item(items, code, date) {
            Ok(item) if item.kind == Kind::Disease => {
                resolved.push((code.clone(), item.name.clone()))
            }
            Ok(_) => problems.push(LineProblem {
                index,
                message: format!("code {code} is not a disease"),
            }),
            Err(message) => problems.push(LineProblem { index, message }),
        }
    }
    if problems.is_empty() {
        Ok(resolved)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::Centiyen;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn items() -> ItemsByCode {
        let revisit = |points, from: &str, to: Option<&str>| MasterItem {
            code: "112007410".into(),
            kind: Kind::Procedure,
            name: "再診料".into(),
            points: Some(points),
            unit_price: None,
            valid_from: date(from),
            valid_to: to.map(date),
        };
        let mut map = ItemsByCode::new();
        map.insert(
            "112007410".into(),
            Arc::new(vec![
                revisit(73, "2024-06-01", Some("2026-05-31")),
                revisit(75, "2026-06-01", None),
            ]),
        );
        map.insert(
            "620098801".into(),
            Arc::new(vec![MasterItem {
                code: "620098801".into(),
                kind: Kind::Drug,
                name: "ロキソプロフェン".into(),
                points: None,
                unit_price: Some(Centiyen(1010)),
                valid_from: date("2024-04-01"),
                valid_to: None,
            }]),
        );
        map.insert(
            "8833421".into(),
            Arc::new(vec![MasterItem {
                code: "8833421".into(),
                kind: Kind::Disease,
                name: "高血圧症".into(),
                points: None,
                unit_price: None,
                valid_from: date("2024-04-01"),
                valid_to: None,
            }]),
        );
        map.insert("999".into(), Arc::new(Vec::new()));
        map
    }

    fn line(code: &str, quantity: i64) -> LineRequest {
        LineRequest {
            code: code.into(),
            quantity,
        }
    }

    #[test]
    fn a_revision_applies_from_its_first_day() {
        let before = price_lines(date("2026-05-31"), &[line("112007410", 1)], &items()).unwrap();
        let on = price_lines(date("2026-06-01"), &[line("112007410", 1)], &items()).unwrap();
        assert_eq!(before[0].points, 73);
        assert_eq!(on[0].points, 75);
    }

    #[test]
    fn drug_lines_are_priced_from_yen() {
        // 10.10 yen × 3 = 30.30 yen → 1 + ceil(15.30 / 10) = 3 points.
        let priced = price_lines(date("2026-06-01"), &[line("620098801", 3)], &items()).unwrap();
        assert_eq!(priced[0].points, 3);
    }

    #[test]
    fn unknown_invalid_and_disease_lines_are_all_reported() {
        let problems = price_lines(
            date("2024-05-01"),
            &[
                line("620098801", 1),
                line("999", 1),
                line("112007410", 1),
                line("8833421", 1),
                line("nope", 1),
            ],
            &items(),
        )
        .unwrap_err();
        let indexes: Vec<usize> = problems.iter().map(|p| p.index).collect();
        assert_eq!(indexes, vec![1, 2, 3, 4]);
    }

    #[test]
    fn diagnoses_must_be_diseases() {
        let ok = resolve_diagnoses(date("2026-06-01"), &["8833421".into()], &items()).unwrap();
        assert_eq!(ok[0].1, "高血圧症");
        let bad =
            resolve_diagnoses(date("2026-06-01"), &["620098801".into()], &items()).unwrap_err();
        assert_eq!(bad[0].index, 0);
    }
}
