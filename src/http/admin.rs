//! Admin handlers under `/admin`: tenants and their API keys.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AdminCaller, ApiError, AppState, FieldError};
use crate::pools::{DbError, Role};
use crate::tenancy::audit;
use crate::tenancy::{
    create_tenant as provision, CreateTenantError, Registry, Slug, TenantRecord, TenantStatus,
};

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
    .await
    .map_err(|e| match e {
        CreateTenantError::SlugTaken(_) | CreateTenantError::SchemaExists(_) => {
            ApiError::Conflict(e.to_string())
        }
        CreateTenantError::UnknownCluster(_) => ApiError::validation("cluster", e.to_string()),
        CreateTenantError::UnknownRelease(_) => {
            ApiError::validation("master_release", e.to_string())
        }
        CreateTenantError::Db(e) => e.into(),
        CreateTenantError::Migrate(e) => ApiError::Internal(e.into()),
    })?;
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
    let tenant = find(state, slug).await?;
    if tenant.status == TenantStatus::Deleted {
        return Err(ApiError::Conflict(format!("tenant `{slug}` is deleted")));
    }
    let mut client = state.pools.control(Role::Admin).await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let record = Registry::set_status(&tx, &tenant.slug, status)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no tenant `{slug}`")))?;
    let action = match status {
        TenantStatus::Active => "tenant.resume",
        TenantStatus::Suspended => "tenant.suspend",
        TenantStatus::Deleted => "tenant.delete",
    };
    audit::record(&tx, &caller.actor, action, Some(record.slug.as_str()), None).await?;
    tx.commit().await.map_err(DbError::from)?;
    state.keys.invalidate_all();
    tracing::info!(tenant = %record.slug, status = status.as_str(), "tenant status changed");
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

#[derive(Serialize)]
struct IssuedKeyView {
    id: Uuid,
    /// Shown once; only its hash is stored.
    key: String,
    prefix: String,
    label: Option<String>,
    created_at: DateTime<Utc>,
}

/// `POST /admin/tenants/{slug}/api-keys` (the body is optional).
pub async fn issue_key(
    caller: AdminCaller,
    state: web::Data<AppState>,
    slug: web::Path<String>,
    body: Option<web::Json<NewKey>>,
) -> Result<HttpResponse, ApiError> {
    let label = body.map(|b| b.into_inner()).unwrap_or_default().label;
    if label.as_ref().is_some_and(|l| l.chars().count() > 100) {
        return Err(ApiError::validation(
            "label",
            "must be at most 100 characters",
        ));
    }
    let tenant = find(&state, &slug).await?;
    if tenant.status == TenantStatus::Deleted {
        return Err(ApiError::Conflict(format!("tenant `{slug}` is deleted")));
    }
    let key = state.keys.secrets().issue();
    let mut client = state.pools.control(Role::Admin).await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let created_at = Registry::insert_key(&tx, tenant.id, &key, label.as_deref()).await?;
    let detail = serde_json::json!({"key_id": key.id, "prefix": key.prefix});
    audit::record(
        &tx,
        &caller.actor,
        "key.issue",
        Some(tenant.slug.as_str()),
        Some(detail),
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    tracing::info!(tenant = %tenant.slug, key_id = %key.id, "api key issued");
    Ok(HttpResponse::Created().json(IssuedKeyView {
        id: key.id,
        key: key.secret,
        prefix: key.prefix,
        label,
        created_at,
    }))
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
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let tenant = find(&state, &slug).await?;
    let mut client = state.pools.control(Role::Admin).await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    if !Registry::revoke_key(&tx, tenant.id, id).await? {
        return Err(not_found());
    }
    let detail = serde_json::json!({"key_id": id});
    audit::record(
        &tx,
        &caller.actor,
        "key.revoke",
        Some(tenant.slug.as_str()),
        Some(detail),
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    state.keys.invalidate_all();
    tracing::info!(tenant = %tenant.slug, key_id = %id, "api key revoked");
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
