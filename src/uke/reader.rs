//! A reader and validator of the claims file: what the tests (and an
//! operator who wants to look before sending) use to check that a file is
//! one. It checks the bytes (Shift_JIS, CRLF, the final 0x1A), the record
//! order, each field's mode (digits, ASCII, full-width) and its maximum
//! length in bytes, that day-of-month counts add up to each line's count,
//! that each claim's points are the sum of its lines, and the totals of GO.

/// A field's mode in the specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Digits only (数字).
    Digits,
    /// Half-width letters, digits, spaces and hyphens (英数).
    Ascii,
    /// Full-width characters only (漢字): two bytes each in Shift_JIS.
    Kanji,
}

/// (field position from 1, mode, most bytes, required).
type Rule = (usize, Mode, usize, bool);

const IR: &[Rule] = &[
    (2, Mode::Digits, 1, true),
    (3, Mode::Digits, 2, true),
    (4, Mode::Digits, 1, true),
    (5, Mode::Digits, 7, true),
    (7, Mode::Kanji, 40, true),
    (8, Mode::Digits, 6, true),
    (9, Mode::Digits, 2, true),
    (10, Mode::Ascii, 15, false),
];
const RE: &[Rule] = &[
    (2, Mode::Digits, 6, true),
    (3, Mode::Digits, 4, true),
    (4, Mode::Digits, 6, true),
    (5, Mode::Kanji, 40, true),
    (6, Mode::Digits, 1, true),
    (7, Mode::Digits, 8, true),
    (8, Mode::Digits, 3, false),
    (12, Mode::Digits, 10, false),
    (37, Mode::Kanji, 100, false),
];
const HO: &[Rule] = &[
    (2, Mode::Ascii, 8, true),
    (3, Mode::Kanji, 38, false),
    (4, Mode::Kanji, 38, false),
    (5, Mode::Digits, 2, true),
    (6, Mode::Digits, 7, true),
    (12, Mode::Digits, 10, false),
];
const SY: &[Rule] = &[
    (2, Mode::Digits, 7, true),
    (3, Mode::Digits, 8, true),
    (4, Mode::Digits, 1, true),
    (5, Mode::Digits, 80, false),
    (7, Mode::Digits, 2, false),
];
const LINE: &[Rule] = &[
    (2, Mode::Digits, 2, false),
    (3, Mode::Ascii, 1, true),
    (4, Mode::Digits, 9, true),
    (5, Mode::Digits, 11, false),
    (6, Mode::Digits, 7, false),
    (7, Mode::Digits, 3, true),
];
const GO: &[Rule] = &[
    (2, Mode::Digits, 6, true),
    (3, Mode::Digits, 9, true),
    (4, Mode::Digits, 2, true),
];

/// What a file holds, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadFile {
    pub payer: String,
    pub institution: String,
    /// 請求年月, `YYYYMM`.
    pub billed: String,
    pub claims: Vec<ReadClaim>,
    pub total_points: i64,
}

/// One claim as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadClaim {
    pub kind: String,
    /// 診療年月, `YYYYMM`.
    pub month: String,
    pub name: String,
    pub insurer: String,
    pub days: i64,
    pub points: i64,
    pub burden: Option<i64>,
    /// (code, main) of each SY record.
    pub diseases: Vec<(String, bool)>,
    pub procedures: usize,
    pub drugs: usize,
}

/// Why a file is not a claims file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UkeError {
    #[error("the file does not end with CRLF and 0x1A")]
    Ending,
    #[error("the file is not Shift_JIS")]
    Encoding,
    #[error("record {0}: expected {1}")]
    Order(usize, &'static str),
    #[error("record {record} ({kind}) has {found} fields, not {wanted}")]
    FieldCount {
        record: usize,
        kind: String,
        found: usize,
        wanted: usize,
    },
    #[error("record {record} ({kind}) field {field}: {problem}")]
    Field {
        record: usize,
        kind: String,
        field: usize,
        problem: String,
    },
    #[error("record {0}: {1}")]
    Totals(usize, String),
}

fn field_error(record: usize, kind: &str, field: usize, problem: impl Into<String>) -> UkeError {
    UkeError::Field {
        record,
        kind: kind.to_string(),
        field,
        problem: problem.into(),
    }
}

