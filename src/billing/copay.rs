//! The patient's share (一部負担金の割合) on a visit date, from age,
//! insurance and income category.
//!
//! Sources: 健康保険法 第74条 (3割; 70歳に達する日の属する月の翌月以後は2割,
//! 現役並み所得者は3割), 同条及び国民健康保険法 第42条 (6歳に達する日以後の最
//! 初の3月31日以前は2割: 義務教育就学前), 高齢者の医療の確保に関する法律 第67条
//! (後期高齢者: 1割, 一定以上所得者 (一般Ⅱ) 2割, 現役並み所得者 3割, from
//! 2022-10-01), and 年齢計算ニ関スル法律 (one attains an age at the end of the
//! day before the birthday: someone born on the 1st attains 70 in the month
//! before, which is why the 70-74 share starts in the birthday month for
//! them and in the month after for everyone else). Worked boundaries as in
//! the tests of hangilc/myclinic-ts (futan-wari.test.ts).

use chrono::{Datelike, Months, NaiveDate};
use serde::{Deserialize, Serialize};

/// The kind of public medical insurance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InsuranceKind {
    /// 被用者保険: 協会けんぽ, 組合健保, 共済組合 ….
    Employee,
    /// 国民健康保険.
    National,
    /// 後期高齢者医療制度 (75 and over, or 65 and over by certification).
    LateElderly,
}

impl InsuranceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InsuranceKind::Employee => "employee",
            InsuranceKind::National => "national",
            InsuranceKind::LateElderly => "late_elderly",
        }
    }

    pub fn parse(text: &str) -> Option<InsuranceKind> {
        match text {
            "employee" => Some(InsuranceKind::Employee),
            "national" => Some(InsuranceKind::National),
            "late_elderly" => Some(InsuranceKind::LateElderly),
            _ => None,
        }
    }
}

/// The income category (所得区分) printed on the patient's certificates,
/// which the share (from 70) and the monthly ceiling follow. Under 70 the
/// categories ア–オ of the 限度額適用認定証; from 70 those of the 高齢受給者証
/// or the late-elderly card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncomeCategory {
    /// ア (under 70).
    A,
    /// イ (under 70).
    I,
    /// ウ (under 70).
    U,
    /// エ (under 70).
    E,
    /// オ (under 70; 住民税非課税).
    O,
    /// 現役並みⅢ (70 and over).
    #[serde(rename = "genekinami_3")]
    Genekinami3,
    /// 現役並みⅡ.
    #[serde(rename = "genekinami_2")]
    Genekinami2,
    /// 現役並みⅠ.
    #[serde(rename = "genekinami_1")]
    Genekinami1,
    /// 一般 (70–74), 一般Ⅰ (late-elderly, 1割).
    Ippan,
    /// 一般Ⅱ (late-elderly, 2割).
    #[serde(rename = "ippan_2")]
    Ippan2,
    /// 低所得Ⅱ.
    #[serde(rename = "teishotoku_2")]
    Teishotoku2,
    /// 低所得Ⅰ.
    #[serde(rename = "teishotoku_1")]
    Teishotoku1,
}

impl IncomeCategory {
    pub const ALL: [IncomeCategory; 12] = [
        IncomeCategory::A,
        IncomeCategory::I,
        IncomeCategory::U,
        IncomeCategory::E,
        IncomeCategory::O,
        IncomeCategory::Genekinami3,
        IncomeCategory::Genekinami2,
        IncomeCategory::Genekinami1,
        IncomeCategory::Ippan,
        IncomeCategory::Ippan2,
        IncomeCategory::Teishotoku2,
        IncomeCategory::Teishotoku1,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IncomeCategory::A => "a",
            IncomeCategory::I => "i",
            IncomeCategory::U => "u",
            IncomeCategory::E => "e",
            IncomeCategory::O => "o",
            IncomeCategory::Genekinami3 => "genekinami_3",
            IncomeCategory::Genekinami2 => "genekinami_2",
            IncomeCategory::Genekinami1 => "genekinami_1",
            IncomeCategory::Ippan => "ippan",
            IncomeCategory::Ippan2 => "ippan_2",
            IncomeCategory::Teishotoku2 => "teishotoku_2",
            IncomeCategory::Teishotoku1 => "teishotoku_1",
        }
    }

    pub fn parse(text: &str) -> Option<IncomeCategory> {
        IncomeCategory::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// A category of the 70-and-over certificates.
    pub fn is_elderly(self) -> bool {
        !matches!(
            self,
            IncomeCategory::A
                | IncomeCategory::I
                | IncomeCategory::U
                | IncomeCategory::E
                | IncomeCategory::O
        )
    }

    fn is_genekinami(self) -> bool {
        matches!(
            self,
            IncomeCategory::Genekinami3 | IncomeCategory::Genekinami2 | IncomeCategory::Genekinami1
        )
    }
}

