//! `/v1/patients/{id}/diseases`: a patient's disease list (傷病名).

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::Value;

use super::{conn, parse_id};
use crate::clinic::{
    add_disease, change_disease, remove_disease, DiseaseChange, NewDisease, Outcome,
};
use crate::db::diseases::{self, Disease};
use crate::http::body::{double_option, idempotency_key, parse, respond};
use crate::http::error::Problem;
use crate::http::{ApiError, AppState, Clinic};

/// How a disease ended, or that it did not.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiseaseOutcome {
    /// 継続.
    Continuing,
    /// 治ゆ.
    Cured,
    /// 死亡.
    Died,
    /// 中止.
    Stopped,
}

impl From<DiseaseOutcome> for Outcome {
    fn from(outcome: DiseaseOutcome) -> Outcome {
        match outcome {
            DiseaseOutcome::Continuing => Outcome::Continuing,
            DiseaseOutcome::Cured => Outcome::Cured,
            DiseaseOutcome::Died => Outcome::Died,
            DiseaseOutcome::Stopped => Outcome::Stopped,
        }
    }
}

/// A disease to add to the patient's list.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDiseaseBody {
    /// A disease code (傷病名コード) of the clinic's master copy valid on
    /// `start_date`: 1 to 20 letters or digits.
    #[schema(pattern = "^[0-9A-Za-z]{1,20}$", example = "8833421")]
    code: String,
    /// The day the disease started (診療開始日).
    start_date: NaiveDate,
    /// `continuing` (the default), `cured`, `died` or `stopped`.
    outcome: Option<DiseaseOutcome>,
    /// The day of the outcome: required unless continuing, not before
    /// `start_date`.
    outcome_date: Option<NaiveDate>,
    /// The main disease (主病); false when left out.
    #[serde(default)]
    main: bool,
    /// Suspected (疑い); false when left out.
    #[serde(default)]
    suspected: bool,
}

/// A change to a disease: fields left out keep their value.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchDiseaseBody {
    /// A new outcome; back to `continuing` clears the outcome date.
    outcome: Option<DiseaseOutcome>,
    /// The outcome's day, or null to clear it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<NaiveDate>)]
    outcome_date: Option<Option<NaiveDate>>,
    /// The main-disease flag.
    main: Option<bool>,
    /// The suspected flag.
    suspected: Option<bool>,
}

/// The patient's diseases, by start date.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DiseaseList {
    /// The patient's diseases, by start date.
    diseases: Vec<Disease>,
}

/// `GET /v1/patients/{id}/diseases`
#[utoipa::path(get, path = "/v1/patients/{id}/diseases", operation_id = "list_patient_diseases", tag = "patients", params(("id" = uuid::Uuid, Path, description = "The patient's id")), responses((status = 200, body = DiseaseList)), security(("clinic_key" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "patient")?;
    let conn = conn(&state, &tenant, shard).await?;
    let diseases = diseases::list(&conn, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no patient {id}")))?;
    Ok(HttpResponse::Ok().json(DiseaseList { diseases }))
}

/// `POST /v1/patients/{id}/diseases` (accepts `Idempotency-Key`)
#[utoipa::path(post, path = "/v1/patients/{id}/diseases", operation_id = "add_patient_disease", tag = "patients", request_body = NewDiseaseBody, params(("id" = uuid::Uuid, Path, description = "The patient's id"), ("Idempotency-Key" = Option<String>, Header, description = "1 to 200 visible ASCII characters chosen by the client, new for each new request: a retry with the same key and body replays the first response", pattern = "^[!-~]{1,200}$")), responses((status = 201, body = Disease), (status = 409, description = "The patient's list already holds 200 diseases", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
pub async fn add(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let patient = parse_id(&id, "patient")?;
    let key = idempotency_key(&state, &req, "POST /v1/patients/{id}/diseases", &body)?;
    let input: NewDiseaseBody = parse(&body)?;
    let disease = NewDisease {
        code: input.code,
        start_date: input.start_date,
        outcome: input.outcome.map(Outcome::from),
        outcome_date: input.outcome_date,
        main: input.main,
        suspected: input.suspected,
    };
    let conn = conn(&state, &tenant, shard).await?;
    Ok(respond(
        add_disease(&conn, key, &state.master_cache, tenant.id, patient, disease).await?,
    ))
}

/// `PATCH /v1/patients/{id}/diseases/{disease_id}`
#[utoipa::path(patch, path = "/v1/patients/{id}/diseases/{disease_id}", operation_id = "update_patient_disease", tag = "patients", request_body = PatchDiseaseBody, params(("id" = uuid::Uuid, Path, description = "The patient's id"), ("disease_id" = uuid::Uuid, Path, description = "The disease entry's id")), responses((status = 200, body = Disease)), security(("clinic_key" = [])))]
pub async fn update(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    ids: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let patient = parse_id(&ids.0, "patient")?;
    let id = parse_id(&ids.1, "disease")?;
    let patch: PatchDiseaseBody = parse(&body)?;
    let change = DiseaseChange {
        outcome: patch.outcome.map(Outcome::from),
        outcome_date: patch.outcome_date,
        main: patch.main,
        suspected: patch.suspected,
    };
    let conn = conn(&state, &tenant, shard).await?;
    Ok(respond(change_disease(&conn, patient, id, change).await?))
}

/// `DELETE /v1/patients/{id}/diseases/{disease_id}`: removes an entry made
/// by mistake (an ended disease is kept with its outcome instead); answers
/// what was removed.
#[utoipa::path(delete, path = "/v1/patients/{id}/diseases/{disease_id}", operation_id = "delete_patient_disease", tag = "patients", params(("id" = uuid::Uuid, Path, description = "The patient's id"), ("disease_id" = uuid::Uuid, Path, description = "The disease entry's id")), responses((status = 200, body = Disease), (status = 404, description = "No such disease", body = Problem, content_type = "application/problem+json")), security(("clinic_key" = [])))]
pub async fn delete(
    state: web::Data<AppState>,
    Clinic(tenant, shard): Clinic,
    ids: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let patient = parse_id(&ids.0, "patient")?;
    let id = parse_id(&ids.1, "disease")?;
    let conn = conn(&state, &tenant, shard).await?;
    Ok(respond(remove_disease(&conn, patient, id).await?))
}
