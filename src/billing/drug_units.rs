//! Drug units (剤): drugs taken together on one schedule are priced
//! together, per the unit of the fee schedule.
//!
//! Source: 診療報酬の算定方法 (平成20年厚生労働省告示第59号) 別表第一 第2章
//! 第5部 投薬 第3節 薬剤料 — 「使用薬剤の薬価が1剤1日分（頓服は1回分、外用は
//! 1調剤分）15円以下の場合は1点、15円を超える場合は10円又はその端数を増すご
//! とに1点」. The prices summed are each drug's unit price × its quantity in
//! that unit (a day, a dose, a dispensing); the unit's points for one day are
//! then multiplied by its days (内服) or doses (頓服); an external drug
//! (外用) is one dispensing.

use serde::{Deserialize, Serialize};

use super::Centiyen;

/// How a unit's drugs are taken, which fixes what one "unit" of it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    /// 内服: per day, times `days`.
    Internal,
    /// 頓服: per dose, times the number of doses.
    AsNeeded,
    /// 外用: per dispensing; quantities are what is dispensed.
    External,
}

impl UnitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitKind::Internal => "internal",
            UnitKind::AsNeeded => "as_needed",
            UnitKind::External => "external",
        }
    }

    pub fn parse(text: &str) -> Option<UnitKind> {
        match text {
            "internal" => Some(UnitKind::Internal),
            "as_needed" => Some(UnitKind::AsNeeded),
            "external" => Some(UnitKind::External),
            _ => None,
        }
    }
}

/// Points for `yen` (in hundredths) of drugs in one unit: 15 yen or less
/// is 1 point, then one more per started 10 yen.
pub fn points_for_drug_yen(yen: Centiyen) -> i64 {
    let fifteen_yen = 15 * 100;
    let ten_yen = 10 * 100;
    if yen.0 <= fifteen_yen {
        1
    } else {
        1 + (yen.0 - fifteen_yen + ten_yen - 1) / ten_yen
    }
}

/// The yen of one unit's drugs: each `(unit price, quantity)` multiplied
/// and summed.
pub fn unit_yen(drugs: &[(Centiyen, i64)]) -> Centiyen {
    Centiyen(
        drugs
            .iter()
            .map(|(price, quantity)| price.0 * quantity)
            .sum(),
    )
}

/// A unit's points: its points for one unit (day, dose or dispensing)
/// times its days or doses; an external unit counts once.
pub fn unit_points(kind: UnitKind, drugs: &[(Centiyen, i64)], days: i64) -> i64 {
    let per_unit = points_for_drug_yen(unit_yen(drugs));
    match kind {
        UnitKind::Internal | UnitKind::AsNeeded => per_unit * days,
        UnitKind::External => per_unit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yen(s: &str) -> Centiyen {
        Centiyen::parse(s).unwrap()
    }

    #[test]
    fn two_drugs_of_one_unit_are_priced_by_their_sum_per_day_times_days() {
        // 10.10 × 3 + 27.90 × 2 = 86.10 yen a day → 1 + ceil(71.10 / 10) =
        // 9 points a day; 14 days → 126 points.
        let drugs = [(yen("10.10"), 3), (yen("27.90"), 2)];
        assert_eq!(unit_yen(&drugs), yen("86.10"));
        assert_eq!(points_for_drug_yen(unit_yen(&drugs)), 9);
        assert_eq!(unit_points(UnitKind::Internal, &drugs, 14), 126);
        // Together is not the sum of apart: 7 + 8 yen is 1 point as one
        // unit and 2 points as two.
        let cheap = [(yen("7.00"), 1), (yen("8.00"), 1)];
        assert_eq!(unit_points(UnitKind::Internal, &cheap, 1), 1);
        assert_eq!(
            points_for_drug_yen(yen("7.00")) + points_for_drug_yen(yen("8.00")),
            2
        );
    }

    #[test]
    fn the_fifteen_yen_boundary_per_unit() {
        assert_eq!(points_for_drug_yen(yen("15.00")), 1);
        assert_eq!(points_for_drug_yen(yen("15.01")), 2);
        assert_eq!(points_for_drug_yen(yen("25.00")), 2);
        assert_eq!(points_for_drug_yen(yen("25.01")), 3);
        assert_eq!(points_for_drug_yen(yen("0.01")), 1);
    }

    #[test]
    fn a_dose_counts_per_dose_and_an_external_drug_once() {
        let drugs = [(yen("30.00"), 1)]; // 30 yen → 3 points
        assert_eq!(unit_points(UnitKind::AsNeeded, &drugs, 5), 15);
        // 外用: the quantity is what is dispensed (e.g. 5 patches).
        let patches = [(yen("30.00"), 5)]; // 150 yen → 15 points
        assert_eq!(unit_points(UnitKind::External, &patches, 1), 15);
    }

    #[test]
    fn a_single_drug_for_one_day_is_todays_drug_line() {
        for (price, quantity) in [("10.10", 14), ("15.00", 1), ("27.90", 3)] {
            assert_eq!(
                unit_points(UnitKind::Internal, &[(yen(price), quantity)], 1),
                super::super::drug_points(yen(price), quantity)
            );
        }
    }
}
