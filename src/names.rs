//! Names that every layer speaks: a tenant's slug and the schema it
//! derives, and the quoting of SQL identifiers. Plain values, no IO; the
//! only place an identifier is quoted.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// The schema that holds the tenant registry, keys, releases and ledgers,
/// on the control cluster. Never a tenant's schema (those start `t_`).
pub const CONTROL_SCHEMA: &str = "recept";

/// A tenant's slug: `^[a-z][a-z0-9_]{2,39}$`. Its schema name derives from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Slug(Arc<str>);

/// Why a string is not a slug.
#[derive(Debug, thiserror::Error)]
#[error("a slug is 3 to 40 characters: a lowercase letter, then lowercase letters, digits or underscores")]
pub struct BadSlug;

impl Slug {
    pub fn parse(s: &str) -> Result<Slug, BadSlug> {
        let bytes = s.as_bytes();
        let ok = (3..=40).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase()
            && bytes[1..]
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        if ok {
            Ok(Slug(s.into()))
        } else {
            Err(BadSlug)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The schema that holds this tenant's tables.
    pub fn schema_name(&self) -> String {
        format!("t_{}", self.0)
    }

    /// The same schema as a name that quotes itself.
    pub fn schema(&self) -> SchemaName {
        SchemaName::new(&self.schema_name())
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A schema's name with its quoted form, made once: what `search_path`
/// and schema-qualified statements use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaName {
    name: Arc<str>,
    quoted: Arc<str>,
}

impl SchemaName {
    pub fn new(name: &str) -> SchemaName {
        SchemaName {
            name: name.into(),
            quoted: quote_ident(name).into(),
        }
    }

    /// The name as PostgreSQL stores it.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The name as an SQL identifier: double-quoted, inner quotes doubled.
    pub fn quoted(&self) -> &str {
        &self.quoted
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// `name` as a quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_pattern() {
        for good in ["abc", "clinic_01", "a23", &"a".repeat(40)] {
            assert!(Slug::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "1abc",
            "Abc",
            "ab-c",
            "ab c",
            "abc;",
            "",
            "ab'c",
            "äbc",
            &"a".repeat(41),
        ] {
            assert!(Slug::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_schema_derives_from_the_slug() {
        assert_eq!(Slug::parse("sakura").unwrap().schema_name(), "t_sakura");
        assert_eq!(
            Slug::parse("sakura").unwrap().schema().quoted(),
            "\"t_sakura\""
        );
    }

    #[test]
    fn identifiers_are_quoted_with_inner_quotes_doubled() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(SchemaName::new("x y").quoted(), "\"x y\"");
    }
}
