//! The national basic master files (基本マスター) read into a recept
//! release: procedures (医科診療行為マスター, `s_*.csv`), drugs (医薬品マスター,
//! `y_*.csv`) and diseases (傷病名マスター, `b_*.csv`) as published by the
//! 社会保険診療報酬支払基金: Shift_JIS, every field quoted, no header line.
//!
//! Column positions (from 0) of the layouts in use since the 令和2年 edition,
//! as documented by the fund and encoded in yokenzan/receiptisan: procedures
//! — 変更区分 0, マスター種別 1 (`S`), code 2, 省略漢字名称 4, 点数識別 10 (`3`
//! points, `1` yen), 新又は現点数 11, 変更年月日 86, 廃止年月日 87; drugs —
//! type `Y`, code 2, 漢字名称 4, 金額種別 10, 新又は現金額 11, 変更年月日 29,
//! 廃止年月日 30; diseases — type `B`, code 2, 基本名称 5, 変更年月日 22,
//! 廃止年月日 23. A file with fewer columns than those positions need is an
//! older edition and is refused, naming the file. Rows whose 変更区分 is `1`
//! (抹消) are not items. 変更年月日 is the first day an item's values apply;
//! an item is valid until the day before its 廃止年月日 (`99999999`: none).
//! Procedures priced otherwise than in points (a % addition, a yen amount)
//! cannot be priced by recept's rules and are counted, not imported.

use std::path::Path;

use chrono::NaiveDate;

use super::{Kind, MasterItem};
use crate::billing::Centiyen;

/// Which master a file is, by its name's first letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Master {
    Procedures,
    Drugs,
    Diseases,
}

impl Master {
    fn of_file(name: &str) -> Option<Master> {
        let lower = name.to_ascii_lowercase();
        if !(lower.ends_with(".csv") || lower.ends_with(".txt")) {
            return None;
        }
        match lower.get(..2)? {
            "s_" => Some(Master::Procedures),
            "y_" => Some(Master::Drugs),
            "b_" => Some(Master::Diseases),
            _ => None,
        }
    }

    /// (master type letter, columns the layout must have, code length).
    fn layout(self) -> (&'static str, usize, usize) {
        match self {
            Master::Procedures => ("S", 113, 9),
            Master::Drugs => ("Y", 35, 9),
            Master::Diseases => ("B", 24, 7),
        }
    }
}

/// A bad row, by file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfficialProblem {
    pub file: String,
    pub line: u64,
    pub message: String,
}

impl std::fmt::Display for OfficialProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {}: {}", self.file, self.line, self.message)
    }
}

/// What the files made.
#[derive(Debug, Clone)]
pub struct OfficialRelease {
    pub items: Vec<MasterItem>,
    /// Files read, with their column count (the layout edition's).
    pub files: Vec<(String, usize)>,
    /// Procedures not priced in points.
    pub unpriced: usize,
    /// Rows marked deleted (抹消).
    pub deleted: usize,
}

fn date(text: &str, what: &str) -> Result<Option<NaiveDate>, String> {
    match text {
        "" | "00000000" | "99999999" => Ok(None),
        t => NaiveDate::parse_from_str(t, "%Y%m%d")
            .map(Some)
            .map_err(|_| format!("{what} `{t}` is not a date (YYYYMMDD)")),
    }
}

/// One row of `master`, or why it is not an item (`Ok(None)`: a row that
/// is skipped and counted).
fn row(master: Master, fields: &csv::StringRecord) -> Result<Option<MasterItem>, String> {
    let (letter, columns, code_len) = master.layout();
    let field = |i: usize| fields.get(i).unwrap_or("").trim();
    if fields.len() < columns {
        return Err(format!(
            "has {} columns; the layout since the 令和2年 edition has at least {columns} \
             (an older edition is not read)",
            fields.len()
        ));
    }
    if field(1) != letter {
        return Err(format!("マスター種別 is `{}`, not `{letter}`", field(1)));
    }
    let code = field(2);
    if code.len() != code_len || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("code `{code}` is not {code_len} digits"));
    }
    let (name, from, to) = match master {
        Master::Procedures => (field(4), field(86), field(87)),
        Master::Drugs => (field(4), field(29), field(30)),
        Master::Diseases => (field(5), field(22), field(23)),
    };
    if name.is_empty() {
        return Err("has no name".into());
    }
    let valid_from = date(from, "変更年月日")?.ok_or("has no 変更年月日")?;
    let valid_to = date(to, "廃止年月日")?.map(|d| d.pred_opt().unwrap_or(d));
    if valid_to.is_some_and(|to| to < valid_from) {
        return Err("廃止年月日 is not after 変更年月日".into());
    }
    let mut item = MasterItem {
        code: code.to_string(),
        kind: Kind::Disease,
        name: name.chars().take(200).collect(),
        points: None,
        unit_price: None,
        valid_from,
        valid_to,
    };
    match master {
        Master::Procedures => {
            if field(10) != "3" {
                return Ok(None);
            }
            let points = decimal_whole(field(11)).ok_or_else(|| {
                format!(
                    "新又は現点数 `{}` is not a whole number of points",
                    field(11)
                )
            })?;
            item.kind = Kind::Procedure;
            item.points = Some(points);
        }
        Master::Drugs => {
            let price = Centiyen::parse(field(11))
                .map_err(|e| format!("新又は現金額 `{}` {e}", field(11)))?;
            item.kind = Kind::Drug;
            item.unit_price = Some(price);
        }
        Master::Diseases => {}
    }
    Ok(Some(item))
}