fn check(record: usize, fields: &[&str], wanted: usize, rules: &[Rule]) -> Result<(), UkeError> {
    let kind = fields[0];
    if fields.len() != wanted {
        return Err(UkeError::FieldCount {
            record,
            kind: kind.into(),
            found: fields.len(),
            wanted,
        });
    }
    for &(position, mode, max, required) in rules {
        let value = fields[position - 1];
        if value.is_empty() {
            if required {
                return Err(field_error(record, kind, position, "is required"));
            }
            continue;
        }
        let bytes = encoding_rs::SHIFT_JIS.encode(value).0.len();
        if bytes > max {
            return Err(field_error(
                record,
                kind,
                position,
                format!("is {bytes} bytes, at most {max}"),
            ));
        }
        let fits = match mode {
            Mode::Digits => value.bytes().all(|b| b.is_ascii_digit()),
            Mode::Ascii => value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-'),
            Mode::Kanji => value.chars().all(|c| {
                encoding_rs::SHIFT_JIS
                    .encode(c.encode_utf8(&mut [0; 4]))
                    .0
                    .len()
                    == 2
            }),
        };
        if !fits {
            let what = match mode {
                Mode::Digits => "digits",
                Mode::Ascii => "half-width letters and digits",
                Mode::Kanji => "full-width characters",
            };
            return Err(field_error(
                record,
                kind,
                position,
                format!("must be {what}"),
            ));
        }
    }
    Ok(())
}

fn number(fields: &[&str], position: usize) -> i64 {
    fields[position - 1].parse().unwrap_or(0)
}

