//! The monthly high-cost ceiling (高額療養費の自己負担限度額), outpatient,
//! applied at the window (現物給付): per patient, clinic, insurer and month,
//! once the month's charges reach the ceiling of the patient's category,
//! the visit that crosses it is charged only up to it and later visits of
//! the month only what the ceiling grows by.
//!
//! Sources: 健康保険法施行令 第42条, MHLW「高額療養費制度を利用される皆さま
//! へ」(mhlw.go.jp/content/000333279.pdf) and its 計算事例 (category ウ,
//! total cost 1,000,000 yen: 80,100 + (1,000,000 − 267,000) × 1% = 87,430
//! yen); the amounts and the 75th-birthday-month halving as encoded in
//! hangilc/myclinic-ts (gendogaku.ts). Under 70 the ceiling is applied at
//! the window only when the patient shows a 限度額適用認定証 (a category);
//! from 70 the 高齢受給者証 suffices, and without a category the general
//! amount applies.
//!
//! Not here yet, named so: the reduced amounts from the fourth time in a
//! year (多数回該当), the 2022-10 to 2025-09 transitional cap for 一般Ⅱ
//! (配慮措置), inpatient amounts, and ceilings shared across clinics
//! (世帯合算), which only the insurer can compute.

use chrono::{Datelike, NaiveDate};

use super::copay::{attains_age, elderly_from, IncomeCategory, InsuranceKind};

/// A category's ceiling for a month: fixed, or a base plus 1% of the
/// month's total cost above a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceiling {
    Fixed(i64),
    Proportional { base: i64, threshold: i64 },
}

impl Ceiling {
    /// The amount for a month whose total cost (10 yen × points) so far
    /// is `total_cost`; the 1% part is rounded to the yen, half up.
    pub fn amount(self, total_cost: i64) -> i64 {
        match self {
            Ceiling::Fixed(amount) => amount,
            Ceiling::Proportional { base, threshold } => {
                base + ((total_cost - threshold).max(0) + 50) / 100
            }
        }
    }

    /// In the month of the 75th birthday (born on any day but the 1st)
    /// both the old and the new insurance halve their amounts
    /// (75歳到達月の特例).
    fn halved(self) -> Ceiling {
        match self {
            Ceiling::Fixed(amount) => Ceiling::Fixed(amount / 2),
            Ceiling::Proportional { base, threshold } => Ceiling::Proportional {
                base: base / 2,
                threshold: threshold / 2,
            },
        }
    }
}

const A: Ceiling = Ceiling::Proportional {
    base: 252_600,
    threshold: 842_000,
};
const I: Ceiling = Ceiling::Proportional {
    base: 167_400,
    threshold: 558_000,
};
const U: Ceiling = Ceiling::Proportional {
    base: 80_100,
    threshold: 267_000,
};

/// The outpatient ceiling of a visit on `date` for a patient born on
/// `birth`, or `None` when none is applied at the window (under 70 without
/// a certificate).
pub fn outpatient_ceiling(
    birth: NaiveDate,
    date: NaiveDate,
    kind: InsuranceKind,
    category: Option<IncomeCategory>,
) -> Option<Ceiling> {
    let seventy_or_over = kind == InsuranceKind::LateElderly || date >= elderly_from(birth);
    let ceiling = if seventy_or_over {
        match category {
            Some(IncomeCategory::Genekinami3) => A,
            Some(IncomeCategory::Genekinami2) => I,
            Some(IncomeCategory::Genekinami1) => U,
            Some(IncomeCategory::Teishotoku2 | IncomeCategory::Teishotoku1) => {
                Ceiling::Fixed(8_000)
            }
            // 一般 (and 一般Ⅱ), and a certificate of the under-70 kind or
            // none at all: the general outpatient amount.
            _ => Ceiling::Fixed(18_000),
        }
    } else {
        match category? {
            IncomeCategory::A => A,
            IncomeCategory::I => I,
            IncomeCategory::U => U,
            IncomeCategory::E => Ceiling::Fixed(57_600),
            IncomeCategory::O => Ceiling::Fixed(35_400),
            // A 70-and-over category before 70 is a mistake on the
            // insurance record: no ceiling at the window.
            _ => return None,
        }
    };
    Some(if in_the_month_of_the_75th_birthday(birth, date) {
        ceiling.halved()
    } else {
        ceiling
    })
}

fn in_the_month_of_the_75th_birthday(birth: NaiveDate, date: NaiveDate) -> bool {
    // Born on the 1st, 75 is attained on the last day of the month before
    // and the whole month is the new insurance's: no halving.
    let attained = attains_age(birth, 75);
    birth.day() != 1 && attained.year() == date.year() && attained.month() == date.month()
}

/// One visit of the month, in the order the month is charged (date, then
/// entry): its charge before the ceiling, its cost (10 yen × points) and
/// the ceiling that applies to it, if any.
#[derive(Debug, Clone, Copy)]
pub struct MonthVisit {
    pub charge: i64,
    pub cost: i64,
    pub ceiling: Option<Ceiling>,
}

/// What a visit is charged when the month's visits before it cost
/// `cost_before` and were charged `charged_before`: its charge, and the
/// ceiling amount that applied (`None` when none did).
pub fn charge_after(
    visit: MonthVisit,
    cost_before: i64,
    charged_before: i64,
) -> (i64, Option<i64>) {
    let ceiling = visit.ceiling.map(|c| c.amount(cost_before + visit.cost));
    let charge = match ceiling {
        Some(limit) => visit.charge.min((limit - charged_before).max(0)),
        None => visit.charge,
    };
    (charge, ceiling)
}

