//! Parsing and validating a release CSV:
//! `code,kind,name,points,unit_price_yen,valid_from,valid_to`.
//! Every bad row is reported with its line number; one bad row refuses the
//! whole file.

use std::collections::HashMap;

use chrono::NaiveDate;
use serde::Serialize;

use super::{Kind, MasterItem};
use crate::billing::Centiyen;

/// The columns of a release CSV, in order.
pub(super) const HEADER: [&str; 7] = [
    "code",
    "kind",
    "name",
    "points",
    "unit_price_yen",
    "valid_from",
    "valid_to",
];

/// At most this many problems are reported; the file is refused either way.
const MAX_REPORTED: usize = 100;

/// One problem, at a line of the file (1 is the header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    pub line: u64,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the release has {} invalid line(s)", .0.len())]
    Lines(Vec<LineError>),
    #[error("the release is empty")]
    Empty,
}

/// Parses a whole release, or reports every bad line.
pub fn parse_release(data: &[u8]) -> Result<Vec<MasterItem>, ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut errors = Vec::new();
    let mut items: Vec<(u64, MasterItem)> = Vec::new();
    let mut records = reader.records();

    match records.next() {
        Some(Ok(header)) => {
            let names: Vec<&str> = header.iter().map(str::trim).collect();
            if names != HEADER {
                errors.push(LineError {
                    line: 1,
                    message: format!("the header must be `{}`", HEADER.join(",")),
                });
                return Err(ImportError::Lines(errors));
            }
        }
        Some(Err(e)) => {
            errors.push(LineError {
                line: 1,
                message: e.to_string(),
            });
            return Err(ImportError::Lines(errors));
        }
        None => return Err(ImportError::Empty),
    }

    for record in records {
        if errors.len() >= MAX_REPORTED {
            break;
        }
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push(LineError {
                    line,
                    message: format!("unreadable: {e}"),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        match parse_row(&record) {
            Ok(item) => items.push((line, item)),
            Err(message) => errors.push(LineError { line, message }),
        }
    }
    if errors.is_empty() {
        check_periods(&items, &mut errors);
    }
    if !errors.is_empty() {
        errors.truncate(MAX_REPORTED);
        return Err(ImportError::Lines(errors));
    }
    if items.is_empty() {
        return Err(ImportError::Empty);
    }
    Ok(items.into_iter().map(|(_, item)| item).collect())
}

fn parse_row(record: &csv::StringRecord) -> Result<MasterItem, String> {
    if record.len() != HEADER.len() {
        return Err(format!(
            "has {} fields, expected {}",
            record.len(),
            HEADER.len()
        ));
    }
    let field = |i: usize| record.get(i).unwrap_or("").trim();
    let code = field(0);
    if !crate::billing::is_master_code(code) {
        return Err(format!("code `{code}` must be 1 to 20 letters or digits"));
    }
    let kind = Kind::parse(field(1))
        .ok_or_else(|| format!("kind `{}` is not one of procedure, drug, disease", field(1)))?;
    let name = field(2);
    if name.is_empty() || name.chars().count() > 200 {
        return Err("name must be 1 to 200 characters".into());
    }
    let points = match field(3) {
        "" => None,
        p => Some(
            p.parse::<i32>()
                .ok()
                .filter(|p| *p >= 0)
                .ok_or_else(|| format!("points `{p}` must be a whole number, 0 or more"))?,
        ),
    };
    let unit_price = match field(4) {
        "" => None,
        p => Some(Centiyen::parse(p).map_err(|e| format!("unit_price_yen `{p}` {e}"))?),
    };
    match (kind, points, unit_price) {
        (Kind::Procedure, None, _) => return Err("a procedure needs points".into()),
        (Kind::Procedure, _, Some(_)) => {
            return Err("a procedure has points, not unit_price_yen".into())
        }
        (Kind::Drug, _, None) => return Err("a drug needs unit_price_yen".into()),
        (Kind::Drug, Some(_), _) => return Err("a drug has unit_price_yen, not points".into()),
        (Kind::Disease, Some(_), _) | (Kind::Disease, _, Some(_)) => {
            return Err("a disease has neither points nor unit_price_yen".into())
        }
        _ => {}
    }
    let date = |name: &str, text: &str| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| format!("{name} `{text}` is not a date (YYYY-MM-DD)"))
    };
    let valid_from = date("valid_from", field(5))?;
    let valid_to = match field(6) {
        "" => None,
        text => Some(date("valid_to", text)?),
    };
    if valid_to.is_some_and(|to| to < valid_from) {
        return Err("valid_to is before valid_from".into());
    }
    Ok(MasterItem {
        code: code.to_string(),
        kind,
        name: name.to_string(),
        points,
        unit_price,
        valid_from,
        valid_to,
    })
}

