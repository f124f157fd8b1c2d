//! `/v1/patients`: registration, lookup, search, guarded updates, balance.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{conn, parse_id, parse_limit};
use crate::db::patients::{self, NewInsurance, Patient, PatientFields, PatientSummary, Update};
use crate::db::{decode_cursor, encode_cursor};
use crate::http::body::{double_option, parse, stored, whole_number, write_once, Idempotency};
#[allow(unused_imports)]
use crate::http::error::Problem;
use crate::http::{ApiError, AppState, Clinic, FieldError};

#[derive(Debug, Clone, Copy, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
/// The patient's sex.
pub enum Sex {
    Male,
    Female,
    Other,
}

impl Sex {
    fn as_str(self) -> &'static str {
        match self {
            Sex::Male => "male",
            Sex::Female => "female",
            Sex::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InsuranceBody {
    /// The insurer's number (保険者番号): 6 digits (national health insurance)
    /// or 8 digits (employee and other schemes).
    #[schema(pattern = "^([0-9]{6}|[0-9]{8})$")]
    insurer_number: String,
    /// The symbol on the insurance card (記号), at most 20 characters without
    /// control characters.
    #[schema(max_length = 20, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    symbol: Option<String>,
    /// The number on the insurance card (番号), at most 20 characters without
    /// control characters.
    #[schema(max_length = 20, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    number: Option<String>,
    /// Percent the patient pays: 10, 20 or 30.
    #[schema(minimum = 10, maximum = 30, multiple_of = 10)]
    #[serde(deserialize_with = "whole_number")]
    copay_rate: i64,
    /// The first day the insurance is valid.
    valid_from: NaiveDate,
    /// The last day the insurance is valid (not before `valid_from`); absent
    /// while it stays valid.
    valid_to: Option<NaiveDate>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPatientBody {
    /// The patient's name: 1 to 100 characters after surrounding spaces are
    /// trimmed, without control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    name: String,
    /// The name's reading in kana, at most 100 characters without control
    /// characters; searched like the name.
    #[schema(max_length = 100, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    name_kana: Option<String>,
    /// Between 1900-01-01 and today.
    #[schema(pattern = "^(19|20)[0-9]{2}-[0-9]{2}-[0-9]{2}$")]
    birth_date: NaiveDate,
    /// The patient's sex as recorded on the insurance card.
    sex: Sex,
    /// At most 30 characters without control characters.
    #[schema(max_length = 30, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    phone: Option<String>,
    /// At most 200 characters without control characters.
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    address: Option<String>,
    /// Free text for the front desk, at most 2,000 characters without control
    /// characters.
    #[schema(max_length = 2000, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    notes: Option<String>,
    /// The patient's insurances, at most 10; their validity periods must not
    /// overlap. Visits are charged under the one valid on their date.
    #[serde(default)]
    #[schema(max_items = 10)]
    insurances: Vec<InsuranceBody>,
}

/// A change to a patient: fields left out keep their value; `null` clears an
/// optional field.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchPatientBody {
    /// A new name: 1 to 100 characters after trimming, without control
    /// characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    name: Option<String>,
    /// A new kana reading, or `null` to clear it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(max_length = 100, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    name_kana: Option<Option<String>>,
    /// A new birth date, between 1900-01-01 and today.
    #[schema(pattern = "^(19|20)[0-9]{2}-[0-9]{2}-[0-9]{2}$")]
    birth_date: Option<NaiveDate>,
    /// A new sex.
    sex: Option<Sex>,
    /// A new phone number, or `null` to clear it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(max_length = 30, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    phone: Option<Option<String>>,
    /// A new address, or `null` to clear it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    address: Option<Option<String>>,
    /// New notes, or `null` to clear them.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(max_length = 2000, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    notes: Option<Option<String>>,
    /// Replaces the whole insurance list when present (at most 10, periods
    /// not overlapping).
    #[schema(max_items = 10)]
    insurances: Option<Vec<InsuranceBody>>,
}

/// One page of a patient search.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PatientPage {
    /// The patients found, by id.
    patients: Vec<PatientSummary>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
}

/// What a patient has been charged and has paid, in yen.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Balance {
    /// The patient.
    patient_id: Uuid,
    /// Charges of active (not voided) encounters.
    billed_yen: i64,
    /// Payments recorded against those encounters.
    paid_yen: i64,
    /// Negative when the patient has paid more than is billed.
    outstanding_yen: i64,
}

