//! The medical institution code (医療機関コード) a claims file carries.
//!
//! Source: 「診療報酬請求書等の記載要領等について」 and the code's public
//! description (e.g. the 10-digit 処方箋発行医療機関コード: prefecture, fee
//! table, the 7-digit institution code): the 7th digit of the institution
//! code is a check digit over the 2-digit prefecture number, the 1-digit
//! fee table number (医科 1) and the code's first 6 digits, computed as for
//! insurer numbers (保険者番号設定要領): from the last digit leftwards
//! multiply by 2, 1, 2, …, add the digits of each product, and the check
//! digit is 10 minus the sum's last digit (0 when that digit is 0). Example
//! checked by hand: prefecture 01, table 1, code 0113719.

/// The fee table number of 医科 (medicine).
pub const MEDICAL_FEE_TABLE: u8 = 1;

/// The check digit over `digits` (weights 2, 1, 2, … from the right).
pub fn check_digit(digits: &[u8]) -> u8 {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let product = u32::from(*d) * if i % 2 == 0 { 2 } else { 1 };
            product / 10 + product % 10
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Why an institution code is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadInstitution {
    #[error("must be a prefecture number from 01 to 47")]
    Prefecture,
    #[error("must be 7 digits")]
    Shape,
    #[error("its check digit (the 7th) does not match; expected {0}")]
    CheckDigit(u8),
}

/// Checks a prefecture number (`01`–`47`).
pub fn check_prefecture(prefecture: &str) -> Result<u8, BadInstitution> {
    let number: u8 = (prefecture.len() == 2 && prefecture.bytes().all(|b| b.is_ascii_digit()))
        .then(|| prefecture.parse().ok())
        .flatten()
        .ok_or(BadInstitution::Prefecture)?;
    if (1..=47).contains(&number) {
        Ok(number)
    } else {
        Err(BadInstitution::Prefecture)
    }
}

/// Checks a 7-digit institution code of `prefecture` under fee table
/// `table`.
pub fn check_institution_code(prefecture: u8, table: u8, code: &str) -> Result<(), BadInstitution> {
    if code.len() != 7 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadInstitution::Shape);
    }
    let mut digits = vec![prefecture / 10, prefecture % 10, table];
    digits.extend(code.bytes().take(6).map(|b| b - b'0'));
    let expected = check_digit(&digits);
    if code.as_bytes()[6] - b'0' == expected {
        Ok(())
    } else {
        Err(BadInstitution::CheckDigit(expected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insurer_number_example_of_the_setting_guide() {
        // 33 12 001 → check digit 5 (保険者番号 33120015).
        assert_eq!(check_digit(&[3, 3, 1, 2, 0, 0, 1]), 5);
        // 06 13 201 → 3 (06132013).
        assert_eq!(check_digit(&[0, 6, 1, 3, 2, 0, 1]), 3);
    }

    #[test]
    fn an_institution_code_is_checked_with_its_prefecture_and_fee_table() {
        assert_eq!(
            check_institution_code(1, MEDICAL_FEE_TABLE, "0113719"),
            Ok(())
        );
        assert_eq!(
            check_institution_code(1, MEDICAL_FEE_TABLE, "0113710"),
            Err(BadInstitution::CheckDigit(9))
        );
        // The same code in another prefecture has another check digit.
        assert!(check_institution_code(13, MEDICAL_FEE_TABLE, "0113719").is_err());
        assert_eq!(
            check_institution_code(1, MEDICAL_FEE_TABLE, "011371"),
            Err(BadInstitution::Shape)
        );
        assert_eq!(
            check_institution_code(1, MEDICAL_FEE_TABLE, "01137１9"),
            Err(BadInstitution::Shape)
        );
    }

    #[test]
    fn prefectures_are_01_to_47() {
        assert_eq!(check_prefecture("01"), Ok(1));
        assert_eq!(check_prefecture("47"), Ok(47));
        for bad in ["00", "48", "1", "001", "ab", ""] {
            assert_eq!(
                check_prefecture(bad),
                Err(BadInstitution::Prefecture),
                "{bad}"
            );
        }
    }
}
