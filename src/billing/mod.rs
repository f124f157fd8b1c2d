//! The billing rules, as pure functions over integers: no IO, no floating
//! point. These are the oracle the tests check.
//!
//! - 1 point = 10 yen.
//! - A procedure line is the item's points × quantity.
//! - Drugs are priced by unit (剤, `drug_units`): the yen of a unit's drugs
//!   for one day (dose, dispensing), 15 yen or less is 1 point, otherwise
//!   `1 + ceil((yen − 15) / 10)` points, times its days. A drug line on its
//!   own is a unit of one drug for one day.
//! - The patient's share follows from age, insurance and income category
//!   (`copay`), unless the insurance carries an explicit rate.
//! - The patient charge is total points × 10 × share, rounded to the
//!   nearest 10 yen with 5 yen rounding up; the month's charges stop at the
//!   outpatient high-cost ceiling (`ceiling`).

pub mod ceiling;
pub mod copay;
pub mod drug_units;
pub mod institution;
mod items;
mod money;
pub mod pricing;

pub use items::{is_master_code, Kind, MasterItem};
pub use money::{Centiyen, ParseYenError};

/// Yen per point.
pub const YEN_PER_POINT: i64 = 10;

/// The copay rate, in percent, of a patient without valid insurance.
pub const UNINSURED_COPAY_PERCENT: i64 = 100;

/// Points of a procedure line.
pub fn procedure_points(points: i64, quantity: i64) -> i64 {
    points * quantity
}

/// Points of a drug line: a unit of one drug for one day.
pub fn drug_points(unit_price: Centiyen, quantity: i64) -> i64 {
    drug_units::points_for_drug_yen(Centiyen(unit_price.0 * quantity))
}

/// The patient's charge in yen for `total_points` at `copay_percent`,
/// rounded to the nearest 10 yen (5 yen rounds up).
pub fn patient_charge(total_points: i64, copay_percent: i64) -> i64 {
    // points × 10 yen × percent / 100, kept exact in tenths of a yen.
    let tenths_of_yen = total_points * YEN_PER_POINT * copay_percent / 10;
    // Round to the nearest 100 tenths (10 yen), half up.
    (tenths_of_yen + 50).div_euclid(100) * 10
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    fn yen(s: &str) -> Centiyen {
        Centiyen::parse(s).unwrap()
    }

    #[test]
    fn a_procedure_line_is_points_times_quantity() {
        assert_eq!(procedure_points(288, 1), 288);
        assert_eq!(procedure_points(73, 3), 219);
    }

    #[test]
    fn drug_lines_at_the_fifteen_yen_boundary() {
        assert_eq!(drug_points(yen("15.00"), 1), 1);
        assert_eq!(drug_points(yen("15.01"), 1), 2);
        assert_eq!(drug_points(yen("25.00"), 1), 2);
        assert_eq!(drug_points(yen("25.01"), 1), 3);
        assert_eq!(drug_points(yen("5.00"), 3), 1);
        assert_eq!(drug_points(yen("10.10"), 14), 14); // 141.40 yen
        assert_eq!(drug_points(yen("0.01"), 1), 1);
    }

    #[test]
    fn a_charge_ending_in_5_yen_rounds_up_and_in_4_yen_rounds_down() {
        // 415 points × 10 yen × 30% = 1,245 yen → 1,250 yen.
        assert_eq!(patient_charge(415, 30), 1250);
        // 418 points × 10 × 30% = 1,254 yen → 1,250 yen.
        assert_eq!(patient_charge(418, 30), 1250);
        // 412 points × 10 × 10% = 412 yen → 410 yen; 415 × 10% = 415 → 420.
        assert_eq!(patient_charge(412, 10), 410);
        assert_eq!(patient_charge(415, 10), 420);
        assert_eq!(patient_charge(0, 30), 0);
    }

    #[test]
    fn without_insurance_the_patient_pays_everything() {
        assert_eq!(patient_charge(361, UNINSURED_COPAY_PERCENT), 3610);
    }

    #[test]
    fn a_twenty_percent_charge_rounds_to_ten_yen() {
        // 361 points × 10 × 20% = 722 yen → 720 yen.
        assert_eq!(patient_charge(361, 20), 720);
        // 363 points × 10 × 20% = 726 yen → 730 yen.
        assert_eq!(patient_charge(363, 20), 730);
    }
}
