//! A deterministic full-size release for load tests: the same arguments
//! give the same items on every machine and every version of recept.

use chrono::NaiveDate;

use super::{Kind, MasterItem};
use crate::billing::Centiyen;

/// SplitMix64: tiny, fast and fixed forever, unlike a library's default RNG.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `procedures`, `drugs` and `diseases` items (about a tenth of procedures
/// and drugs with a fee revision on `revision_date`), from `seed`.
pub fn generate_release(
    seed: u64,
    procedures: usize,
    drugs: usize,
    diseases: usize,
    revision_date: NaiveDate,
) -> Vec<MasterItem> {
    let mut rng = SplitMix(seed);
    let start = NaiveDate::from_ymd_opt(2024, 4, 1).expect("a valid date");
    let day_before = revision_date.pred_opt().expect("a valid date");
    let mut items = Vec::with_capacity(procedures + drugs + diseases + (procedures + drugs) / 10);
    let push_revised = |items: &mut Vec<MasterItem>,
                        item: MasterItem,
                        revised: Option<MasterItem>| {
        match revised {
            Some(new) => {
                items.push(MasterItem {
                    valid_to: Some(day_before),
                    ..item
                });
                items.push(new);
            }
            None => items.push(item),
        }
    };
    for i in 0..procedures {
        let points = 5 + rng.below(3_000) as i32;
        let item = MasterItem {
            code: format!("1{:08}", i),
            kind: Kind::Procedure,
            name: format!("処置{:05} 標準手技", i),
            points: Some(points),
            unit_price: None,
            valid_from: start,
            valid_to: None,
        };
        let revised = (rng.below(10) == 0).then(|| MasterItem {
            points: Some(points + 1 + rng.below(20) as i32),
            valid_from: revision_date,
            ..item.clone()
        });
        push_revised(&mut items, item, revised);
    }
    for i in 0..drugs {
        let price = 100 + rng.below(500_000) as i64;
        let item = MasterItem {
            code: format!("6{:08}", i),
            kind: Kind::Drug,
            name: format!("薬剤{:05}錠 {}mg", i, 5 * (1 + rng.below(100))),
            points: None,
            unit_price: Some(Centiyen(price)),
            valid_from: start,
            valid_to: None,
        };
        let revised = (rng.below(10) == 0).then(|| MasterItem {
            unit_price: Some(Centiyen((price * 95 / 100).max(1))),
            valid_from: revision_date,
            ..item.clone()
        });
        push_revised(&mut items, item, revised);
    }
    for i in 0..diseases {
        items.push(MasterItem {
            code: format!("8{:06}", i),
            kind: Kind::Disease,
            name: format!("傷病名{:05}", i),
            points: None,
            unit_price: None,
            valid_from: start,
            valid_to: None,
        });
    }
    items
}

/// Writes items as a release CSV (the import format).
pub fn to_csv(items: &[MasterItem]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record(super::csv_import::HEADER);
    for item in items {
        let _ = writer.write_record([
            item.code.clone(),
            item.kind.as_str().to_string(),
            item.name.clone(),
            item.points.map(|p| p.to_string()).unwrap_or_default(),
            item.unit_price.map(|p| p.to_string()).unwrap_or_default(),
            item.valid_from.to_string(),
            item.valid_to.map(|d| d.to_string()).unwrap_or_default(),
        ]);
    }
    writer.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::parse_release;

    #[test]
    fn the_generator_is_deterministic_and_importable() {
        let date = NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();
        let a = generate_release(7, 200, 300, 100, date);
        let b = generate_release(7, 200, 300, 100, date);
        assert_eq!(a, b);
        assert!(a.len() > 600, "revisions add rows");
        let parsed = parse_release(&to_csv(&a)).unwrap();
        assert_eq!(parsed, a);
    }
}
