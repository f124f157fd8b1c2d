//! `/v1/encounters` and `/v1/payments`: visits priced from the tenant's
//! master copy, voids, and payments against them.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::{conn, parse_date, parse_id, parse_limit};
use crate::billing::pricing::{price_lines, resolve_diagnoses, LineRequest};
use crate::billing::{patient_charge, UNINSURED_COPAY_PERCENT};
use crate::db::claims;
use crate::db::encounters::{self, Encounter, NewEncounter, VoidOutcome};
use crate::db::payments::{self, Payment, PaymentOutcome};
use crate::db::{decode_cursor, encode_cursor};
use crate::http::body::{optional_json, parse, stored, whole_number, write_once, Idempotency};
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

const MAX_LINES: usize = 100;
const MAX_DIAGNOSES: usize = 20;
const MAX_QUANTITY: i64 = 9_999;

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
    /// What was done and given: 1 to 100 lines.
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<ItemBody>,
}

/// A disease code of the master copy: 1 to 20 letters or digits.
#[derive(utoipa::ToSchema)]
#[schema(pattern = "^[0-9A-Za-z]{1,20}$")]
#[allow(dead_code)]
struct DiseaseCode(String);

/// Whether `code` is shaped like a master code (as the release import
/// requires): 1 to 20 ASCII letters or digits.
fn is_code(code: &str) -> bool {
    (1..=20).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn short(errors: &mut Vec<FieldError>, field: &str, value: &Option<String>, max: usize) {
    if value.as_ref().is_some_and(|v| v.chars().count() > max) {
        errors.push(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
}

/// `POST /v1/encounters` (accepts `Idempotency-Key`).
#[utoipa::path(post, path = "/v1/encounters", operation_id = "create_encounter", tag = "encounters", request_body = NewEncounterBody, params(("Idempotency-Key" = Option<String>, Header, description = "1 to 200 visible ASCII characters chosen by the client, new for each new request: a retry with the same key and body within `clinic.idempotency_ttl_s` replays the first response instead of writing again; the same key with another body is refused (422)", pattern = "^[!-~]{1,200}$")), responses((status = 201, description = "Priced from the clinic's master copy valid on the date", body = Encounter), (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"), (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such object in this clinic", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Conflict", body = Problem, content_type = "application/problem+json"), (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Validation failed: `errors` names the fields", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let idempotency = Idempotency::of(&req, "POST /v1/encounters", &body)?;
    let input: NewEncounterBody = parse(&body)?;
    let mut errors = Vec::new();
    if input.items.is_empty() || input.items.len() > MAX_LINES {
        errors.push(FieldError::new(
            "items",
            format!("must have 1 to {MAX_LINES} lines"),
        ));
    }
    for (i, item) in input.items.iter().enumerate() {
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            errors.push(FieldError::new(
                format!("items/{i}/quantity"),
                format!("must be 1 to {MAX_QUANTITY}"),
            ));
        }
        if !is_code(&item.code) {
            errors.push(FieldError::new(
                format!("items/{i}/code"),
                "must be 1 to 20 letters or digits",
            ));
        }
    }
    if input.diagnoses.len() > MAX_DIAGNOSES {
        errors.push(FieldError::new(
            "diagnoses",
            format!("at most {MAX_DIAGNOSES}"),
        ));
    }
    for (i, code) in input.diagnoses.iter().enumerate() {
        if !is_code(code) {
            errors.push(FieldError::new(
                format!("diagnoses/{i}"),
                "must be 1 to 20 letters or digits",
            ));
        }
    }
    short(&mut errors, "department", &input.department, 50);
    short(&mut errors, "doctor", &input.doctor, 50);
    short(&mut errors, "notes", &input.notes, 2000);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let lines: Vec<LineRequest> = input
        .items
        .iter()
        .map(|i| LineRequest {
            code: i.code.clone(),
            quantity: i.quantity,
        })
        .collect();
    let mut codes: Vec<&str> = lines.iter().map(|l| l.code.as_str()).collect();
    codes.extend(input.diagnoses.iter().map(String::as_str));

    let conn = conn(&state, &tenant, shard).await?;
    let cache = &state.master_cache;
    write_once(&conn, idempotency, async |tx| {
        // The copy's release (locked against rollouts) and the patient's
        // insurance on the day, in one round trip.
        let (release, insurance) = futures::try_join!(
            encounters::master_release_for_pricing(tx),
            encounters::patient_insurance_on(tx, input.patient_id, input.date),
        )?;
        let insurance = insurance
            .ok_or_else(|| ApiError::NotFound(format!("no patient {}", input.patient_id)))?;
        let release_key = release.as_deref().unwrap_or("");
        let items = cache.lookup(tx, tenant.id, release_key, &codes).await?;
        let priced = price_lines(input.date, &lines, &items);
        let diagnoses = resolve_diagnoses(input.date, &input.diagnoses, &items);
        let (priced, diagnoses) =
            match (priced, diagnoses) {
                (Ok(p), Ok(d)) => (p, d),
                (p, d) => {
                    let mut errors: Vec<FieldError> = Vec::new();
                    if let Err(problems) = p {
                        errors.extend(problems.into_iter().map(|p| {
                            FieldError::new(format!("items/{}/code", p.index), p.message)
                        }));
                    }
                    if let Err(problems) = d {
                        errors.extend(
                            problems.into_iter().map(|p| {
                                FieldError::new(format!("diagnoses/{}", p.index), p.message)
                            }),
                        );
                    }
                    return Err(ApiError::Validation(errors));
                }
            };
        let total_points: i64 = priced.iter().map(|l| l.points).sum();
        let copay_rate = insurance
            .as_ref()
            .map_or(UNINSURED_COPAY_PERCENT, |i| i64::from(i.copay_rate));
        let charge_yen = patient_charge(total_points, copay_rate);
        let id = encounters::insert(
            tx,
            &NewEncounter {
                patient_id: input.patient_id,
                date: input.date,
                department: input.department.as_deref(),
                doctor: input.doctor.as_deref(),
                notes: input.notes.as_deref(),
                insurance: insurance.as_ref(),
                copay_rate: copay_rate as i16,
                total_points,
                charge_yen,
                master_release: release.as_deref(),
                diagnoses: &diagnoses,
                lines: &priced,
            },
        )
        .await?;
        let encounter = encounters::get_in(tx, id)
            .await?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("encounter {id} vanished")))?;
        stored(StatusCode::CREATED, &encounter, None)
    })
    .await
}

