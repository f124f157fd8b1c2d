//! A migration file split into its statements, so that each is sent alone.
//!
//! Citus forwards some DDL (`CREATE INDEX` among it) to its workers through
//! a path that accepts one statement per command, so a file sent as one
//! multi-statement query fails there ("cannot insert multiple commands into
//! a prepared statement", citusdata/citus#6608). Sent one at a time, inside
//! the same transaction, the same DDL works on Citus and plain PostgreSQL.
//!
//! The splitter knows what a semicolon inside a statement can hide behind
//! in PostgreSQL's lexer: string literals ('…', with '' inside; E'…' with
//! backslash escapes), quoted identifiers ("…"), dollar-quoted bodies
//! ($$…$$, $tag$…$tag$), line comments (-- …) and nested block comments.

/// The statements of `sql`, each without its terminating semicolon; those
/// holding nothing but blanks and comments are left out.
pub fn split(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut statements = Vec::new();
    let mut start = 0;
    let mut meaningful = false;
    let mut i = 0;
    while i < bytes.len() {
        let next = match bytes[i] {
            b';' => {
                if meaningful {
                    statements.push(sql[start..i].trim());
                }
                start = i + 1;
                meaningful = false;
                i + 1
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => line_comment_end(bytes, i),
            b'/' if bytes.get(i + 1) == Some(&b'*') => block_comment_end(bytes, i),
            b'\'' => {
                meaningful = true;
                let escapes = i > 0
                    && matches!(bytes[i - 1], b'e' | b'E')
                    && !is_ident_byte(bytes.get(i.wrapping_sub(2)).copied());
                quoted_end(bytes, i, b'\'', escapes)
            }
            b'"' => {
                meaningful = true;
                quoted_end(bytes, i, b'"', false)
            }
            b'$' => {
                meaningful = true;
                match dollar_tag(bytes, i) {
                    Some(tag) if !is_ident_byte(i.checked_sub(1).map(|p| bytes[p])) => {
                        dollar_body_end(bytes, i + tag.len(), tag)
                    }
                    _ => i + 1,
                }
            }
            byte => {
                meaningful |= !byte.is_ascii_whitespace();
                i + 1
            }
        };
        i = next;
    }
    if meaningful {
        statements.push(sql[start..].trim());
    }
    statements
}

fn is_ident_byte(byte: Option<u8>) -> bool {
    byte.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80)
}

fn line_comment_end(bytes: &[u8], at: usize) -> usize {
    bytes[at..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |p| at + p + 1)
}

/// Block comments nest in PostgreSQL.
fn block_comment_end(bytes: &[u8], at: usize) -> usize {
    let mut depth = 0;
    let mut i = at;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if bytes[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// The end of a literal opened by `quote` at `at`: a doubled quote stays
/// inside; with `escapes`, so does a backslash and the byte after it.
fn quoted_end(bytes: &[u8], at: usize, quote: u8, escapes: bool) -> usize {
    let mut i = at + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if escapes => i += 2,
            b if b == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// `$tag$` at `at` (the tag may be empty), when it is one: a tag is an
/// identifier that does not start with a digit (`$1` is a parameter).
fn dollar_tag(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let rest = &bytes[at + 1..];
    let len = rest
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80))?;
    if rest[len] != b'$' || rest.first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    Some(&bytes[at..at + len + 2])
}

fn dollar_body_end(bytes: &[u8], body: usize, tag: &[u8]) -> usize {
    bytes[body..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map_or(bytes.len(), |p| body + p + tag.len())
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn statements_are_split_at_semicolons_and_trimmed() {
        assert_eq!(
            split("CREATE TABLE a (x int);\n\nCREATE INDEX ON a (x) ;\n"),
            ["CREATE TABLE a (x int)", "CREATE INDEX ON a (x)"]
        );
    }

    #[test]
    fn a_last_statement_without_a_semicolon_is_kept() {
        assert_eq!(split("SELECT 1; SELECT 2"), ["SELECT 1", "SELECT 2"]);
    }

    #[test]
    fn comments_alone_are_not_statements_and_hide_semicolons() {
        let sql = "-- a comment; with a semicolon\n/* block; /* nested; */ still; */\n\
                   SELECT 1 -- trailing; comment\n;\n-- the end;\n";
        assert_eq!(
            split(sql),
            [
                "-- a comment; with a semicolon\n/* block; /* nested; */ still; */\n\
              SELECT 1 -- trailing; comment"
            ]
        );
    }

    #[test]
    fn semicolons_inside_literals_and_identifiers_stay() {
        let sql =
            r#"INSERT INTO "odd;name" VALUES ('a;b', 'it''s; fine', E'back\';slash');SELECT 2"#;
        assert_eq!(
            split(sql),
            [
                r#"INSERT INTO "odd;name" VALUES ('a;b', 'it''s; fine', E'back\';slash')"#,
                "SELECT 2"
            ]
        );
    }

    #[test]
    fn a_backslash_ends_nothing_in_a_standard_string() {
        assert_eq!(
            split(r"SELECT 'C:\'; SELECT 2"),
            [r"SELECT 'C:\'", "SELECT 2"]
        );
    }

    #[test]
    fn dollar_quoted_bodies_keep_their_statements() {
        let sql = "DO $$\nBEGIN\n  UPDATE t SET x = 1;\n  PERFORM $inner$;$inner$;\nEND\n$$;\n\
                   CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;";
        assert_eq!(
            split(sql),
            [
                "DO $$\nBEGIN\n  UPDATE t SET x = 1;\n  PERFORM $inner$;$inner$;\nEND\n$$",
                "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql"
            ]
        );
    }

    #[test]
    fn parameters_and_dollars_inside_identifiers_are_not_quotes() {
        assert_eq!(
            split("PREPARE p AS SELECT $1; SELECT a$b$ FROM t; SELECT 3"),
            ["PREPARE p AS SELECT $1", "SELECT a$b$ FROM t", "SELECT 3"]
        );
    }

    #[test]
    fn the_ledger_migrations_do_block_stays_one_statement() {
        let runner = super::super::control_runner();
        let ledger = runner
            .get_migrations()
            .iter()
            .find(|m| m.version() == 3)
            .expect("control migration V3");
        let statements = split(ledger.sql().expect("embedded migrations carry SQL"));
        let block = statements
            .iter()
            .find(|s| s.contains("DO $$"))
            .expect("V3 has a DO block");
        assert!(block.ends_with("$$"), "{block}");
        assert!(block.contains("UPDATE tenants SET schema_version = v WHERE id = t.id;"));
    }
}
