//! `Centiyen`: an amount in hundredths of a yen, as drug unit prices are
//! written (`"10.10"`). Parsed from and printed as a decimal string.

use std::fmt;

/// Hundredths of a yen. Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Centiyen(pub i64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseYenError {
    #[error("must be a decimal amount of yen such as 10.10")]
    NotDecimal,
    #[error("has more than two decimal places")]
    TooPrecise,
    #[error("is too large")]
    TooLarge,
}

impl Centiyen {
    /// Parses `"10"`, `"10.1"` or `"10.10"`; no sign, no exponent.
    pub fn parse(s: &str) -> Result<Centiyen, ParseYenError> {
        let (whole, fraction) = match s.split_once('.') {
            Some((w, f)) => (w, f),
            None => (s, ""),
        };
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits(whole)
            || !digits(fraction)
            || (s.contains('.') && fraction.is_empty())
        {
            return Err(ParseYenError::NotDecimal);
        }
        if fraction.len() > 2 {
            return Err(ParseYenError::TooPrecise);
        }
        if whole.len() > 12 {
            return Err(ParseYenError::TooLarge);
        }
        let whole: i64 = whole.parse().map_err(|_| ParseYenError::NotDecimal)?;
        let cents: i64 = match fraction.len() {
            0 => 0,
            1 => {
                fraction
                    .parse::<i64>()
                    .map_err(|_| ParseYenError::NotDecimal)?
                    * 10
            }
            _ => fraction.parse().map_err(|_| ParseYenError::NotDecimal)?,
        };
        Ok(Centiyen(whole * 100 + cents))
    }
}

impl fmt::Display for Centiyen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_yen_round_trips() {
        for (text, value, shown) in [
            ("10.10", 1010, "10.10"),
            ("10.1", 1010, "10.10"),
            ("7", 700, "7.00"),
            ("0.05", 5, "0.05"),
        ] {
            let parsed = Centiyen::parse(text).unwrap();
            assert_eq!(parsed, Centiyen(value));
            assert_eq!(parsed.to_string(), shown);
        }
    }

    #[test]
    fn malformed_amounts_are_refused() {
        assert_eq!(Centiyen::parse("1.234"), Err(ParseYenError::TooPrecise));
        for bad in ["", ".5", "5.", "-1", "1e3", "abc", "1,000", " 1"] {
            assert_eq!(
                Centiyen::parse(bad),
                Err(ParseYenError::NotDecimal),
                "{bad}"
            );
        }
    }
}