/// `291`, `291.0` or `291.00` as 291.
fn decimal_whole(text: &str) -> Option<i32> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if !fraction.bytes().all(|b| b == b'0') {
        return None;
    }
    whole.parse().ok().filter(|p: &i32| *p >= 0)
}

/// Reads one file's bytes.
fn read_file(
    master: Master,
    name: &str,
    bytes: &[u8],
    release: &mut OfficialRelease,
    problems: &mut Vec<OfficialProblem>,
) {
    let (text, _, malformed) = encoding_rs::SHIFT_JIS.decode(bytes);
    if malformed {
        problems.push(OfficialProblem {
            file: name.into(),
            line: 0,
            message: "is not Shift_JIS".into(),
        });
        return;
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut columns = 0;
    for (n, record) in reader.records().enumerate() {
        let line = n as u64 + 1;
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                problems.push(OfficialProblem {
                    file: name.into(),
                    line,
                    message: e.to_string(),
                });
                continue;
            }
        };
        columns = columns.max(record.len());
        if record.get(0).map(str::trim) == Some("1") {
            release.deleted += 1;
            continue;
        }
        match row(master, &record) {
            Ok(Some(item)) => release.items.push(item),
            Ok(None) => release.unpriced += 1,
            Err(message) => problems.push(OfficialProblem {
                file: name.into(),
                line,
                message,
            }),
        }
    }
    release.files.push((name.into(), columns));
}

/// Reads every `s_*`, `y_*` and `b_*` file of `dir` into one release, or
/// reports every bad row (at most 100) by file and line.
pub fn read_official_dir(dir: &Path) -> Result<OfficialRelease, Vec<OfficialProblem>> {
    let problem = |message: String| {
        vec![OfficialProblem {
            file: dir.display().to_string(),
            line: 0,
            message,
        }]
    };
    let mut names: Vec<(String, Master)> = std::fs::read_dir(dir)
        .map_err(|e| problem(format!("cannot be read: {e}")))?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            Master::of_file(&name).map(|m| (name, m))
        })
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (wanted, master) in [
        ("s_*.csv (procedures)", Master::Procedures),
        ("y_*.csv (drugs)", Master::Drugs),
        ("b_*.csv (diseases)", Master::Diseases),
    ] {
        if !names.iter().any(|(_, m)| *m == master) {
            return Err(problem(format!("holds no {wanted} file")));
        }
    }
    let mut release = OfficialRelease {
        items: Vec::new(),
        files: Vec::new(),
        unpriced: 0,
        deleted: 0,
    };
    let mut problems = Vec::new();
    for (name, master) in names {
        match std::fs::read(dir.join(&name)) {
            Ok(bytes) => read_file(master, &name, &bytes, &mut release, &mut problems),
            Err(e) => problems.push(OfficialProblem {
                file: name,
                line: 0,
                message: format!("cannot be read: {e}"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(release)
    } else {
        problems.truncate(100);
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &[&str]) -> csv::StringRecord {
        csv::StringRecord::from(fields.to_vec())
    }

    fn procedure(code: &str, kind: &str, points: &str, from: &str, to: &str) -> csv::StringRecord {
        let mut fields = vec![""; 113];
        fields[0] = "0";
        fields[1] = "S";
        fields[2] = code;
        fields[4] = "再診料";
        fields[10] = kind;
        fields[11] = points;
        fields[86] = from;
        fields[87] = to;
        record(&fields)
    }

    #[test]
    fn a_procedure_row_is_an_item_valid_until_the_day_before_its_abolition() {
        let item = row(
            Master::Procedures,
            &procedure("112007410", "3", "75.00", "20260601", "99999999"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (item.kind, item.points, item.valid_to),
            (Kind::Procedure, Some(75), None)
        );
        let ended = row(
            Master::Procedures,
            &procedure("112007410", "3", "73", "20240601", "20260601"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(ended.valid_to, NaiveDate::from_ymd_opt(2026, 5, 31));
        // Priced as a % addition: not an item recept can price.
        assert_eq!(
            row(
                Master::Procedures,
                &procedure("112000000", "5", "50", "20240601", "99999999")
            ),
            Ok(None)
        );
    }

    #[test]
    fn bad_rows_say_what_is_wrong() {
        let cases = [
            (
                procedure("11200741", "3", "75", "20260601", "99999999"),
                "9 digits",
            ),
            (
                procedure("112007410", "3", "75.5", "20260601", "99999999"),
                "whole number",
            ),
            (
                procedure("112007410", "3", "75", "2026-06-01", "99999999"),
                "YYYYMMDD",
            ),
            (
                procedure("112007410", "3", "75", "20260601", "20260601"),
                "not after",
            ),
            (record(&["0", "S", "112007410"]), "older edition"),
        ];
        for (fields, expected) in cases {
            let message = row(Master::Procedures, &fields).unwrap_err();
            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn files_are_told_apart_by_name() {
        assert_eq!(Master::of_file("s_20260601.csv"), Some(Master::Procedures));
        assert_eq!(Master::of_file("Y_ALL20260601.CSV"), Some(Master::Drugs));
        assert_eq!(Master::of_file("b_20260601.txt"), Some(Master::Diseases));
        assert_eq!(Master::of_file("readme.txt"), None);
    }
}