const MAX_INSURANCES: usize = 10;

fn text(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: Option<String>,
    max: usize,
    required: bool,
) -> Option<String> {
    let value = value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    match &value {
        None if required => errors.push(FieldError::new(field, "is required")),
        Some(v) if v.chars().count() > max || v.chars().any(char::is_control) => {
            errors.push(FieldError::new(
                field,
                format!("must be at most {max} characters, without control characters"),
            ))
        }
        _ => {}
    }
    value
}

/// Checks and normalizes the patient's fields.
fn check_fields(fields: PatientFields, errors: &mut Vec<FieldError>) -> PatientFields {
    let name = text(errors, "name", Some(fields.name), 100, true).unwrap_or_default();
    let name_kana = text(errors, "name_kana", fields.name_kana, 100, false);
    let phone = text(errors, "phone", fields.phone, 30, false);
    let address = text(errors, "address", fields.address, 200, false);
    let notes = text(errors, "notes", fields.notes, 2000, false);
    let today = chrono::Utc::now().date_naive();
    let oldest = NaiveDate::from_ymd_opt(1900, 1, 1).expect("a valid date");
    if fields.birth_date > today || fields.birth_date < oldest {
        errors.push(FieldError::new(
            "birth_date",
            "must be between 1900-01-01 and today",
        ));
    }
    PatientFields {
        name,
        name_kana,
        birth_date: fields.birth_date,
        sex: fields.sex,
        phone,
        address,
        notes,
    }
}

/// Checks insurances: insurer numbers, copay rates, non-overlapping periods.
fn check_insurances(list: Vec<InsuranceBody>, errors: &mut Vec<FieldError>) -> Vec<NewInsurance> {
    if list.len() > MAX_INSURANCES {
        errors.push(FieldError::new(
            "insurances",
            format!("at most {MAX_INSURANCES}"),
        ));
        return Vec::new();
    }
    let mut checked = Vec::with_capacity(list.len());
    for (i, ins) in list.into_iter().enumerate() {
        let at = |f: &str| format!("insurances/{i}/{f}");
        let insurer = ins.insurer_number.trim().to_string();
        if !(insurer.len() == 6 || insurer.len() == 8)
            || !insurer.bytes().all(|b| b.is_ascii_digit())
        {
            errors.push(FieldError::new(
                at("insurer_number"),
                "must be 6 or 8 digits",
            ));
        }
        if ![10, 20, 30].contains(&ins.copay_rate) {
            errors.push(FieldError::new(
                at("copay_rate"),
                "must be 10, 20 or 30 (percent)",
            ));
        }
        let symbol = text(errors, &at("symbol"), ins.symbol, 20, false);
        let number = text(errors, &at("number"), ins.number, 20, false);
        if ins.valid_to.is_some_and(|to| to < ins.valid_from) {
            errors.push(FieldError::new(at("valid_to"), "is before valid_from"));
        }
        checked.push(NewInsurance {
            insurer_number: insurer,
            symbol,
            number,
            copay_rate: ins.copay_rate.clamp(0, 100) as i16,
            valid_from: ins.valid_from,
            valid_to: ins.valid_to,
        });
    }
    let mut periods: Vec<(usize, &NewInsurance)> = checked.iter().enumerate().collect();
    periods.sort_by_key(|(_, ins)| ins.valid_from);
    for pair in periods.windows(2) {
        let ((_, first), (i, next)) = (pair[0], pair[1]);
        if first.valid_to.is_none_or(|to| to >= next.valid_from) {
            errors.push(FieldError::new(
                format!("insurances/{i}/valid_from"),
                "overlaps another insurance's period",
            ));
        }
    }
    checked
}

