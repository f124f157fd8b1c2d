//! `/v1/encounters` and `/v1/payments`: visits priced from the tenant's
//! master copy, voids, and payments against them.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::{conn, cursor_after, next_cursor, parse_date, parse_id, parse_limit};
use crate::billing::drug_units::UnitKind;
use crate::clinic::{
    pay as pay_visit, record_visit, void_visit, NewPayment, NewVisit, PaymentMethod, VisitLine,
    VisitUnit,
};
use crate::db::encounters::{self, Encounter};
use crate::db::payments::Payment;
use crate::http::body::{
    idempotency_key, optional_json, optional_whole_number, parse, respond, whole_number,
};
#[allow(unused_imports)]
use crate::http::error::Problem;
use crate::http::{ApiError, AppState, Clinic, FieldError};

/// One page of encounters, by date.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct EncounterPage {
    /// The visits found, by date.
    encounters: Vec<Encounter>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemBody {
    /// A procedure or drug code of the clinic's master copy valid on the
    /// visit's date: 1 to 20 letters or digits.
    #[schema(pattern = "^[0-9A-Za-z]{1,20}$", example = "112007410")]
    code: String,
    /// How many: times for a procedure, units of the drug's unit price for a
    /// drug. 1 to 9,999.
    #[schema(minimum = 1, maximum = 9999)]
    #[serde(deserialize_with = "whole_number")]
    quantity: i64,
}

/// A visit to record: priced on entry from the master copy valid on its date.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEncounterBody {
    /// The patient seen (from `POST /v1/patients`).
    patient_id: Uuid,
    /// The day of the visit; it decides the master prices and the insurance.
    date: NaiveDate,
    /// The department, at most 50 characters.
    #[schema(max_length = 50)]
    department: Option<String>,
    /// The doctor, at most 50 characters.
    #[schema(max_length = 50)]
    doctor: Option<String>,
    /// Free text, at most 2,000 characters.
    #[schema(max_length = 2000)]
    notes: Option<String>,
    /// Disease codes of the master copy valid on `date` (at most 20, each 1 to
    /// 20 letters or digits); they are carried into the month's claim.
    #[serde(default)]
    #[schema(max_items = 20, inline, value_type = Vec<DiseaseCode>)]
    diagnoses: Vec<String>,
    /// What was done and given: procedure lines, and drug lines each priced
    /// as a unit of one drug for one day. With `drug_units`, 1 to 100 lines
    /// in all.
    #[serde(default)]
    #[schema(max_items = 100)]
    items: Vec<ItemBody>,
    /// Drugs given as units (剤): drugs taken together on one schedule,
    /// priced together (their yen for one day, dose or dispensing under
    /// the 15-yen rule, times the days or doses).
    #[serde(default)]
    #[schema(max_items = 100)]
    drug_units: Vec<DrugUnitBody>,
}

/// A drug unit (剤).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrugUnitBody {
    /// `internal` (内服: quantities per day, for `days` days), `as_needed`
    /// (頓服: quantities per dose, `days` doses) or `external` (外用:
    /// quantities dispensed, once).
    kind: UnitKind,
    /// Days (internal) or doses (as needed), 1 to 365; left out for
    /// external.
    #[schema(minimum = 1, maximum = 365)]
    #[serde(default, deserialize_with = "optional_whole_number")]
    days: Option<i64>,
    /// The unit's drugs, 1 to 20: codes of drugs in the master copy valid
    /// on the visit's date, each with its quantity per day (dose,
    /// dispensing) in units of its unit price.
    #[schema(min_items = 1, max_items = 20)]
    drugs: Vec<ItemBody>,
}

/// A disease code of the master copy: 1 to 20 letters or digits.
#[derive(utoipa::ToSchema)]
#[schema(pattern = "^[0-9A-Za-z]{1,20}$")]
#[allow(dead_code)]
struct DiseaseCode(String);

/// `POST /v1/encounters` (accepts `Idempotency-Key`).
#[utoipa::path(post, path = "/v1/encounters", operation_id = "create_encounter", tag = "encounters", request_body = NewEncounterBody, params(("Idempotency-Key" = Option<String>, Header, description = "1 to 200 visible ASCII characters chosen by the client, new for each new request: a retry with the same key and body within `clinic.idempotency_ttl_s` replays the first response instead of writing again; the same key with another body is refused (422)", pattern = "^[!-~]{1,200}$")), responses((status = 201, description = "Priced from the clinic's master copy valid on the date", body = Encounter), (status = 404, description = "The patient named is not this clinic's", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Conflict", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&state, &req, "POST /v1/encounters", &body)?;
    let input: NewEncounterBody = parse(&body)?;
    let line = |i: ItemBody| VisitLine {
        code: i.code,
        quantity: i.quantity,
    };
    let lines = input.items.into_iter().map(line);
    let units = input.drug_units.into_iter().map(|u| VisitUnit {
        kind: u.kind,
        days: u.days,
        drugs: u.drugs.into_iter().map(line).collect(),
    });
    let visit = NewVisit::parse(
        input.patient_id,
        input.date,
        input.department,
        input.doctor,
        input.notes,
        input.diagnoses,
        lines.collect(),
        units.collect(),
    )?;
    let conn = conn(&state, &tenant, shard).await?;
    let written = record_visit(&conn, key, &state.master_cache, tenant.id, visit).await?;
    Ok(respond(written))
}

