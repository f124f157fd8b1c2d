//! The tenant registry through the admin API and the command line.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, unique_slug};

#[tokio::test]
async fn a_tenant_created_by_an_admin_has_its_own_fully_migrated_schema() {
    let app = spawn_app().await;
    let slug = unique_slug("clinic");

    let tenant = app.create_tenant(&slug, "Hinode Clinic").await;

    assert_eq!(tenant["slug"], slug.as_str());
    assert_eq!(tenant["schema"], format!("t_{slug}"));
    assert_eq!(tenant["status"], "active");
    let db = app.db().await;
    let version: i32 = db
        .query_one(
            &format!("SELECT max(version) FROM \"t_{slug}\".refinery_schema_history"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, recept::migrate::latest_tenant_version());
    let name: String = db
        .query_one(&format!("SELECT name FROM \"t_{slug}\".clinic"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "Hinode Clinic");
}

#[tokio::test]
async fn a_tenant_is_listed_and_shown() {
    let app = spawn_app().await;
    let first = unique_slug("aaa");
    let second = unique_slug("bbb");
    app.create_tenant(&first, "First").await;
    app.create_tenant(&second, "Second").await;

    let page: Value = app
        .admin_request(Method::GET, "/admin/tenants?limit=1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(page["tenants"][0]["slug"], first.as_str());
    let next = page["next_after"].as_str().unwrap();
    let rest: Value = app
        .admin_request(Method::GET, &format!("/admin/tenants?after={next}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["tenants"][0]["slug"], second.as_str());

    let shown = app
        .admin_request(Method::GET, &format!("/admin/tenants/{second}"))
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), StatusCode::OK);
    let missing = app
        .admin_request(Method::GET, "/admin/tenants/no_such_tenant")
        .send()
        .await
        .unwrap();
    assert_problem(missing, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_bad_slug_is_refused_and_nothing_is_created() {
    let app = spawn_app().await;
    for slug in [
        "ab",
        "1abc",
        "Clinic",
        "a-b-c",
        "abc'; DROP SCHEMA recept CASCADE; --",
        "abc\"x",
        "../etc",
        "abc%",
        "さくら",
        &"a".repeat(41),
    ] {
        let response = app
            .admin_request(Method::POST, "/admin/tenants")
            .json(&json!({"slug": slug, "name": "x"}))
            .send()
            .await
            .unwrap();
        let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["errors"][0]["field"], "slug", "{slug}");
    }
    let db = app.db().await;
    let tenants: i64 = db
        .query_one("SELECT count(*) FROM recept.tenants", &[])
        .await
        .unwrap()
        .get(0);
    let schemas: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\\_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!((tenants, schemas), (0, 0));
}

#[tokio::test]
async fn a_duplicate_slug_is_a_conflict_even_when_created_concurrently() {
    let app = spawn_app().await;
    let slug = unique_slug("twin");

    let attempts = (0..6).map(|_| {
        app.admin_request(Method::POST, "/admin/tenants")
            .json(&json!({"slug": slug, "name": "Twin"}))
            .send()
    });
    let responses = futures::future::join_all(attempts).await;

    let mut statuses: Vec<u16> = responses
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    statuses.sort();
    assert_eq!(statuses, vec![201, 409, 409, 409, 409, 409]);
    let again = app
        .admin_request(Method::POST, "/admin/tenants")
        .json(&json!({"slug": slug, "name": "Twin"}))
        .send()
        .await
        .unwrap();
    assert_problem(again, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn a_failed_creation_leaves_no_registry_row() {
    let app = spawn_app().await;
    let slug = unique_slug("orphan");
    let db = app.db().await;
    // A schema in the way makes creation fail after the registry insert.
    db.batch_execute(&format!("CREATE SCHEMA \"t_{slug}\""))
        .await
        .unwrap();

    let response = app
        .admin_request(Method::POST, "/admin/tenants")
        .json(&json!({"slug": slug, "name": "Orphan"}))
        .send()
        .await
        .unwrap();

    assert_problem(response, StatusCode::CONFLICT).await;
    let rows: i64 = db
        .query_one(
            "SELECT count(*) FROM recept.tenants WHERE slug = $1",
            &[&slug],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn malformed_and_invalid_bodies_are_problems_not_errors() {
    let app = spawn_app().await;
    let post = |body: &'static str, content_type: &'static str| {
        app.admin_request(Method::POST, "/admin/tenants")
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    assert_problem(
        post("{\"slug\":", "application/json").await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let wrong_type = post("{\"slug\": 5, \"name\": \"x\"}", "application/json")
        .await
        .unwrap();
    assert_problem(wrong_type, StatusCode::UNPROCESSABLE_ENTITY).await;
    let missing = assert_problem(
        post("{\"slug\": \"abcd\"}", "application/json")
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(missing["errors"][0]["field"], "name");
    assert_problem(
        post("slug=abcd", "application/x-www-form-urlencoded")
            .await
            .unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    let huge = format!(
        "{{\"slug\": \"abcd\", \"name\": \"{}\"}}",
        "x".repeat(400_000)
    );
    let too_large = app
        .admin_request(Method::POST, "/admin/tenants")
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_problem(too_large, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let app = spawn_app().await;
    let url = format!("{}/admin/tenants", app.admin);

    let without = app.http.get(&url).send().await.unwrap();
    let wrong = app
        .http
        .get(&url)
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    let prefix = app
        .http
        .get(&url)
        .bearer_auth(&app.admin_token[..app.admin_token.len() - 1])
        .send()
        .await
        .unwrap();

    assert_problem(without, StatusCode::UNAUTHORIZED).await;
    assert_problem(wrong, StatusCode::UNAUTHORIZED).await;
    assert_problem(prefix, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn keys_are_stored_only_as_hashes_and_listed_without_secrets() {
    let app = spawn_app().await;
    let (slug, key) = app.tenant_with_key("hashed").await;

    let db = app.db().await;
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM recept.api_keys k JOIN recept.tenants t ON t.id = k.tenant_id \
             WHERE t.slug = $1 AND k.key_hash = sha256($2::text::bytea)",
            &[&slug, &key],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1);
    let listed = app
        .admin_request(Method::GET, &format!("/admin/tenants/{slug}/api-keys"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains("\"prefix\""));
    assert!(!listed.contains(&key));
}

#[tokio::test]
async fn wrong_methods_and_oversized_uploads_are_problems_too() {
    let app = crate::helpers::spawn_app_with(|s| s.admin.release_limit_bytes = 1024).await;

    let wrong_method = app
        .admin_request(Method::PUT, "/admin/tenants")
        .send()
        .await
        .unwrap();
    let too_big = app
        .import_release("2026-04", &crate::helpers::sample_release("2026-04"))
        .await;

    assert_problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
    assert_problem(too_big, StatusCode::PAYLOAD_TOO_LARGE).await;
}