/// `GET /v1/encounters/{id}`
#[utoipa::path(get, path = "/v1/encounters/{id}", operation_id = "get_encounter", tag = "encounters", params(("id" = uuid::Uuid, Path, description = "The encounter's id")), responses((status = 200, body = Encounter), (status = 404, description = "No such object in this clinic", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
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
#[utoipa::path(get, path = "/v1/encounters", operation_id = "list_encounters", tag = "encounters", params(("patient_id" = Option<uuid::Uuid>, Query, description = "Only this patient's visits"), ("from" = Option<chrono::NaiveDate>, Query, description = "Only visits on or after this day"), ("to" = Option<chrono::NaiveDate>, Query, description = "Only visits on or before this day"), ("limit" = Option<i64>, Query, description = "1 to 200, default 50", minimum = 1, maximum = 200), ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page; absent for the first page")), responses((status = 200, body = EncounterPage), (status = 422, description = "Validation failed: `errors` names the fields", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
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
    let after = query
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .and_then(|c| {
            let parsed = decode_cursor(c, 2)
                .and_then(|p| Some((parse_date(&p[0])?, Uuid::parse_str(&p[1]).ok()?)));
            if parsed.is_none() {
                errors.push(FieldError::new(
                    "cursor",
                    "is not a cursor this API returned",
                ));
            }
            parsed
        });
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let conn = conn(&state, &tenant, shard).await?;
    let found = encounters::list(&conn, patient, from, to, after, limit).await?;
    let next_cursor = (found.len() as i64 == limit)
        .then(|| found.last())
        .flatten()
        .map(|e| encode_cursor(&[&e.date.to_string(), &e.id.to_string()]));
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
#[utoipa::path(post, path = "/v1/encounters/{id}/void", operation_id = "void_encounter", tag = "encounters", request_body(content = Option<VoidBody>), params(("id" = uuid::Uuid, Path, description = "The encounter's id")), responses((status = 200, body = Encounter), (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"), (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"), (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such object in this clinic", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Conflict", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Validation failed: `errors` names the fields", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
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
    if input
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 500)
    {
        return Err(ApiError::validation(
            "reason",
            "must be at most 500 characters",
        ));
    }
    let conn = conn(&state, &tenant, shard).await?;
    write_once(&conn, None, async |tx| {
        match encounters::void(tx, id, input.reason.as_deref()).await? {
            VoidOutcome::NotFound => Err(ApiError::NotFound(format!("no encounter {id}"))),
            VoidOutcome::AlreadyVoided => Err(ApiError::Conflict(format!(
                "encounter {id} is already voided"
            ))),
            VoidOutcome::InConfirmedClaim(claim) => Err(ApiError::Conflict(format!(
                "encounter {id} is part of confirmed claim {claim}; it cannot change"
            ))),
            VoidOutcome::Voided => {
                claims::release_encounter(tx, id).await?;
                let encounter = encounters::get_in(tx, id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("no encounter {id}")))?;
                stored(StatusCode::OK, &encounter, None)
            }
        }
    })
    .await
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
#[utoipa::path(post, path = "/v1/payments", operation_id = "create_payment", tag = "payments", request_body = NewPaymentBody, params(("Idempotency-Key" = Option<String>, Header, description = "1 to 200 visible ASCII characters chosen by the client, new for each new request: a retry with the same key and body within `clinic.idempotency_ttl_s` replays the first response instead of writing again; the same key with another body is refused (422)", pattern = "^[!-~]{1,200}$")), responses((status = 201, body = Payment), (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"), (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such object in this clinic", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Conflict", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Validation failed: `errors` names the fields", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
pub async fn pay(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let idempotency = Idempotency::of(&req, "POST /v1/payments", &body)?;
    let input: NewPaymentBody = parse(&body)?;
    let amount = i32::try_from(input.amount_yen)
        .ok()
        .filter(|a| *a > 0)
        .ok_or_else(|| ApiError::validation("amount_yen", "must be a positive number of yen"))?;
    let method = match input.method {
        Method::Cash => "cash",
        Method::Card => "card",
        Method::Other => "other",
    };
    let conn = conn(&state, &tenant, shard).await?;
    write_once(&conn, idempotency, async |tx| {
        match payments::record(tx, input.encounter_id, amount, method).await? {
            PaymentOutcome::NoEncounter => Err(ApiError::NotFound(format!(
                "no encounter {}",
                input.encounter_id
            ))),
            PaymentOutcome::Voided => Err(ApiError::Conflict(format!(
                "encounter {} is voided",
                input.encounter_id
            ))),
            PaymentOutcome::Overpaid { outstanding } => Err(ApiError::validation(
                "amount_yen",
                format!("exceeds what the encounter still owes ({outstanding} yen)"),
            )),
            PaymentOutcome::Recorded(payment) => stored(StatusCode::CREATED, &payment, None),
        }
    })
    .await
}