fn etag(version: i32) -> String {
    format!("\"{version}\"")
}

/// `POST /v1/patients` (accepts `Idempotency-Key`).
#[utoipa::path(post, path = "/v1/patients", operation_id = "create_patient", tag = "patients", request_body = NewPatientBody, params(("Idempotency-Key" = Option<String>, Header, description = "1 to 200 visible ASCII characters chosen by the client, new for each new request: a retry with the same key and body within `clinic.idempotency_ttl_s` replays the first response instead of writing again; the same key with another body is refused (422)", pattern = "^[!-~]{1,200}$")), responses((status = 201, body = Patient, headers(("ETag" = String))), (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"), (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"), (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Validation failed: `errors` names the fields", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let idempotency = Idempotency::of(&req, "POST /v1/patients", &body)?;
    let input: NewPatientBody = parse(&body)?;
    let mut errors = Vec::new();
    let fields = check_fields(
        PatientFields {
            name: input.name,
            name_kana: input.name_kana,
            birth_date: input.birth_date,
            sex: input.sex.as_str().into(),
            phone: input.phone,
            address: input.address,
            notes: input.notes,
        },
        &mut errors,
    );
    let insurances = check_insurances(input.insurances, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let conn = conn(&state, &tenant, shard).await?;
    write_once(&conn, idempotency, async |tx| {
        let patient = patients::insert(tx, &fields, &insurances).await?;
        stored(StatusCode::CREATED, &patient, Some(etag(patient.version)))
    })
    .await
}

