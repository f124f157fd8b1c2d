//! Property tests of request parsing: any JSON body, path segment, query
//! value or cursor is either accepted or refused with a named problem,
//! never a panic.

use proptest::prelude::*;
use serde_json::Value;

use super::encounters::{NewEncounterBody, NewPaymentBody};
use super::patients::NewPatientBody;
use super::{parse_id, parse_limit};
use crate::db::{decode_cursor, encode_cursor, like_escape};
use crate::http::body::parse;
use crate::http::ApiError;
use crate::tenancy::Slug;

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("patient_id".to_string()),
        Just("date".to_string()),
        Just("items".to_string()),
        Just("code".to_string()),
        Just("quantity".to_string()),
        Just("name".to_string()),
        Just("birth_date".to_string()),
        Just("sex".to_string()),
        Just("insurances".to_string()),
        Just("amount_yen".to_string()),
        Just("method".to_string()),
        Just("encounter_id".to_string()),
        "\\PC{1,8}",
    ]
}

/// Any JSON, shaped a little like clinic bodies.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
        Just(Value::from("2026-05-01")),
        Just(Value::from("0191e4a0-0000-7000-8000-000000000000")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A refusal must be a validation problem naming what is wrong.
fn refused_well(result: Result<(), ApiError>) -> Result<(), TestCaseError> {
    match result {
        Ok(()) => Ok(()),
        Err(ApiError::Validation(errors)) => {
            prop_assert_eq!(errors.len(), 1);
            prop_assert!(!errors[0].message.is_empty());
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "not a validation problem: {other:?}"
        ))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_json_body_is_parsed_or_refused_with_a_named_field(body in json()) {
        refused_well(parse::<NewEncounterBody>(&body).map(|_| ()))?;
        refused_well(parse::<NewPatientBody>(&body).map(|_| ()))?;
        refused_well(parse::<NewPaymentBody>(&body).map(|_| ()))?;
    }

    #[test]
    fn a_limit_is_within_bounds_whatever_is_sent(text in "\\PC{0,12}", max in 1i64..=500) {
        let mut errors = Vec::new();
        let limit = parse_limit(Some(&text), 1, max, &mut errors);
        prop_assert!((1..=max).contains(&limit));
        let valid = text.parse::<i64>().is_ok_and(|n| (1..=max).contains(&n));
        prop_assert_eq!(errors.is_empty(), valid);
    }

    #[test]
    fn a_path_id_is_a_uuid_or_not_found(text in "\\PC{0,40}") {
        match parse_id(&text, "patient") {
            Ok(id) => prop_assert_eq!(Some(id), uuid::Uuid::parse_str(&text).ok()),
            Err(ApiError::NotFound(_)) => {}
            Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_no_cursor(
        parts in prop::collection::vec("[^\u{1f}]{0,12}", 1..4),
        garbage in "\\PC{0,40}",
    ) {
        let borrowed: Vec<&str> = parts.iter().map(String::as_str).collect();
        prop_assert_eq!(decode_cursor(&encode_cursor(&borrowed), parts.len()), Some(parts.clone()));
        let _ = decode_cursor(&garbage, 2);
    }

    #[test]
    fn a_slug_that_parses_is_a_plain_identifier(text in "\\PC{0,45}") {
        if let Ok(slug) = Slug::parse(&text) {
            prop_assert!(slug
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            prop_assert!((3..=40).contains(&slug.as_str().len()));
        }
    }

    #[test]
    fn an_escaped_search_has_no_live_wildcards(text in "\\PC{0,30}") {
        let escaped = like_escape(&text);
        let mut chars = escaped.chars();
        let mut unescaped = String::new();
        while let Some(c) = chars.next() {
            if c == '\\' {
                prop_assert!(chars.next().is_some(), "a trailing escape");
            } else {
                unescaped.push(c);
            }
        }
        prop_assert!(!unescaped.contains('%') && !unescaped.contains('_'));
    }
}
