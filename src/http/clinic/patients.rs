//! `/v1/patients`: registration, lookup, search, guarded updates, balance.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{conn, cursor_after, next_cursor, parse_id, parse_limit};
use crate::billing::copay::{IncomeCategory, InsuranceKind};
use crate::clinic::{etag, register_patient, update_patient, InsuranceInput, PatientChange};
use crate::db::patients::{self, Patient, PatientFields, PatientSummary};
use crate::http::body::{double_option, idempotency_key, optional_whole_number, parse, respond};
#[allow(unused_imports)]
use crate::http::error::Problem;
use crate::http::{ApiError, AppState, Clinic, FieldError};

/// Whose insurance it is.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Relation {
    /// 本人: the insured person.
    Insured,
    /// 家族: a dependent.
    Dependent,
}

impl Relation {
    fn as_str(self) -> &'static str {
        match self {
            Relation::Insured => "insured",
            Relation::Dependent => "dependent",
        }
    }
}

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
    /// The kind of insurance: `employee` (被用者保険), `national` (国民健康保険)
    /// or `late_elderly` (後期高齢者医療). With a kind and no `copay_rate`,
    /// the patient's share follows from age and income category on each
    /// visit date (see the README's billing rules).
    kind: Option<InsuranceKind>,
    /// `insured` (本人) or `dependent` (家族).
    relation: Option<Relation>,
    /// The income category on the patient's certificate (所得区分), which
    /// the share from 70 and the monthly high-cost ceiling follow: under 70
    /// `a`, `i`, `u`, `e`, `o` (ア–オ of the 限度額適用認定証); from 70
    /// `genekinami_3`, `genekinami_2`, `genekinami_1` (現役並みⅢ–Ⅰ), `ippan`
    /// (一般, 一般Ⅰ), `ippan_2` (一般Ⅱ), `teishotoku_2`, `teishotoku_1`.
    income_category: Option<IncomeCategory>,
    /// An explicit share in percent (10, 20 or 30) that overrides the
    /// rules; required when `kind` is absent.
    #[schema(minimum = 10, maximum = 30, multiple_of = 10)]
    #[serde(default, deserialize_with = "optional_whole_number")]
    copay_rate: Option<i64>,
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

/// The wire form of an insurance as the clinic layer takes it.
fn insurance_input(body: InsuranceBody) -> InsuranceInput {
    InsuranceInput {
        insurer_number: body.insurer_number,
        symbol: body.symbol,
        number: body.number,
        kind: body.kind,
        relation: body.relation.map(Relation::as_str),
        income_category: body.income_category,
        copay_rate: body.copay_rate,
        valid_from: body.valid_from,
        valid_to: body.valid_to,
    }
}

/// `POST /v1/patients` (accepts `Idempotency-Key`).
#[utoipa::path(post, path = "/v1/patients", operation_id = "create_patient", tag = "patients", request_body = NewPatientBody, params(("Idempotency-Key" = Option<String>, Header, description = "1 to 200 visible ASCII characters chosen by the client, new for each new request: a retry with the same key and body within `clinic.idempotency_ttl_s` replays the first response instead of writing again; the same key with another body is refused (422)", pattern = "^[!-~]{1,200}$")), responses((status = 201, body = Patient, headers(("ETag" = String)))), security(("clinic_key" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&state, &req, "POST /v1/patients", &body)?;
    let input: NewPatientBody = parse(&body)?;
    let fields = PatientFields {
        name: input.name,
        name_kana: input.name_kana,
        birth_date: input.birth_date,
        sex: input.sex.as_str().into(),
        phone: input.phone,
        address: input.address,
        notes: input.notes,
    };
    let insurances = input.insurances.into_iter().map(insurance_input).collect();
    let conn = conn(&state, &tenant, shard).await?;
    Ok(respond(
        register_patient(&conn, key, fields, insurances).await?,
    ))
}

/// `GET /v1/patients/{id}`
#[utoipa::path(get, path = "/v1/patients/{id}", operation_id = "get_patient", tag = "patients", params(("id" = uuid::Uuid, Path, description = "The patient's id")), responses((status = 200, body = Patient, headers(("ETag" = String)))), security(("clinic_key" = [])))]
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
#[utoipa::path(get, path = "/v1/patients", operation_id = "search_patients", tag = "patients", params(("q" = Option<String>, Query, description = "Start of the name or kana, at most 100 characters without control characters (surrounding spaces are trimmed)", max_length = 100, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"), ("limit" = Option<i64>, Query, description = "1 to 100, default 20", minimum = 1, maximum = 100), ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page; absent for the first page")), responses((status = 200, body = PatientPage)), security(("clinic_key" = [])))]
pub async fn search(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    query: web::Query<SearchQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let mut errors = Vec::new();
    let limit = parse_limit(query.limit.as_deref(), 20, 100, &mut errors);
    let after = cursor_after(query.cursor.as_deref(), 1, &mut errors, |p| {
        Uuid::parse_str(&p[0]).ok()
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
    let next_cursor = next_cursor(&found, limit, |p| [p.id.to_string()]);
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
#[utoipa::path(patch, path = "/v1/patients/{id}", operation_id = "update_patient", tag = "patients", request_body = PatchPatientBody, params(("id" = uuid::Uuid, Path, description = "The patient's id"), ("If-Match" = String, Header, description = "The ETag last seen (`\"3\"`, or `W/\"3\"`), or `*` for whatever version is current", pattern = "^(\\*|(W/)?\"[0-9]{1,9}\")$")), responses((status = 200, body = Patient, headers(("ETag" = String))), (status = 428, description = "If-Match missing", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match is stale", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
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
    let change = PatientChange {
        name: patch.name,
        name_kana: patch.name_kana,
        birth_date: patch.birth_date,
        sex: patch.sex.map(Sex::as_str),
        phone: patch.phone,
        address: patch.address,
        notes: patch.notes,
        insurances: patch
            .insurances
            .map(|list| list.into_iter().map(insurance_input).collect()),
    };
    let conn = conn(&state, &tenant, shard).await?;
    Ok(respond(update_patient(&conn, id, expected, change).await?))
}

/// `GET /v1/patients/{id}/balance`
#[utoipa::path(get, path = "/v1/patients/{id}/balance", operation_id = "get_patient_balance", tag = "patients", params(("id" = uuid::Uuid, Path, description = "The patient's id")), responses((status = 200, body = Balance)), security(("clinic_key" = [])))]
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