/// What each visit is charged at the window, and the ceiling amount that
/// applied to it (`None` when none did).
pub fn charges_under_ceiling(visits: &[MonthVisit]) -> Vec<(i64, Option<i64>)> {
    let mut cost = 0;
    let mut charged = 0;
    visits
        .iter()
        .map(|visit| {
            let (charge, ceiling) = charge_after(*visit, cost, charged);
            cost += visit.cost;
            charged += charge;
            (charge, ceiling)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    const WORKING: &str = "1980-05-05";

    fn under70(category: IncomeCategory) -> Option<Ceiling> {
        outpatient_ceiling(
            d(WORKING),
            d("2026-11-10"),
            InsuranceKind::Employee,
            Some(category),
        )
    }

    #[test]
    fn the_mhlw_worked_example_for_category_u() {
        // 総医療費 1,000,000 yen, 3割 300,000 yen → ceiling 87,430 yen,
        // 高額療養費 212,570 yen.
        let ceiling = under70(IncomeCategory::U).unwrap();
        assert_eq!(ceiling.amount(1_000_000), 87_430);
        let charged = charges_under_ceiling(&[MonthVisit {
            charge: 300_000,
            cost: 1_000_000,
            ceiling: Some(ceiling),
        }]);
        assert_eq!(charged, [(87_430, Some(87_430))]);
        assert_eq!(300_000 - charged[0].0, 212_570);
    }

    #[test]
    fn the_under_seventy_amounts() {
        assert_eq!(
            under70(IncomeCategory::A).unwrap().amount(1_000_000),
            254_180
        );
        assert_eq!(
            under70(IncomeCategory::I).unwrap().amount(1_000_000),
            171_820
        );
        assert_eq!(under70(IncomeCategory::U).unwrap().amount(100_000), 80_100);
        assert_eq!(
            under70(IncomeCategory::E).unwrap().amount(1_000_000),
            57_600
        );
        assert_eq!(
            under70(IncomeCategory::O).unwrap().amount(1_000_000),
            35_400
        );
        // Without a certificate nothing is applied at the window.
        assert_eq!(
            outpatient_ceiling(d(WORKING), d("2026-11-10"), InsuranceKind::National, None),
            None
        );
    }

    #[test]
    fn the_seventy_and_over_amounts() {
        let at = |category| {
            outpatient_ceiling(
                d("1950-10-10"),
                d("2026-11-10"),
                InsuranceKind::LateElderly,
                category,
            )
            .map(|c| c.amount(500_000))
        };
        assert_eq!(at(None), Some(18_000));
        assert_eq!(at(Some(IncomeCategory::Ippan)), Some(18_000));
        assert_eq!(at(Some(IncomeCategory::Ippan2)), Some(18_000));
        assert_eq!(at(Some(IncomeCategory::Teishotoku1)), Some(8_000));
        assert_eq!(at(Some(IncomeCategory::Teishotoku2)), Some(8_000));
        assert_eq!(at(Some(IncomeCategory::Genekinami1)), Some(82_430));
        // 70–74 on a national insurance, from the month after the 70th
        // birthday.
        let born = d("1956-06-02");
        assert_eq!(
            outpatient_ceiling(born, d("2026-06-30"), InsuranceKind::National, None),
            None
        );
        assert_eq!(
            outpatient_ceiling(born, d("2026-07-01"), InsuranceKind::National, None),
            Some(Ceiling::Fixed(18_000))
        );
    }

    #[test]
    fn the_month_of_the_75th_birthday_halves_the_amount() {
        let born = d("1951-12-06");
        let on = |date, kind| outpatient_ceiling(born, d(date), kind, None);
        assert_eq!(
            on("2026-12-05", InsuranceKind::National),
            Some(Ceiling::Fixed(9_000))
        );
        assert_eq!(
            on("2026-12-06", InsuranceKind::LateElderly),
            Some(Ceiling::Fixed(9_000))
        );
        assert_eq!(
            on("2027-01-06", InsuranceKind::LateElderly),
            Some(Ceiling::Fixed(18_000))
        );
        // Born on the 1st: the whole month is the new insurance's.
        assert_eq!(
            outpatient_ceiling(
                d("1951-12-01"),
                d("2026-12-01"),
                InsuranceKind::LateElderly,
                None
            ),
            Some(Ceiling::Fixed(18_000))
        );
    }

    #[test]
    fn a_ceiling_reached_in_the_middle_of_a_month() {
        // General (18,000 yen), 20%: 5,000 points a visit = 10,000 yen.
        let visit = MonthVisit {
            charge: 10_000,
            cost: 50_000,
            ceiling: Some(Ceiling::Fixed(18_000)),
        };
        assert_eq!(
            charges_under_ceiling(&[visit, visit, visit]),
            [
                (10_000, Some(18_000)),
                (8_000, Some(18_000)),
                (0, Some(18_000))
            ]
        );
        // Exactly at the ceiling: the next visit pays nothing.
        let exact = MonthVisit {
            charge: 9_000,
            ..visit
        };
        assert_eq!(
            charges_under_ceiling(&[exact, exact, exact]),
            [
                (9_000, Some(18_000)),
                (9_000, Some(18_000)),
                (0, Some(18_000))
            ]
        );
    }

    #[test]
    fn past_a_proportional_ceiling_each_visit_pays_one_percent_of_its_cost() {
        let u = under70(IncomeCategory::U);
        let big = MonthVisit {
            charge: 240_000,
            cost: 800_000,
            ceiling: u,
        };
        let next = MonthVisit {
            charge: 30_000,
            cost: 100_000,
            ceiling: u,
        };
        // 80,100 + 5,330 = 85,430; then 86,430: 1,000 yen more.
        assert_eq!(
            charges_under_ceiling(&[big, next]),
            [(85_430, Some(85_430)), (1_000, Some(86_430))]
        );
    }
}
