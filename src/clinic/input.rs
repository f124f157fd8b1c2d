//! Small parsers of clinic input: codes, dates, months, free text. Each
//! refuses a bad value instead of passing it on.

use std::fmt;

use chrono::NaiveDate;

/// Whether `code` is shaped like a master code: the release import's own
/// rule, so a code a clinic may send is one a release may hold.
pub use crate::billing::is_master_code as is_code;

/// A `YYYY-MM-DD` date.
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

/// Whether optional text is at most `max` characters and free of control
/// characters (PostgreSQL cannot even hold NUL).
pub fn plain_text(text: Option<&str>, max: usize) -> bool {
    text.is_none_or(|t| t.chars().count() <= max && !t.chars().any(char::is_control))
}

/// A calendar month, `YYYY-MM`: claims are made per month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month(NaiveDate);

impl Month {
    /// Exactly `YYYY-MM` with a month from 01 to 12.
    pub fn parse(text: &str) -> Option<Month> {
        if text.len() != 7 {
            return None;
        }
        let date = NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d").ok()?;
        (date.format("%Y-%m").to_string() == text).then_some(Month(date))
    }

    /// Its first day.
    pub fn first_day(self) -> NaiveDate {
        self.0
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_is_exactly_yyyy_mm() {
        assert_eq!(Month::parse("2026-02").unwrap().to_string(), "2026-02");
        for bad in ["2026-13", "2026-2", "26-02", "2026-02-01", "", "2026-00"] {
            assert!(Month::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn codes_are_letters_and_digits() {
        assert!(is_code("112007410"));
        assert!(!is_code(""));
        assert!(!is_code("a-b"));
        assert!(!is_code(&"1".repeat(21)));
    }
}
