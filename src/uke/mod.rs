//! The electronic claims file (レセプト電算処理システム, `RECEIPTC.UKE`),
//! outpatient medicine (医科入院外): built from plain values, no IO.
//!
//! Follows the 記録条件仕様 (医科) of the 令和 editions, which write dates
//! in the Western calendar (`YYYYMMDD`, months `YYYYMM`): one file per
//! payer (社会保険診療報酬支払基金 or 国民健康保険団体連合会), Shift_JIS,
//! fields separated by commas without quoting, each record ended by CRLF,
//! and 0x1A after the last. Records: IR (the institution), then per claim
//! RE (the claim), HO (the insurer), SY (each disease), SI (procedures) and
//! IY (drugs), then GO (totals). Field positions as documented in the
//! specification and in hangilc/myclinic-ts (`packages/rezept/records`).
//!
//! What is not written yet, named so: public-expense records (KO), comment
//! records (CO), special-notes codes for the 70-and-over categories, and
//! the 症状詳記; procedures of one code are not merged across days.

mod reader;

pub use reader::{read, ReadClaim, ReadFile, UkeError};

use chrono::{Datelike, NaiveDate};

/// Who the file goes to (審査支払機関).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payer {
    /// 社会保険診療報酬支払基金 (employee insurances): `1`.
    Shaho,
    /// 国民健康保険団体連合会 (national and late-elderly insurances): `2`.
    Kokuho,
}

impl Payer {
    pub fn code(self) -> &'static str {
        match self {
            Payer::Shaho => "1",
            Payer::Kokuho => "2",
        }
    }

    /// The payer of an insurer number: national health insurers have 6
    /// digits, late-elderly ones start with 法別番号 39; the rest are
    /// employee schemes.
    pub fn of_insurer(insurer: &str) -> Payer {
        if insurer.len() == 6 || insurer.starts_with("39") {
            Payer::Kokuho
        } else {
            Payer::Shaho
        }
    }

    pub fn parse(text: &str) -> Option<Payer> {
        match text {
            "shaho" => Some(Payer::Shaho),
            "kokuho" => Some(Payer::Kokuho),
            _ => None,
        }
    }
}

/// The IR record's facts.
#[derive(Debug, Clone)]
pub struct Institution {
    pub payer: Payer,
    /// `01`–`47`.
    pub prefecture: String,
    /// 7 digits.
    pub code: String,
    pub name: String,
    pub phone: Option<String>,
}

/// One claim (レセプト): a patient under one insurer for one month.
#[derive(Debug, Clone)]
pub struct Claim {
    /// レセプト種別 (e.g. 1112: 医科・医保単独・本人・入院外).
    pub kind: u16,
    pub name: String,
    pub kana: Option<String>,
    /// 1 male, 2 female.
    pub sex: u8,
    pub birth: NaiveDate,
    /// 給付割合 (national health insurance only): 70, 80 or 90.
    pub benefit: Option<u8>,
    /// レセプト特記事項 codes (2 digits each).
    pub notes: Vec<&'static str>,
    /// 8 digits, or 6 for national health insurance.
    pub insurer: String,
    pub symbol: Option<String>,
    pub number: Option<String>,
    pub days: u32,
    pub points: i64,
    /// The patient's burden when the monthly ceiling applied at the window
    /// (HO field 12); `None` otherwise.
    pub burden: Option<i64>,
    pub diseases: Vec<Disease>,
    pub lines: Vec<Line>,
}

/// An SY record.
#[derive(Debug, Clone)]
pub struct Disease {
    /// 7 digits.
    pub code: String,
    pub start: NaiveDate,
    /// 転帰区分: 1 continuing (治ゆ、死亡、中止以外), 2 cured, 3 died, 4 stopped.
    pub outcome: u8,
    pub main: bool,
    pub suspected: bool,
}

/// An SI or IY record: one line of one visit.
#[derive(Debug, Clone)]
pub struct Line {
    pub drug: bool,
    /// 診療識別 (2 digits).
    pub group: &'static str,
    pub code: String,
    /// IY: the quantity per day (dose, dispensing).
    pub amount: Option<i64>,
    /// Points for one count; `None` on a unit's lines but its last.
    pub points: Option<i64>,
    /// 回数.
    pub count: i64,
    /// The day of the month and its count (算定日情報).
    pub day: u32,
}