/// `GET /v1/patients/{id}`
#[utoipa::path(get, path = "/v1/patients/{id}", operation_id = "get_patient", tag = "patients", params(("id" = uuid::Uuid, Path, description = "The patient's id")), responses((status = 200, body = Patient, headers(("ETag" = String))), (status = 404, description = "No such object in this clinic", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
pub async fn show(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "patient")?;
    let conn = conn(&state, &tenant, shard).await?;
    let patient = patients::get(&conn, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no patient {id}")))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag(patient.version)))
        .json(patient))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    q: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/patients?q=&limit=&cursor=`: name or kana starting with `q`.
#[utoipa::path(get, path = "/v1/patients", operation_id = "search_patients", tag = "patients", params(("q" = Option<String>, Query, description = "Start of the name or kana, at most 100 characters without control characters (surrounding spaces are trimmed)", max_length = 100, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"), ("limit" = Option<i64>, Query, description = "1 to 100, default 20", minimum = 1, maximum = 100), ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page; absent for the first page")), responses((status = 200, body = PatientPage), (status = 422, description = "Validation failed: `errors` names the fields", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
pub async fn search(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    query: web::Query<SearchQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let mut errors = Vec::new();
    let limit = parse_limit(query.limit.as_deref(), 20, 100, &mut errors);
    let after = query
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .and_then(|c| {
            let id = decode_cursor(c, 1).and_then(|p| Uuid::parse_str(&p[0]).ok());
            if id.is_none() {
                errors.push(FieldError::new(
                    "cursor",
                    "is not a cursor this API returned",
                ));
            }
            id
        });
    let q = query
        .q
        .map(|q| q.trim().to_string())
        .filter(|q| !q.is_empty());
    if !super::plain_text(q.as_deref(), 100) {
        errors.push(FieldError::new(
            "q",
            "must be at most 100 characters, without control characters",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let conn = conn(&state, &tenant, shard).await?;
    let found = patients::search(&conn, q.as_deref(), after, limit).await?;
    let next_cursor = (found.len() as i64 == limit)
        .then(|| found.last().map(|p| encode_cursor(&[&p.id.to_string()])))
        .flatten();
    Ok(HttpResponse::Ok().json(PatientPage {
        patients: found,
        next_cursor,
    }))
}

/// The version an `If-Match` header names; `None` for `*` (any version).
/// An entity tag is quoted (RFC 9110, 8.8.3): `"3"`, or the weak `W/"3"`.
fn if_match(req: &HttpRequest) -> Result<Option<i32>, ApiError> {
    let value = req
        .headers()
        .get(header::IF_MATCH)
        .ok_or(ApiError::PreconditionRequired)?;
    if value.as_bytes() == b"*" {
        return Ok(None);
    }
    value
        .to_str()
        .ok()
        .map(|v| v.trim())
        .map(|v| v.strip_prefix("W/").unwrap_or(v))
        .and_then(|v| v.strip_prefix('"')?.strip_suffix('"'))
        .filter(|v| (1..=9).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<i32>().ok())
        .map(Some)
        .ok_or_else(|| ApiError::validation("If-Match", "must be an ETag this API returned"))
}

/// `PATCH /v1/patients/{id}` with `If-Match`.
#[utoipa::path(patch, path = "/v1/patients/{id}", operation_id = "update_patient", tag = "patients", request_body = PatchPatientBody, params(("id" = uuid::Uuid, Path, description = "The patient's id"), ("If-Match" = String, Header, description = "The ETag last seen (`\"3\"`, or `W/\"3\"`), or `*` for whatever version is current", pattern = "^(\\*|(W/)?\"[0-9]{1,9}\")$")), responses((status = 200, body = Patient, headers(("ETag" = String))), (status = 428, description = "If-Match missing", body = Problem, content_type = "application/problem+json"), (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"), (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such object in this clinic", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match is stale", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Validation failed: `errors` names the fields", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
pub async fn update(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "patient")?;
    let expected = if_match(&req)?;
    let patch: PatchPatientBody = parse(&body)?;
    let conn = conn(&state, &tenant, shard).await?;
    write_once(&conn, None, async |tx| {
        let current = patients::get_in(tx, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no patient {id}")))?;
        let version = current.version;
        let mut errors = Vec::new();
        let fields = check_fields(
            PatientFields {
                name: patch.name.unwrap_or(current.name),
                name_kana: patch.name_kana.unwrap_or(current.name_kana),
                birth_date: patch.birth_date.unwrap_or(current.birth_date),
                sex: patch
                    .sex
                    .map(|s| s.as_str().to_string())
                    .unwrap_or(current.sex),
                phone: patch.phone.unwrap_or(current.phone),
                address: patch.address.unwrap_or(current.address),
                notes: patch.notes.unwrap_or(current.notes),
            },
            &mut errors,
        );
        let insurances = patch
            .insurances
            .map(|list| check_insurances(list, &mut errors));
        // A change that could never be made is refused as such (422) before
        // the version is compared (412).
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        let expected = expected.unwrap_or(version);
        if version != expected {
            return Err(ApiError::PreconditionFailed(format!(
                "the patient changed (now version {version}); fetch it again"
            )));
        }
        match patients::update(tx, id, expected, &fields, insurances.as_deref()).await? {
            Update::NotFound => Err(ApiError::NotFound(format!("no patient {id}"))),
            Update::Stale(now) => Err(ApiError::PreconditionFailed(format!(
                "the patient changed (now version {now}); fetch it again"
            ))),
            Update::Updated(patient) => {
                stored(StatusCode::OK, &patient, Some(etag(patient.version)))
            }
        }
    })
    .await
}

/// `GET /v1/patients/{id}/balance`
#[utoipa::path(get, path = "/v1/patients/{id}/balance", operation_id = "get_patient_balance", tag = "patients", params(("id" = uuid::Uuid, Path, description = "The patient's id")), responses((status = 200, body = Balance), (status = 404, description = "No such object in this clinic", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
pub async fn balance(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "patient")?;
    let conn = conn(&state, &tenant, shard).await?;
    let (billed, paid) = patients::balance(&conn, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no patient {id}")))?;
    Ok(HttpResponse::Ok().json(Balance {
        patient_id: id,
        billed_yen: billed,
        paid_yen: paid,
        outstanding_yen: billed - paid,
    }))
}