/// `GET /v1/encounters/{id}`
#[utoipa::path(get, path = "/v1/encounters/{id}", operation_id = "get_encounter", tag = "encounters", params(("id" = uuid::Uuid, Path, description = "The encounter's id")), responses((status = 200, body = Encounter)), security(("clinic_key" = [])))]
pub async fn show(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "encounter")?;
    let conn = conn(&state, &tenant, shard).await?;
    let encounter = encounters::get(&conn, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no encounter {id}")))?;
    Ok(HttpResponse::Ok().json(encounter))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    patient_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/encounters?patient_id=&from=&to=&limit=&cursor=`
#[utoipa::path(get, path = "/v1/encounters", operation_id = "list_encounters", tag = "encounters", params(("patient_id" = Option<uuid::Uuid>, Query, description = "Only this patient's visits"), ("from" = Option<chrono::NaiveDate>, Query, description = "Only visits on or after this day"), ("to" = Option<chrono::NaiveDate>, Query, description = "Only visits on or before this day"), ("limit" = Option<i64>, Query, description = "1 to 200, default 50", minimum = 1, maximum = 200), ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page; absent for the first page")), responses((status = 200, body = EncounterPage)), security(("clinic_key" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let mut errors = Vec::new();
    let mut date = |field: &str, value: Option<&str>| {
        value.and_then(|v| {
            parse_date(v).or_else(|| {
                errors.push(FieldError::new(field, "must be a date (YYYY-MM-DD)"));
                None
            })
        })
    };
    let from = date("from", query.from.as_deref());
    let to = date("to", query.to.as_deref());
    let patient = query.patient_id.as_deref().and_then(|p| {
        Uuid::parse_str(p).ok().or_else(|| {
            errors.push(FieldError::new("patient_id", "must be a patient id"));
            None
        })
    });
    let limit = parse_limit(query.limit.as_deref(), 50, 200, &mut errors);
    let after = cursor_after(query.cursor.as_deref(), 2, &mut errors, |p| {
        Some((parse_date(&p[0])?, Uuid::parse_str(&p[1]).ok()?))
    });
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let conn = conn(&state, &tenant, shard).await?;
    let found = encounters::list(&conn, patient, from, to, after, limit).await?;
    let next_cursor = next_cursor(&found, limit, |e| [e.date.to_string(), e.id.to_string()]);
    Ok(HttpResponse::Ok().json(EncounterPage {
        encounters: found,
        next_cursor,
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoidBody {
    /// Why the visit is voided, at most 500 characters.
    #[schema(max_length = 500)]
    reason: Option<String>,
}

/// `POST /v1/encounters/{id}/void`: it no longer counts anywhere; refused
/// (`409`) once a confirmed claim holds it.
#[utoipa::path(post, path = "/v1/encounters/{id}/void", operation_id = "void_encounter", tag = "encounters", request_body(content = Option<VoidBody>), params(("id" = uuid::Uuid, Path, description = "The encounter's id")), responses((status = 200, body = Encounter), (status = 409, description = "Conflict", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
pub async fn void(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    id: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "encounter")?;
    let input: VoidBody = match optional_json(&req, &body)? {
        Some(body) if !body.is_null() => parse(&body)?,
        _ => VoidBody::default(),
    };
    let conn = conn(&state, &tenant, shard).await?;
    Ok(respond(void_visit(&conn, id, input.reason).await?))
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
/// How a payment was made.
pub enum Method {
    Cash,
    Card,
    Other,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPaymentBody {
    /// The visit paid for (from `POST /v1/encounters`); not voided.
    encounter_id: Uuid,
    /// Yen paid, at least 1 and at most what the visit still owes.
    #[schema(minimum = 1, maximum = 2147483647)]
    #[serde(deserialize_with = "whole_number")]
    amount_yen: i64,
    /// How it was paid.
    method: Method,
}

/// `POST /v1/payments` (accepts `Idempotency-Key`).
#[utoipa::path(post, path = "/v1/payments", operation_id = "create_payment", tag = "payments", request_body = NewPaymentBody, params(("Idempotency-Key" = Option<String>, Header, description = "1 to 200 visible ASCII characters chosen by the client, new for each new request: a retry with the same key and body within `clinic.idempotency_ttl_s` replays the first response instead of writing again; the same key with another body is refused (422)", pattern = "^[!-~]{1,200}$")), responses((status = 201, body = Payment), (status = 404, description = "The encounter named is not this clinic's", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The encounter is voided, or the amount exceeds what it still owes", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
pub async fn pay(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&state, &req, "POST /v1/payments", &body)?;
    let input: NewPaymentBody = parse(&body)?;
    let method = match input.method {
        Method::Cash => PaymentMethod::Cash,
        Method::Card => PaymentMethod::Card,
        Method::Other => PaymentMethod::Other,
    };
    let payment = NewPayment::parse(input.encounter_id, input.amount_yen, method)?;
    let conn = conn(&state, &tenant, shard).await?;
    Ok(respond(pay_visit(&conn, key, payment).await?))
}