/// The 診療識別 of a procedure from its code: medical procedure codes are
/// numbered by part of the fee schedule (1-11… 初診, 1-12… 再診, 1-13…
/// 医学管理, 1-14… 在宅, 1-20… 投薬 (処方), 1-30… 注射, 1-40… 処置,
/// 1-50… 手術, 1-54… 麻酔, 1-60… 検査, 1-70… 画像診断, the rest その他).
pub fn procedure_group(code: &str) -> &'static str {
    match code.get(1..3) {
        Some("11") => "11",
        Some("12") => "12",
        Some("13") => "13",
        Some("14") => "14",
        Some("20") => "25",
        Some("30") => "33",
        Some("40") => "40",
        Some("50") => "50",
        Some("54") => "54",
        Some("60") => "60",
        Some("70") => "70",
        _ => "80",
    }
}

/// Half-width ASCII as full-width (spaces as 　), for the fields the
/// specification writes in 漢字 mode.
pub fn full_width(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ' ' => '\u{3000}',
            '!'..='~' => char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap_or(c),
            _ => c,
        })
        .collect()
}

fn ymd(date: NaiveDate) -> String {
    date.format("%Y%m%d").to_string()
}

/// The records of a month's file, in order, before encoding.
pub fn records(institution: &Institution, month: NaiveDate, claims: &[Claim]) -> Vec<String> {
    let billed = month
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(month);
    let mut out = Vec::with_capacity(2 + claims.len() * 8);
    out.push(
        [
            "IR",
            institution.payer.code(),
            &institution.prefecture,
            "1",
            &institution.code,
            "",
            &full_width(&institution.name),
            &billed.format("%Y%m").to_string(),
            "00",
            institution.phone.as_deref().unwrap_or(""),
        ]
        .join(","),
    );
    let mut total = 0;
    for (n, claim) in claims.iter().enumerate() {
        total += claim.points;
        let mut re = vec![String::new(); 38];
        re[0] = "RE".into();
        re[1] = (n + 1).to_string();
        re[2] = claim.kind.to_string();
        re[3] = month.format("%Y%m").to_string();
        re[4] = full_width(&claim.name);
        re[5] = claim.sex.to_string();
        re[6] = ymd(claim.birth);
        re[7] = claim.benefit.map(|b| b.to_string()).unwrap_or_default();
        re[11] = claim.notes.concat();
        re[36] = claim.kana.as_deref().map(full_width).unwrap_or_default();
        out.push(re.join(","));
        let insurer = format!("{:>8}", claim.insurer);
        out.push(
            [
                "HO".to_string(),
                insurer,
                claim.symbol.as_deref().map(full_width).unwrap_or_default(),
                claim.number.as_deref().map(full_width).unwrap_or_default(),
                claim.days.to_string(),
                claim.points.to_string(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                claim.burden.map(|b| b.to_string()).unwrap_or_default(),
                String::new(),
                String::new(),
                String::new(),
            ]
            .join(","),
        );
        for disease in &claim.diseases {
            out.push(
                [
                    "SY",
                    &disease.code,
                    &ymd(disease.start),
                    &disease.outcome.to_string(),
                    if disease.suspected { "8002" } else { "" },
                    "",
                    if disease.main { "01" } else { "" },
                    "",
                ]
                .join(","),
            );
        }
        for line in &claim.lines {
            let mut fields = vec![String::new(); 44];
            fields[0] = if line.drug { "IY" } else { "SI" }.into();
            fields[1] = line.group.into();
            fields[2] = "1".into();
            fields[3] = line.code.clone();
            fields[4] = line.amount.map(|a| a.to_string()).unwrap_or_default();
            fields[5] = line.points.map(|p| p.to_string()).unwrap_or_default();
            fields[6] = line.count.to_string();
            if (1..=31).contains(&line.day) {
                fields[13 + line.day as usize - 1] = line.count.to_string();
            }
            out.push(fields.join(","));
        }
    }
    out.push(format!("GO,{},{},99", claims.len(), total));
    out
}

/// Why a file could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {record}: `{text}` has a character Shift_JIS cannot hold")]
pub struct Unencodable {
    pub record: usize,
    pub text: String,
}

/// The file: each record in Shift_JIS, ended by CRLF, then 0x1A.
pub fn encode(records: &[String]) -> Result<Vec<u8>, Unencodable> {
    let mut out = Vec::with_capacity(records.iter().map(|r| r.len() + 2).sum::<usize>() + 1);
    for (n, record) in records.iter().enumerate() {
        let (bytes, _, unmappable) = encoding_rs::SHIFT_JIS.encode(record);
        if unmappable {
            let text = record
                .split(',')
                .find(|f| encoding_rs::SHIFT_JIS.encode(f).2)
                .unwrap_or(record)
                .to_string();
            return Err(Unencodable {
                record: n + 1,
                text,
            });
        }
        out.extend_from_slice(&bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.push(0x1A);
    Ok(out)
}

/// The day of the month of `date` (for 算定日情報).
pub fn day_of(date: NaiveDate) -> u32 {
    date.day()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn institution() -> Institution {
        Institution {
            payer: Payer::Kokuho,
            prefecture: "01".into(),
            code: "0113719".into(),
            name: "札幌内科クリニック".into(),
            phone: Some("011-123-4567".into()),
        }
    }

    fn claim() -> Claim {
        Claim {
            kind: 1112,
            name: "電算 太郎".into(),
            kana: Some("デンサン タロウ".into()),
            sex: 1,
            birth: d("1970-01-01"),
            benefit: Some(70),
            notes: vec!["28"],
            insurer: "061234".into(),
            symbol: Some("A1".into()),
            number: Some("123".into()),
            days: 2,
            points: 73 + 73 + 126,
            burden: None,
            diseases: vec![Disease {
                code: "8833421".into(),
                start: d("2026-04-01"),
                outcome: 1,
                main: true,
                suspected: false,
            }],
            lines: vec![
                Line {
                    drug: false,
                    group: "12",
                    code: "112007410".into(),
                    amount: None,
                    points: Some(73),
                    count: 1,
                    day: 1,
                },
                Line {
                    drug: false,
                    group: "12",
                    code: "112007410".into(),
                    amount: None,
                    points: Some(73),
                    count: 1,
                    day: 15,
                },
                Line {
                    drug: true,
                    group: "21",
                    code: "620098801".into(),
                    amount: Some(3),
                    points: None,
                    count: 14,
                    day: 15,
                },
                Line {
                    drug: true,
                    group: "21",
                    code: "620001883".into(),
                    amount: Some(2),
                    points: Some(9),
                    count: 14,
                    day: 15,
                },
            ],
        }
    }

    #[test]
    fn a_file_is_shift_jis_records_in_order_with_crlf_and_a_final_eof_byte() {
        let records = records(&institution(), d("2026-05-01"), &[claim()]);
        let kinds: Vec<&str> = records.iter().map(|r| &r[..2]).collect();
        assert_eq!(
            kinds,
            ["IR", "RE", "HO", "SY", "SI", "SI", "IY", "IY", "GO"]
        );
        assert_eq!(
            records[0],
            "IR,2,01,1,0113719,,札幌内科クリニック,202606,00,011-123-4567"
        );
        assert!(records[1].starts_with("RE,1,1112,202605,電算\u{3000}太郎,1,19700101,70,,,,28,"));
        assert!(records[2].starts_with("HO,  061234,Ａ１,１２３,2,272,"));
        assert_eq!(records.last().unwrap(), "GO,1,272,99");
        let bytes = encode(&records).unwrap();
        assert_eq!(*bytes.last().unwrap(), 0x1A);
        assert!(bytes[..bytes.len() - 1].ends_with(b"\r\n"));
        // 札 in Shift_JIS is 0x8E 0x44.
        let ir = records[0].find('札').unwrap();
        assert_eq!(&bytes[ir..ir + 2], [0x8E, 0x44]);
        let file = read(&bytes).unwrap();
        assert_eq!(file.claims.len(), 1);
        assert_eq!(file.claims[0].points, 272);
    }

    #[test]
    fn a_character_shift_jis_lacks_is_refused_naming_it() {
        let mut odd = claim();
        odd.name = "𠮷野 家".into();
        let records = records(&institution(), d("2026-05-01"), &[odd]);
        let refused = encode(&records).unwrap_err();
        assert_eq!(refused.record, 2);
        assert!(refused.text.contains('𠮷'));
    }

    #[test]
    fn procedure_groups_follow_the_code() {
        assert_eq!(procedure_group("111000110"), "11");
        assert_eq!(procedure_group("112007410"), "12");
        assert_eq!(procedure_group("160000310"), "60");
        assert_eq!(procedure_group("120000710"), "25");
        assert_eq!(procedure_group("190000000"), "80");
    }

    #[test]
    fn the_payer_follows_the_insurer_number() {
        assert_eq!(Payer::of_insurer("061234"), Payer::Kokuho);
        assert_eq!(Payer::of_insurer("39132015"), Payer::Kokuho);
        assert_eq!(Payer::of_insurer("06132013"), Payer::Shaho);
        assert_eq!(Payer::of_insurer("01130012"), Payer::Shaho);
    }
}