/// Which rule gave the share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CopayRule {
    /// An explicit rate on the insurance, used as it is.
    Override,
    /// No valid insurance on the day: the patient pays everything.
    Uninsured,
    /// Before school age (義務教育就学前): 2割.
    Preschool,
    /// From school age to 69: 3割.
    WorkingAge,
    /// 70–74 (高齢受給者), 2割, or 3割 for 現役並み.
    Elderly,
    /// 後期高齢者: 1割, 2割 (一般Ⅱ) or 3割 (現役並み).
    LateElderly,
}

impl CopayRule {
    pub fn as_str(self) -> &'static str {
        match self {
            CopayRule::Override => "override",
            CopayRule::Uninsured => "uninsured",
            CopayRule::Preschool => "preschool",
            CopayRule::WorkingAge => "working_age",
            CopayRule::Elderly => "elderly",
            CopayRule::LateElderly => "late_elderly",
        }
    }

    pub fn parse(text: &str) -> Option<CopayRule> {
        [
            CopayRule::Override,
            CopayRule::Uninsured,
            CopayRule::Preschool,
            CopayRule::WorkingAge,
            CopayRule::Elderly,
            CopayRule::LateElderly,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }
}

/// The day someone born on `birth` attains `years` of age: the day before
/// the anniversary (for 29 February in a common year, the anniversary is
/// 1 March, so the age is attained on 28 February).
pub fn attains_age(birth: NaiveDate, years: u32) -> NaiveDate {
    let year = birth.year() + years as i32;
    let anniversary = NaiveDate::from_ymd_opt(year, birth.month(), birth.day())
        .or_else(|| NaiveDate::from_ymd_opt(year, 3, 1))
        .unwrap_or(NaiveDate::MAX);
    anniversary.pred_opt().unwrap_or(anniversary)
}

/// The first day of school age: the first 1 April after the day the
/// child attains 6 (so a child born on 1 April starts the year its
/// classmates born on the 2nd a year earlier do).
pub fn school_age_from(birth: NaiveDate) -> NaiveDate {
    let six = attains_age(birth, 6);
    let april = NaiveDate::from_ymd_opt(six.year(), 4, 1).unwrap_or(six);
    if six < april {
        april
    } else {
        NaiveDate::from_ymd_opt(six.year() + 1, 4, 1).unwrap_or(six)
    }
}

/// The first day of the 70–74 share: the first of the month after the
/// month in which 70 is attained.
pub fn elderly_from(birth: NaiveDate) -> NaiveDate {
    first_of_next_month(attains_age(birth, 70))
}

fn first_of_next_month(day: NaiveDate) -> NaiveDate {
    let first = day.with_day(1).unwrap_or(day);
    first.checked_add_months(Months::new(1)).unwrap_or(first)
}