/// Reads and checks a claims file.
pub fn read(bytes: &[u8]) -> Result<ReadFile, UkeError> {
    let body = bytes
        .strip_suffix(&[0x1A])
        .and_then(|b| b.strip_suffix(b"\r\n"))
        .ok_or(UkeError::Ending)?;
    let (text, _, malformed) = encoding_rs::SHIFT_JIS.decode(body);
    if malformed {
        return Err(UkeError::Encoding);
    }
    let records: Vec<Vec<&str>> = text.split("\r\n").map(|r| r.split(',').collect()).collect();
    let kind_of = |i: usize| records.get(i).map(|r| r[0]).unwrap_or("");
    if kind_of(0) != "IR" {
        return Err(UkeError::Order(1, "IR first"));
    }
    check(1, &records[0], 10, IR)?;
    let mut claims: Vec<ReadClaim> = Vec::new();
    let mut lines_points = 0i64;
    let mut i = 1;
    while kind_of(i) == "RE" {
        let re = &records[i];
        check(i + 1, re, 38, RE)?;
        if number(re, 2) != claims.len() as i64 + 1 {
            return Err(field_error(
                i + 1,
                "RE",
                2,
                "claims are numbered from 1 in order",
            ));
        }
        i += 1;
        if kind_of(i) != "HO" {
            return Err(UkeError::Order(i + 1, "HO after RE"));
        }
        let ho = &records[i];
        check(i + 1, ho, 15, HO)?;
        let mut claim = ReadClaim {
            kind: re[2].into(),
            month: re[3].into(),
            name: re[4].into(),
            insurer: ho[1].trim().into(),
            days: number(ho, 5),
            points: number(ho, 6),
            burden: (!ho[11].is_empty()).then(|| number(ho, 12)),
            diseases: Vec::new(),
            procedures: 0,
            drugs: 0,
        };
        i += 1;
        while kind_of(i) == "SY" {
            let sy = &records[i];
            check(i + 1, sy, 8, SY)?;
            claim.diseases.push((sy[1].into(), sy[6] == "01"));
            i += 1;
        }
        let mut points = 0;
        while matches!(kind_of(i), "SI" | "IY") {
            let line = &records[i];
            check(i + 1, line, 44, LINE)?;
            let count = number(line, 7);
            let by_day: i64 = line[13..44]
                .iter()
                .map(|d| d.parse::<i64>().unwrap_or(0))
                .sum();
            if let Some(bad) = line[13..44]
                .iter()
                .position(|d| !d.is_empty() && !d.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(field_error(i + 1, line[0], 14 + bad, "must be digits"));
            }
            if by_day != count {
                return Err(UkeError::Totals(
                    i + 1,
                    format!("day-of-month counts add up to {by_day}, not the count {count}"),
                ));
            }
            points += number(line, 6) * count;
            if line[0] == "SI" {
                claim.procedures += 1;
            } else {
                claim.drugs += 1;
            }
            i += 1;
        }
        if points != claim.points {
            return Err(UkeError::Totals(
                i,
                format!(
                    "claim {} has {} points in HO but its lines add up to {points}",
                    claims.len() + 1,
                    claim.points
                ),
            ));
        }
        lines_points += points;
        claims.push(claim);
    }
    if kind_of(i) != "GO" || i + 1 != records.len() {
        return Err(UkeError::Order(i + 1, "RE, or GO last"));
    }
    let go = &records[i];
    check(i + 1, go, 4, GO)?;
    if number(go, 2) != claims.len() as i64 || number(go, 3) != lines_points {
        return Err(UkeError::Totals(
            i + 1,
            format!(
                "GO says {} claims and {} points; the file holds {} and {lines_points}",
                go[1],
                go[2],
                claims.len()
            ),
        ));
    }
    Ok(ReadFile {
        payer: records[0][1].into(),
        institution: records[0][4].into(),
        billed: records[0][7].into(),
        claims,
        total_points: lines_points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(records: &[&str]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for record in records {
            bytes.extend(encoding_rs::SHIFT_JIS.encode(record).0.iter());
            bytes.extend(b"\r\n");
        }
        bytes.push(0x1A);
        bytes
    }

    const IR_OK: &str = "IR,1,13,1,1234567,,医院,202606,00,03-0000-0000";

    fn line(kind: &str, points: &str, count: &str, days: &[(usize, &str)]) -> String {
        let mut fields = vec![String::new(); 44];
        fields[0] = kind.into();
        fields[1] = "12".into();
        fields[2] = "1".into();
        fields[3] = "112007410".into();
        fields[5] = points.into();
        fields[6] = count.into();
        for (day, n) in days {
            fields[13 + day - 1] = (*n).into();
        }
        fields.join(",")
    }

    fn claim(points: &str, lines: &[String]) -> Vec<String> {
        let mut re = vec![String::new(); 38];
        re[0] = "RE".into();
        re[1] = "1".into();
        re[2] = "1112".into();
        re[3] = "202605".into();
        re[4] = "患者".into();
        re[5] = "1".into();
        re[6] = "19700101".into();
        let mut out = vec![re.join(","), format!("HO,06132013,,,1,{points},,,,,,,,,")];
        out.extend(lines.iter().cloned());
        out
    }

    fn whole(points: &str, lines: &[String], go: &str) -> Vec<u8> {
        let mut records = vec![IR_OK.to_string()];
        records.extend(claim(points, lines));
        records.push(go.to_string());
        file(&records.iter().map(String::as_str).collect::<Vec<_>>())
    }

    #[test]
    fn a_well_formed_file_is_read() {
        let bytes = whole(
            "146",
            &[line("SI", "73", "2", &[(1, "1"), (15, "1")])],
            "GO,1,146,99",
        );
        let read = read(&bytes).unwrap();
        assert_eq!(read.claims[0].points, 146);
        assert_eq!(read.total_points, 146);
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        let good = whole(
            "146",
            &[line("SI", "73", "2", &[(1, "1"), (15, "1")])],
            "GO,1,146,99",
        );
        assert_eq!(read(&good[..good.len() - 1]), Err(UkeError::Ending));
        let wrong_points = whole(
            "150",
            &[line("SI", "73", "2", &[(1, "1"), (15, "1")])],
            "GO,1,150,99",
        );
        assert!(matches!(read(&wrong_points), Err(UkeError::Totals(..))));
        let wrong_days = whole("146", &[line("SI", "73", "2", &[(1, "1")])], "GO,1,146,99");
        assert!(matches!(read(&wrong_days), Err(UkeError::Totals(..))));
        let wrong_go = whole("146", &[line("SI", "73", "2", &[(1, "2")])], "GO,2,146,99");
        assert!(matches!(read(&wrong_go), Err(UkeError::Totals(..))));
        let half_width_name = file(&["IR,1,13,1,1234567,,clinic,202606,00,", "GO,0,0,99"]);
        assert!(matches!(
            read(&half_width_name),
            Err(UkeError::Field { field: 7, .. })
        ));
        let no_ho = file(&[IR_OK, &claim("0", &[])[0], "GO,1,0,99"]);
        assert!(matches!(read(&no_ho), Err(UkeError::Order(..))));
    }
}
