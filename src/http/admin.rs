//! Admin handlers under `/admin`: tenants and their API keys.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AdminCaller, ApiError, AppState, FieldError};
use crate::ops;
use crate::pools::Role;
use crate::tenancy::{create_tenant as provision, Registry, Slug, TenantRecord, TenantStatus};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    slug: String,
    name: String,
    cluster: Option<String>,
    /// The master release to copy (default: the newest).
    master_release: Option<String>,
}

/// `POST /admin/tenants`
pub async fn create_tenant(
    caller: AdminCaller,
    state: web::Data<AppState>,
    body: web::Json<NewTenant>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut errors = Vec::new();
    let slug = Slug::parse(&body.slug)
        .map_err(|e| errors.push(FieldError::new("slug", e.to_string())))
        .ok();
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        errors.push(FieldError::new("name", "must be 1 to 200 characters"));
    }
    let cluster = match body.cluster {
        Some(cluster) => cluster,
        None => crate::tenancy::place(&state.pools, &state.settings).await?,
    };
    if !state.pools.has_cluster(&cluster) {
        errors.push(FieldError::new(
            "cluster",
            format!("no cluster named `{cluster}`"),
        ));
    }
    let Some(slug) = slug.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let record = provision(
        &state.pools,
        &slug,
        name,
        &cluster,
        body.master_release.as_deref(),
        &caller.actor,
    )
    .await?;
    tracing::info!(tenant = %record.slug, cluster = %record.cluster, "tenant created");
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/admin/tenants/{}", record.slug)))
        .json(record))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize)]
struct TenantPage {
    tenants: Vec<TenantRecord>,
    /// Pass as `after` for the next page; absent on the last one.
    next_after: Option<String>,
}

/// `GET /admin/tenants?after=&limit=`
pub async fn list_tenants(
    _: AdminCaller,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("limit", "must be between 1 and 1000"));
    }
    let client = state.pools.control(Role::Admin).await?;
    let tenants = Registry::list(&client, query.after.as_deref(), limit).await?;
    let next_after = (tenants.len() as i64 == limit)
        .then(|| tenants.last().map(|t| t.slug.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(TenantPage {
        tenants,
        next_after,
    }))
}

/// A path's slug; one that cannot be a slug names no tenant: `404`.
fn path_slug(slug: &str) -> Result<Slug, ApiError> {
    Slug::parse(slug).map_err(|_| ApiError::NotFound(format!("no tenant `{slug}`")))
}

/// The tenant named by a path's slug; anything else is `404`.
pub(super) async fn find(state: &AppState, slug: &str) -> Result<TenantRecord, ApiError> {
    let not_found = || ApiError::NotFound(format!("no tenant `{slug}`"));
    let slug = Slug::parse(slug).map_err(|_| not_found())?;
    let client = state.pools.control(Role::Admin).await?;
    Registry::find(&client, &slug).await?.ok_or_else(not_found)
}

/// `GET /admin/tenants/{slug}`
pub async fn show_tenant(
    _: AdminCaller,
    state: web::Data<AppState>,
    slug: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(find(&state, &slug).await?))
}

async fn change_status(
    state: &AppState,
    caller: &AdminCaller,
    slug: &str,
    status: TenantStatus,
) -> Result<HttpResponse, ApiError> {
    let record = ops::set_status(&state.pools, &path_slug(slug)?, status, &caller.actor).await?;
    state.keys.invalidate_all();
    Ok(HttpResponse::Ok().json(record))
}

/// `POST /admin/tenants/{slug}/suspend`
pub async fn suspend_tenant(
    caller: AdminCaller,
    state: web::Data<AppState>,
    slug: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    change_status(&state, &caller, &slug, TenantStatus::Suspended).await
}

/// `POST /admin/tenants/{slug}/resume`
pub async fn resume_tenant(
    caller: AdminCaller,
    state: web::Data<AppState>,
    slug: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    change_status(&state, &caller, &slug, TenantStatus::Active).await
}

/// `DELETE /admin/tenants/{slug}`: a soft delete. Its keys stop working at
/// once; `recept tenants purge` drops its schema after the grace period.
pub async fn delete_tenant(
    caller: AdminCaller,
    state: web::Data<AppState>,
    slug: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    change_status(&state, &caller, &slug, TenantStatus::Deleted).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    label: Option<String>,
}

/// `POST /admin/tenants/{slug}/api-keys` (the body is optional).
pub async fn issue_key(
    caller: AdminCaller,
    state: web::Data<AppState>,
    slug: web::Path<String>,
    body: Option<web::Json<NewKey>>,
) -> Result<HttpResponse, ApiError> {
    let label = body.map(|b| b.into_inner()).unwrap_or_default().label;
    let slug = path_slug(&slug)?;
    let key = ops::issue_key(
        &state.pools,
        state.keys.secrets(),
        &slug,
        label,
        &caller.actor,
    )
    .await?;
    Ok(HttpResponse::Created().json(key))
}

/// `GET /admin/tenants/{slug}/api-keys`: keys without their secrets.
pub async fn list_keys(
    _: AdminCaller,
    state: web::Data<AppState>,
    slug: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = find(&state, &slug).await?;
    let client = state.pools.control(Role::Admin).await?;
    let keys = Registry::list_keys(&client, tenant.id).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "keys": keys })))
}

/// `DELETE /admin/tenants/{slug}/api-keys/{id}`
pub async fn revoke_key(
    caller: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (slug, id) = path.into_inner();
    let not_found = || ApiError::NotFound(format!("tenant `{slug}` has no live key `{id}`"));
    let key_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let slug = Slug::parse(&slug).map_err(|_| not_found())?;
    ops::revoke_key(&state.pools, &slug, key_id, &caller.actor).await?;
    state.keys.invalidate_all();
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /admin/migrations`: the latest run and where every tenant is.
pub async fn migrations(
    _: AdminCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let client = state.pools.control(Role::Admin).await?;
    Ok(HttpResponse::Ok().json(crate::migrate::status(&client).await?))
}

/// A clinic's identity as an admin sets it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileBody {
    name: String,
    institution_code: String,
    prefecture_code: String,
    fee_table: Option<String>,
    address: Option<String>,
    phone: Option<String>,
}

/// `GET /admin/tenants/{slug}/profile`
pub async fn profile(
    _: AdminCaller,
    state: web::Data<AppState>,
    slug: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let profile = ops::clinic_profile(&state.pools, &path_slug(&slug)?).await?;
    Ok(HttpResponse::Ok().json(profile))
}

/// `PUT /admin/tenants/{slug}/profile`: the medical institution code (7
/// digits, its check digit over prefecture and fee table), the prefecture
/// number, the fee table (`medical`), name, address and phone.
pub async fn set_profile(
    caller: AdminCaller,
    state: web::Data<AppState>,
    slug: web::Path<String>,
    body: web::Json<ProfileBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let input = ops::ProfileInput {
        name: body.name,
        institution_code: body.institution_code,
        prefecture_code: body.prefecture_code,
        fee_table: body.fee_table,
        address: body.address,
        phone: body.phone,
    };
    let profile = ops::set_profile(&state.pools, &path_slug(&slug)?, input, &caller.actor).await?;
    Ok(HttpResponse::Ok().json(profile))
}