/// One code keeps one kind, and its validity periods never overlap.
fn check_periods(items: &[(u64, MasterItem)], errors: &mut Vec<LineError>) {
    let mut by_code: HashMap<&str, Vec<&(u64, MasterItem)>> = HashMap::new();
    for entry in items {
        by_code
            .entry(entry.1.code.as_str())
            .or_default()
            .push(entry);
    }
    let mut found = Vec::new();
    for rows in by_code.values_mut() {
        rows.sort_by_key(|(_, item)| item.valid_from);
        for pair in rows.windows(2) {
            let ((first_line, first), (line, item)) = (pair[0], pair[1]);
            if item.kind != first.kind {
                found.push(LineError {
                    line: *line,
                    message: format!(
                        "code {} is a {} on line {first_line} but a {} here",
                        item.code,
                        first.kind.as_str(),
                        item.kind.as_str()
                    ),
                });
            } else if first.valid_to.is_none_or(|to| to >= item.valid_from) {
                found.push(LineError {
                    line: *line,
                    message: format!(
                        "code {} is valid from {} here, overlapping line {first_line}",
                        item.code, item.valid_from
                    ),
                });
            }
        }
    }
    found.sort_by_key(|e| e.line);
    errors.extend(found);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(csv: &str) -> Vec<LineError> {
        match parse_release(csv.as_bytes()) {
            Err(ImportError::Lines(lines)) => lines,
            other => panic!("expected line errors, got {other:?}"),
        }
    }

    const HEAD: &str = "code,kind,name,points,unit_price_yen,valid_from,valid_to\n";

    #[test]
    fn a_good_release_parses() {
        let csv = format!(
            "{HEAD}111000110,procedure,初診料,288,,2026-04-01,\n\
             620000001,drug,ロキソプロフェン錠60mg,,10.10,2026-04-01,2026-05-31\n\
             620000001,drug,ロキソプロフェン錠60mg,,9.80,2026-06-01,\n\
             8830417,disease,高血圧症,,,2026-04-01,\n"
        );
        let items = parse_release(csv.as_bytes()).unwrap();
        assert_eq!(items.len(), 4);
        assert_eq!(items[1].unit_price, Some(Centiyen(1010)));
    }

    #[test]
    fn bad_rows_are_reported_by_line() {
        let csv = format!(
            "{HEAD}111000110,procedure,初診料,288,,2026-04-01,\n\
             111000111,surgery,x,1,,2026-04-01,\n\
             111000112,procedure,x,,,2026-04-01,\n\
             620000002,drug,x,,,2026-04-01,\n\
             620000003,drug,x,,1.234,2026-04-01,\n\
             111000113,procedure,x,5,,2026-13-01,\n\
             111000114,procedure,x,5,,2026-04-01,2026-03-01\n"
        );
        let lines: Vec<u64> = lines_of(&csv).iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn overlapping_validity_is_refused() {
        let csv = format!(
            "{HEAD}111000110,procedure,初診料,288,,2026-04-01,2026-06-30\n\
             111000110,procedure,初診料,291,,2026-06-30,\n"
        );
        let errors = lines_of(&csv);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 3);
        assert!(errors[0].message.contains("overlapping line 2"));
    }

    #[test]
    fn a_wrong_header_is_refused() {
        let errors = lines_of("code,name\n1,x\n");
        assert_eq!(errors[0].line, 1);
    }
}
