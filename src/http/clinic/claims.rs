//! `/v1/claims`: monthly claims, their confirmation and export.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{conn, parse_id};
use crate::db::claims::{self, Claim, ConfirmOutcome, EXPORT_COLUMNS};
use crate::db::encounters::Encounter;
use crate::http::body::{parse, stored, write_once};
#[allow(unused_imports)]
use crate::http::error::Problem;
use crate::http::{ApiError, AppState, Clinic};

/// A month's claims.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClaimList {
    /// The month, `YYYY-MM`.
    month: String,
    /// The month's claims: one per patient and insurer.
    claims: Vec<Claim>,
}

/// A claim with the encounters it holds.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClaimWithEncounters {
    #[serde(flatten)]
    claim: Claim,
    /// The visits the claim sums.
    encounters: Vec<Encounter>,
}

/// The first day of a `YYYY-MM` month.
fn parse_month(text: &str) -> Result<NaiveDate, ApiError> {
    let bad = || ApiError::validation("month", "must be a month (YYYY-MM)");
    if text.len() != 7 {
        return Err(bad());
    }
    let date = NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d").map_err(|_| bad())?;
    if date.format("%Y-%m").to_string() != text {
        return Err(bad());
    }
    Ok(date)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateBody {
    /// The month to claim, `YYYY-MM`.
    #[schema(pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$")]
    month: String,
}

/// `POST /v1/claims/generate {"month"}`: replaces the month's drafts.
#[utoipa::path(post, path = "/v1/claims/generate", operation_id = "generate_claims", tag = "claims", request_body = GenerateBody, responses((status = 200, description = "The month's draft claims, regenerated", body = ClaimList), (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"), (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Validation failed: `errors` names the fields", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
pub async fn generate(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let input: GenerateBody = parse(&body)?;
    let month = parse_month(&input.month)?;
    let conn = conn(&state, &tenant, shard).await?;
    write_once(&conn, None, async |tx| {
        let drafts = claims::generate(tx, month).await?;
        stored(
            StatusCode::OK,
            &ClaimList {
                month: input.month,
                claims: drafts,
            },
            None,
        )
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonthQuery {
    month: String,
}

/// `GET /v1/claims?month=`
#[utoipa::path(get, path = "/v1/claims", operation_id = "list_claims", tag = "claims", params(("month" = String, Query, description = "The month, YYYY-MM", pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$")), responses((status = 200, body = ClaimList), (status = 422, description = "Validation failed: `errors` names the fields", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    query: web::Query<MonthQuery>,
) -> Result<HttpResponse, ApiError> {
    let month = parse_month(&query.month)?;
    let conn = conn(&state, &tenant, shard).await?;
    let found = claims::list(&conn, month).await?;
    Ok(HttpResponse::Ok().json(ClaimList {
        month: query.into_inner().month,
        claims: found,
    }))
}

/// `GET /v1/claims/{id}`: the claim with its encounters.
#[utoipa::path(get, path = "/v1/claims/{id}", operation_id = "get_claim", tag = "claims", params(("id" = uuid::Uuid, Path, description = "The claim's id")), responses((status = 200, body = ClaimWithEncounters), (status = 404, description = "No such object in this clinic", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
pub async fn show(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "claim")?;
    let conn = conn(&state, &tenant, shard).await?;
    let (claim, encounters) = claims::get(&conn, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no claim {id}")))?;
    Ok(HttpResponse::Ok().json(ClaimWithEncounters { claim, encounters }))
}

/// `POST /v1/claims/{id}/confirm`: the claim and its encounters are final.
#[utoipa::path(post, path = "/v1/claims/{id}/confirm", operation_id = "confirm_claim", tag = "claims", params(("id" = uuid::Uuid, Path, description = "The claim's id")), responses((status = 200, body = Claim), (status = 404, description = "No such object in this clinic", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Conflict", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
pub async fn confirm(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "claim")?;
    let conn = conn(&state, &tenant, shard).await?;
    write_once(&conn, None, async |tx| {
        match claims::confirm(tx, id).await? {
            ConfirmOutcome::NotFound => Err(ApiError::NotFound(format!("no claim {id}"))),
            ConfirmOutcome::AlreadyConfirmed => Err(ApiError::Conflict(format!(
                "claim {id} is already confirmed"
            ))),
            ConfirmOutcome::Confirmed(claim) => stored(StatusCode::OK, &claim, None),
        }
    })
    .await
}

/// `GET /v1/claims/export?month=`: the month's confirmed claims as CSV.
#[utoipa::path(get, path = "/v1/claims/export", operation_id = "export_claims", tag = "claims", params(("month" = String, Query, description = "The month, YYYY-MM", pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$")), responses((status = 200, description = "Confirmed claims as CSV: claim_id, month, insurer_number, insurance_symbol, insurance_number, patient_id, patient_name, patient_name_kana, birth_date, sex, visit_days, total_points, charge_yen, diagnoses (space-separated codes)", content_type = "text/csv", body = String), (status = 422, description = "Validation failed: `errors` names the fields", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
pub async fn export(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    query: web::Query<MonthQuery>,
) -> Result<HttpResponse, ApiError> {
    let month = parse_month(&query.month)?;
    let conn = conn(&state, &tenant, shard).await?;
    let rows = claims::export(&conn, month).await?;
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<&str> = EXPORT_COLUMNS.to_vec();
    header.push("diagnoses");
    let written = writer
        .write_record(&header)
        .and_then(|_| rows.iter().try_for_each(|row| writer.write_record(row)));
    written.map_err(|e| ApiError::Internal(e.into()))?;
    let body = writer
        .into_inner()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("{e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"claims-{}.csv\"", query.month),
        ))
        .body(body))
}
