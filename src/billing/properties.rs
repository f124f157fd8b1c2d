//! Property tests of the billing rules against independent reference
//! computations (counting thresholds, exact tenths of a yen).

use proptest::prelude::*;

use super::*;

/// Drug points by walking the thresholds one 10-yen step at a time.
fn drug_points_by_steps(centiyen: i64) -> i64 {
    let mut points = 1;
    let mut threshold = 15 * 100;
    while centiyen > threshold {
        points += 1;
        threshold += 10 * 100;
    }
    points
}

proptest! {
    #[test]
    fn drug_points_follow_the_fifteen_yen_then_ten_yen_steps(
        price in 1i64..=5_000_000, // up to 50,000 yen, in hundredths
        quantity in 1i64..=100,
    ) {
        prop_assume!(price * quantity <= 200_000_000);
        let points = drug_points(Centiyen(price), quantity);
        prop_assert_eq!(points, drug_points_by_steps(price * quantity));
    }

    #[test]
    fn drug_points_never_fall_as_quantity_grows(price in 1i64..=1_000_000, quantity in 1i64..=99) {
        let fewer = drug_points(Centiyen(price), quantity);
        let more = drug_points(Centiyen(price), quantity + 1);
        prop_assert!(fewer >= 1 && more >= fewer);
    }

    #[test]
    fn the_charge_is_the_nearest_ten_yen_with_five_rounding_up(
        points in 0i64..=10_000_000,
        copay in prop::sample::select(vec![10i64, 20, 30, 100]),
    ) {
        let charge = patient_charge(points, copay);
        // The exact charge in tenths of a yen: points × 10 yen × copay / 100.
        let exact_tenths = points * copay;
        let charged_tenths = charge * 10;
        prop_assert_eq!(charge % 10, 0);
        // Within 5 yen, and exactly 5 yen away only when rounding up.
        prop_assert!(charged_tenths > exact_tenths - 50, "{} for {}", charge, exact_tenths);
        prop_assert!(charged_tenths <= exact_tenths + 50, "{} for {}", charge, exact_tenths);
    }

    #[test]
    fn a_larger_bill_never_costs_the_patient_less(
        points in 0i64..=1_000_000,
        more in 0i64..=1_000,
        copay in prop::sample::select(vec![10i64, 20, 30, 100]),
    ) {
        prop_assert!(patient_charge(points + more, copay) >= patient_charge(points, copay));
    }

    #[test]
    fn yen_amounts_print_and_parse_back(cents in 0i64..=99_999_999_999_999) {
        let printed = Centiyen(cents).to_string();
        prop_assert_eq!(Centiyen::parse(&printed), Ok(Centiyen(cents)));
    }

    #[test]
    fn any_text_parses_as_yen_only_if_it_is_a_plain_decimal(text in "\\PC{0,20}") {
        let plain = {
            let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
            let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
            (1..=12).contains(&whole.len())
                && digits(whole)
                && digits(fraction)
                && (!text.contains('.') || (1..=2).contains(&fraction.len()))
        };
        prop_assert_eq!(Centiyen::parse(&text).is_ok(), plain, "{:?}", text);
    }

    #[test]
    fn decimal_looking_text_parses_to_its_value(whole in 0i64..=999_999, fraction in 0i64..=99) {
        let text = format!("{whole}.{fraction:02}");
        prop_assert_eq!(Centiyen::parse(&text), Ok(Centiyen(whole * 100 + fraction)));
    }

    #[test]
    fn a_months_charges_never_exceed_its_ceiling_nor_go_negative(
        visits in prop::collection::vec((0i64..=30_000, 0i64..=400_000), 1..30),
        fixed in prop::sample::select(vec![8_000i64, 18_000, 35_400, 57_600]),
        proportional in any::<bool>(),
    ) {
        use super::ceiling::{charges_under_ceiling, Ceiling, MonthVisit};
        let ceiling = if proportional {
            Ceiling::Proportional { base: 80_100, threshold: 267_000 }
        } else {
            Ceiling::Fixed(fixed)
        };
        let month: Vec<MonthVisit> = visits
            .iter()
            .map(|&(charge, cost)| MonthVisit { charge: charge * 10, cost, ceiling: Some(ceiling) })
            .collect();
        let charged = charges_under_ceiling(&month);
        let total_cost: i64 = month.iter().map(|v| v.cost).sum();
        let total: i64 = charged.iter().map(|c| c.0).sum();
        prop_assert!(total <= ceiling.amount(total_cost));
        for (visit, (charge, _)) in month.iter().zip(&charged) {
            prop_assert!(*charge >= 0 && *charge <= visit.charge);
        }
        // Below the ceiling nothing changes.
        let raw: i64 = month.iter().map(|v| v.charge).sum();
        if raw <= ceiling.amount(month[0].cost) {
            prop_assert_eq!(total, raw);
        }
    }
}
