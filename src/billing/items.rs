//! The items billing prices: procedures, drugs and diseases of a master
//! release, one validity period each. Plain values; the master module reads
//! and writes them, billing only reads them.

use chrono::NaiveDate;
use serde::Serialize;

use super::Centiyen;

/// What a master item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Procedure,
    Drug,
    Disease,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "procedure" => Some(Kind::Procedure),
            "drug" => Some(Kind::Drug),
            "disease" => Some(Kind::Disease),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Procedure => "procedure",
            Kind::Drug => "drug",
            Kind::Disease => "disease",
        }
    }
}

/// One row of a release: a code with its price for one validity period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterItem {
    pub code: String,
    pub kind: Kind,
    pub name: String,
    /// Procedures only.
    pub points: Option<i32>,
    /// Drugs only.
    pub unit_price: Option<Centiyen>,
    pub valid_from: NaiveDate,
    /// Inclusive; `None` is open-ended.
    pub valid_to: Option<NaiveDate>,
}

impl MasterItem {
    /// Whether this row applies on `date`.
    pub fn valid_on(&self, date: NaiveDate) -> bool {
        self.valid_from <= date && self.valid_to.is_none_or(|to| date <= to)
    }

    /// Approximate bytes held, for the cache's weigher.
    pub fn weight(&self) -> usize {
        std::mem::size_of::<MasterItem>() + self.code.len() + self.name.len()
    }
}

/// Whether `code` is shaped like a master code: 1 to 20 ASCII letters or
/// digits. Releases are imported only with such codes, and clinics may
/// send only such codes.
pub fn is_master_code(code: &str) -> bool {
    (1..=20).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric())
}
