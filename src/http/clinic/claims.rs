//! `/v1/claims`: monthly claims, their confirmation and export.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{conn, parse_id};
use crate::clinic::{
    confirm_claim, export_claims_csv, export_claims_uke, generate_claims, ClaimList, Month,
};
use crate::db::claims::{self, Claim};
use crate::db::encounters::Encounter;
use crate::http::body::{parse, respond};
#[allow(unused_imports)]
use crate::http::error::Problem;
use crate::http::{ApiError, AppState, Clinic};
use crate::uke::Payer;

/// A claim with the encounters it holds.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClaimWithEncounters {
    #[serde(flatten)]
    claim: Claim,
    /// The visits the claim sums.
    encounters: Vec<Encounter>,
}

/// A `YYYY-MM` month from the field `month`.
fn parse_month(text: &str) -> Result<Month, ApiError> {
    Month::parse(text).ok_or_else(|| ApiError::validation("month", "must be a month (YYYY-MM)"))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateBody {
    /// The month to claim, `YYYY-MM`.
    #[schema(pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$")]
    month: String,
}

/// `POST /v1/claims/generate {"month"}`: replaces the month's drafts.
#[utoipa::path(post, path = "/v1/claims/generate", operation_id = "generate_claims", tag = "claims", request_body = GenerateBody, responses((status = 200, description = "The month's draft claims, regenerated", body = ClaimList)), security(("clinic_key" = [])))]
pub async fn generate(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let input: GenerateBody = parse(&body)?;
    let month = parse_month(&input.month)?;
    let conn = conn(&state, &tenant, shard).await?;
    Ok(respond(generate_claims(&conn, month).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonthQuery {
    month: String,
}

/// `GET /v1/claims?month=`
#[utoipa::path(get, path = "/v1/claims", operation_id = "list_claims", tag = "claims", params(("month" = String, Query, description = "The month, YYYY-MM", pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$")), responses((status = 200, body = ClaimList)), security(("clinic_key" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    query: web::Query<MonthQuery>,
) -> Result<HttpResponse, ApiError> {
    let month = parse_month(&query.month)?;
    let conn = conn(&state, &tenant, shard).await?;
    let found = claims::list(&conn, month.first_day()).await?;
    Ok(HttpResponse::Ok().json(ClaimList {
        month: month.to_string(),
        claims: found,
    }))
}

/// `GET /v1/claims/{id}`: the claim with its encounters.
#[utoipa::path(get, path = "/v1/claims/{id}", operation_id = "get_claim", tag = "claims", params(("id" = uuid::Uuid, Path, description = "The claim's id")), responses((status = 200, body = ClaimWithEncounters)), security(("clinic_key" = [])))]
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
#[utoipa::path(post, path = "/v1/claims/{id}/confirm", operation_id = "confirm_claim", tag = "claims", params(("id" = uuid::Uuid, Path, description = "The claim's id")), responses((status = 200, body = Claim), (status = 409, description = "Conflict", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
pub async fn confirm(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "claim")?;
    let conn = conn(&state, &tenant, shard).await?;
    Ok(respond(confirm_claim(&conn, id).await?))
}

/// What `GET /v1/claims/export` takes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    month: String,
    format: Option<String>,
    payer: Option<String>,
}

/// `GET /v1/claims/export?month=[&format=uke&payer=]`: the month's
/// confirmed claims as CSV, or as the electronic claims file for a payer.
#[utoipa::path(get, path = "/v1/claims/export", operation_id = "export_claims", tag = "claims", params(("month" = String, Query, description = "The month, YYYY-MM", pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$"), ("format" = Option<String>, Query, description = "`csv` (the default) or `uke`: the electronic claims file (RECEIPTC.UKE, 医科, Shift_JIS, CRLF, ended by 0x1A) of the 記録条件仕様, for one payer", pattern = "^(csv|uke)$"), ("payer" = Option<String>, Query, description = "With `format=uke`, required: `shaho` (社会保険診療報酬支払基金: employee insurances) or `kokuho` (国民健康保険団体連合会: national and late-elderly insurances)", pattern = "^(shaho|kokuho)$")), responses((status = 200, description = "Confirmed claims as CSV: claim_id, month, insurer_number, insurance_symbol, insurance_number, patient_id, patient_name, patient_name_kana, birth_date, sex, visit_days, total_points, charge_yen, diagnoses (space-separated codes); or, with format=uke, the claims file as application/octet-stream", content((String = "text/csv"), (String = "application/octet-stream")))), security(("clinic_key" = [])))]
pub async fn export(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    query: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let month = parse_month(&query.month)?;
    match query.format.as_deref() {
        None | Some("csv") => {}
        Some("uke") => {
            let payer = query
                .payer
                .as_deref()
                .and_then(Payer::parse)
                .ok_or_else(|| {
                    ApiError::validation("payer", "must be `shaho` or `kokuho` with format=uke")
                })?;
            let conn = conn(&state, &tenant, shard).await?;
            let file = export_claims_uke(&conn, month, payer).await?;
            return Ok(HttpResponse::Ok()
                .content_type("application/octet-stream")
                .insert_header((
                    "Content-Disposition",
                    "attachment; filename=\"RECEIPTC.UKE\"",
                ))
                .body(file));
        }
        Some(_) => return Err(ApiError::validation("format", "must be `csv` or `uke`")),
    }
    if query.payer.is_some() {
        return Err(ApiError::validation("payer", "is for format=uke only"));
    }
    let conn = conn(&state, &tenant, shard).await?;
    let body = export_claims_csv(&conn, month).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"claims-{month}.csv\""),
        ))
        .body(body))
}