/// The share, in percent, of a patient born on `birth` on `date` under an
/// insurance of `kind` with `category` (when the patient showed one).
pub fn copay_percent(
    birth: NaiveDate,
    date: NaiveDate,
    kind: InsuranceKind,
    category: Option<IncomeCategory>,
) -> (i64, CopayRule) {
    let high_earner = category.is_some_and(IncomeCategory::is_genekinami);
    if kind == InsuranceKind::LateElderly {
        let percent = match category {
            _ if high_earner => 30,
            Some(IncomeCategory::Ippan2) => 20,
            _ => 10,
        };
        return (percent, CopayRule::LateElderly);
    }
    if date < school_age_from(birth) {
        (20, CopayRule::Preschool)
    } else if date < elderly_from(birth) {
        (30, CopayRule::WorkingAge)
    } else {
        // From 75 everyone moves to the late-elderly system; an employee
        // or national insurance still presented then keeps the 70–74 rule.
        (if high_earner { 30 } else { 20 }, CopayRule::Elderly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn share(birth: &str, on: &str) -> (i64, CopayRule) {
        copay_percent(d(birth), d(on), InsuranceKind::National, None)
    }

    #[test]
    fn an_age_is_attained_the_day_before_the_birthday() {
        assert_eq!(attains_age(d("2000-04-02"), 6), d("2006-04-01"));
        assert_eq!(attains_age(d("2000-04-01"), 6), d("2006-03-31"));
        assert_eq!(attains_age(d("1956-03-01"), 70), d("2026-02-28"));
        assert_eq!(attains_age(d("2004-02-29"), 6), d("2010-02-28"));
        assert_eq!(attains_age(d("2004-02-29"), 8), d("2012-02-28"));
    }

    #[test]
    fn the_preschool_share_ends_on_the_31st_of_march_after_the_sixth_birthday() {
        // As in myclinic-ts's futan-wari tests.
        for (birth, last_20, first_30) in [
            ("2000-02-02", "2006-03-31", "2006-04-01"),
            ("2000-06-02", "2007-03-31", "2007-04-01"),
            ("2000-04-01", "2006-03-31", "2006-04-01"),
            ("2000-04-02", "2007-03-31", "2007-04-01"),
        ] {
            assert_eq!(share(birth, last_20), (20, CopayRule::Preschool), "{birth}");
            assert_eq!(
                share(birth, first_30),
                (30, CopayRule::WorkingAge),
                "{birth}"
            );
        }
        // 2000-06-02 is still 20% in the April after the sixth birthday.
        assert_eq!(share("2000-06-02", "2006-04-01").0, 20);
    }

    #[test]
    fn the_seventy_to_seventy_four_share_starts_the_month_after_the_seventieth_birthday() {
        // Born on the 2nd: 70 on 1 June 2026 → 20% from 1 July.
        assert_eq!(
            share("1956-06-02", "2026-06-30"),
            (30, CopayRule::WorkingAge)
        );
        assert_eq!(share("1956-06-02", "2026-07-01"), (20, CopayRule::Elderly));
        // Born on the 1st: 70 attained on 31 May → 20% from 1 June, the
        // birthday month itself.
        assert_eq!(
            share("1956-06-01", "2026-05-31"),
            (30, CopayRule::WorkingAge)
        );
        assert_eq!(share("1956-06-01", "2026-06-01"), (20, CopayRule::Elderly));
        // High earners keep 30%.
        assert_eq!(
            copay_percent(
                d("1956-06-02"),
                d("2026-07-01"),
                InsuranceKind::Employee,
                Some(IncomeCategory::Genekinami1)
            ),
            (30, CopayRule::Elderly)
        );
    }

    #[test]
    fn the_late_elderly_share_follows_the_category() {
        let on = |category| {
            copay_percent(
                d("1950-10-10"),
                d("2026-12-01"),
                InsuranceKind::LateElderly,
                category,
            )
        };
        assert_eq!(on(None), (10, CopayRule::LateElderly));
        assert_eq!(
            on(Some(IncomeCategory::Ippan)),
            (10, CopayRule::LateElderly)
        );
        assert_eq!(
            on(Some(IncomeCategory::Teishotoku1)),
            (10, CopayRule::LateElderly)
        );
        assert_eq!(
            on(Some(IncomeCategory::Teishotoku2)),
            (10, CopayRule::LateElderly)
        );
        assert_eq!(
            on(Some(IncomeCategory::Ippan2)),
            (20, CopayRule::LateElderly)
        );
        for high in [
            IncomeCategory::Genekinami1,
            IncomeCategory::Genekinami2,
            IncomeCategory::Genekinami3,
        ] {
            assert_eq!(on(Some(high)), (30, CopayRule::LateElderly));
        }
    }

    #[test]
    fn the_seventy_fifth_birthday_changes_the_insurance_not_the_age_rule() {
        // The day before: the national insurance's 70–74 share; on the
        // birthday the late-elderly card applies.
        let birth = d("1951-12-06");
        assert_eq!(
            copay_percent(birth, d("2026-12-05"), InsuranceKind::National, None),
            (20, CopayRule::Elderly)
        );
        assert_eq!(
            copay_percent(birth, d("2026-12-06"), InsuranceKind::LateElderly, None),
            (10, CopayRule::LateElderly)
        );
    }

    #[test]
    fn categories_round_trip_by_name() {
        for category in IncomeCategory::ALL {
            assert_eq!(IncomeCategory::parse(category.as_str()), Some(category));
            let json = serde_json::to_value(category).unwrap();
            assert_eq!(json, category.as_str(), "the wire name is the stored name");
        }
        assert_eq!(IncomeCategory::parse("ア"), None);
    }
}
