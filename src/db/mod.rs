//! SQL on a tenant's own schema: small functions over a client that is
//! inside the tenant's transaction ([`crate::pools::Tx`]), with typed rows.
//! No statement here names a schema; the transaction's `search_path` does.

pub mod claims;
pub mod claims_file;
pub mod diseases;
pub mod encounters;
pub mod idempotency;
pub mod master_items;
pub mod patients;
pub mod payments;

use base64::Engine;

/// An opaque pagination cursor: the sort key of the last row returned.
pub fn encode_cursor(parts: &[&str]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(parts.join("\u{1f}"))
}

/// The parts of a cursor made by [`encode_cursor`], or `None` if it is not one.
pub fn decode_cursor(cursor: &str, parts: usize) -> Option<Vec<String>> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let split: Vec<String> = text.split('\u{1f}').map(str::to_string).collect();
    (split.len() == parts).then_some(split)
}

/// Escapes `%`, `_` and `\` for a `LIKE` pattern.
pub fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
