//! Clinic requests are bound to one tenant by their key, and nothing of one
//! request's tenant survives into the next on a pooled connection.

use std::time::Duration;

use recept::pools::{DbError, Role};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{
    assert_problem, cluster_dir, fresh_database, spawn_app, spawn_app_on, spawn_app_with, spec,
    test_settings,
};

async fn own_tenant(app: &crate::helpers::TestApp, key: &str) -> Value {
    let response = app
        .clinic_request(Method::GET, "/v1/tenant", key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_key_reaches_only_its_own_tenants_schema() {
    let app = spawn_app().await;
    let (a, key_a) = app.tenant_with_key("alpha").await;
    let (b, key_b) = app.tenant_with_key("beta").await;

    let seen_a = own_tenant(&app, &key_a).await;
    let seen_b = own_tenant(&app, &key_b).await;

    assert_eq!(seen_a["slug"], a.as_str());
    assert_eq!(seen_a["schema"], format!("t_{a}"));
    assert_eq!(seen_a["name"], format!("Clinic {a}"));
    assert_eq!(seen_b["slug"], b.as_str());
    assert_eq!(seen_b["schema"], format!("t_{b}"));
    assert_eq!(seen_b["name"], format!("Clinic {b}"));
}

#[tokio::test]
async fn interleaved_tenants_on_one_pooled_connection_never_mix() {
    let app = spawn_app_with(|s| {
        // One worker, so the test and the server share the one connection.
        s.server.workers = 1;
        s.clinic.pool_size = 1;
        s.server.workers = 1;
    })
    .await;
    let (a, key_a) = app.tenant_with_key("left").await;
    let (b, key_b) = app.tenant_with_key("right").await;

    let requests = (0..60).map(|i| {
        let (slug, key) = if i % 2 == 0 {
            (&a, &key_a)
        } else {
            (&b, &key_b)
        };
        let app = &app;
        async move { (slug.clone(), own_tenant(app, key).await) }
    });
    let answers = futures::future::join_all(requests).await;

    for (slug, seen) in answers {
        assert_eq!(seen["slug"], slug.as_str());
        assert_eq!(seen["schema"], format!("t_{slug}"));
        assert_eq!(seen["name"], format!("Clinic {slug}"));
    }
    let db = app.db().await;
    let clinic_backends: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'recept-clinic' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(clinic_backends, 1, "all requests shared one connection");
}

#[tokio::test]
async fn the_tenant_schema_does_not_outlive_its_transaction() {
    let app = spawn_app_with(|s| {
        // One worker, so the test and the server share the one connection.
        s.server.workers = 1;
        s.clinic.pool_size = 1;
        s.server.workers = 1;
    })
    .await;
    let (slug, _) = app.tenant_with_key("scoped").await;
    let pools = &app.app_state.pools;

    let conn = pools.schema("main", &format!("t_{slug}")).await.unwrap();
    let inside = conn
        .read("SELECT current_setting('search_path')", &[])
        .await
        .unwrap();
    drop(conn);
    let raw = pools.get("main", Role::Clinic).await.unwrap();
    let after: String = raw
        .query_one("SELECT current_setting('search_path')", &[])
        .await
        .unwrap()
        .get(0);

    assert_eq!(inside[0].get::<_, String>(0), format!("\"t_{slug}\""));
    // The session's own path, which names no tenant (nor the control
    // schema).
    assert_eq!(after, "pg_catalog");
}

#[tokio::test]
async fn a_write_that_fails_leaves_nothing_and_a_dropped_one_never_returns_its_connection() {
    let app = spawn_app_with(|s| {
        // One worker, so the test and the server share the one connection.
        s.server.workers = 1;
        s.clinic.pool_size = 1;
        s.server.workers = 1;
    })
    .await;
    let (slug, _) = app.tenant_with_key("dropped").await;
    let schema = format!("t_{slug}");
    let pools = app.app_state.pools.clone();

    // A failing write rolls back.
    let conn = pools.schema("main", &schema).await.unwrap();
    let failed: Result<(), DbError> = conn
        .write(async |tx| {
            tx.execute("UPDATE clinic SET name = 'changed'", &[])
                .await?;
            tx.execute("SELECT 1/0", &[]).await?;
            Ok(())
        })
        .await;
    assert!(failed.is_err());
    drop(conn);

    // A write abandoned mid-statement (the client went away).
    let conn = pools.schema("main", &schema).await.unwrap();
    let abandoned = tokio::time::timeout(
        Duration::from_millis(200),
        conn.write(async |tx| -> Result<(), DbError> {
            tx.execute("UPDATE clinic SET name = 'abandoned'", &[])
                .await?;
            tx.execute("SELECT pg_sleep(30)", &[]).await?;
            Ok(())
        }),
    )
    .await;
    assert!(abandoned.is_err(), "the write was cut off");
    drop(conn);

    // The next request gets a clean connection outside any transaction.
    let conn = pools.schema("main", &schema).await.unwrap();
    let rows = conn.read("SELECT name FROM clinic", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), format!("Clinic {slug}"));
    let raw = pools.get("main", Role::Clinic).await;
    drop(conn);
    drop(raw);
    let db = app.db().await;
    let mut lingering = 1;
    for _ in 0..100 {
        lingering = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = 'recept-clinic' AND query LIKE '%pg_sleep%' \
                 AND state <> 'idle'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if lingering == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lingering, 0, "the abandoned statement was cancelled");
}

#[tokio::test]
async fn missing_unknown_and_revoked_keys_are_unauthorized() {
    let app = spawn_app().await;
    let (slug, _) = app.tenant_with_key("keys").await;
    let (key_id, key) = app.issue_key(&slug).await;
    own_tenant(&app, &key).await;

    let missing = app
        .http
        .get(format!("{}/v1/tenant", app.clinic))
        .send()
        .await
        .unwrap();
    let unknown = app
        .clinic_request(Method::GET, "/v1/tenant", "rk_not_a_real_key")
        .send()
        .await
        .unwrap();
    let basic = app
        .http
        .get(format!("{}/v1/tenant", app.clinic))
        .basic_auth("user", Some(&key))
        .send()
        .await
        .unwrap();
    assert_problem(missing, StatusCode::UNAUTHORIZED).await;
    assert_problem(unknown, StatusCode::UNAUTHORIZED).await;
    assert_problem(basic, StatusCode::UNAUTHORIZED).await;

    let revoked = app
        .admin_request(
            Method::DELETE,
            &format!("/admin/tenants/{slug}/api-keys/{key_id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let after = app
        .clinic_request(Method::GET, "/v1/tenant", &key)
        .send()
        .await
        .unwrap();
    assert_problem(after, StatusCode::UNAUTHORIZED).await;
    let twice = app
        .admin_request(
            Method::DELETE,
            &format!("/admin/tenants/{slug}/api-keys/{key_id}"),
        )
        .send()
        .await
        .unwrap();
    assert_problem(twice, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_key_revoked_on_another_host_stops_working_within_the_cache_lifetime() {
    let db_url = fresh_database().await;
    let mut first = test_settings(&db_url);
    first.clinic.key_cache_ttl_ms = 500;
    let mut second = first.clone();
    second.admin.token = format!("{}-2", first.admin.token);
    let host_a = spawn_app_on(first).await;
    let host_b = spawn_app_on(second).await;
    let (slug, _) = host_a.tenant_with_key("twohosts").await;
    let (key_id, key) = host_a.issue_key(&slug).await;
    own_tenant(&host_b, &key).await;

    host_a
        .admin_request(
            Method::DELETE,
            &format!("/admin/tenants/{slug}/api-keys/{key_id}"),
        )
        .send()
        .await
        .unwrap();

    let mut status = StatusCode::OK;
    for _ in 0..50 {
        status = host_b
            .clinic_request(Method::GET, "/v1/tenant", &key)
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A transaction holding the key registry locked until it ends: a read of
/// a key waits for it (and gives up at the statement timeout).
async fn registry_locked(app: &crate::helpers::TestApp) -> tokio_postgres::Client {
    let db = app.db().await;
    db.batch_execute("BEGIN; LOCK TABLE recept.api_keys IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    db
}

#[tokio::test]
async fn a_key_in_use_is_read_again_in_the_background_never_on_the_request_path() {
    let app = spawn_app_with(|s| {
        s.clinic.key_cache_ttl_ms = 4_000;
        s.clinic.statement_timeout_ms = 1_000;
    })
    .await;
    let (_, key) = app.tenant_with_key("refreshed").await;
    let start = tokio::time::Instant::now();
    own_tenant(&app, &key).await;

    // Past half the entry's lifetime, with the registry unreadable: the
    // request is answered from the entry and the key is read again behind
    // it (a read on the request path would wait for the lock and time out).
    tokio::time::sleep_until(start + Duration::from_millis(2_300)).await;
    let lock = registry_locked(&app).await;
    own_tenant(&app, &key).await;
    lock.batch_execute("ROLLBACK").await.unwrap();

    // Past the first entry's lifetime, the registry locked again: the
    // entry read in the background answers.
    tokio::time::sleep_until(start + Duration::from_millis(4_500)).await;
    let lock = registry_locked(&app).await;
    own_tenant(&app, &key).await;
    lock.batch_execute("ROLLBACK").await.unwrap();

    // A lifetime without a fresh read ends the entry: the next request
    // reads the registry itself, and a registry that cannot answer is a
    // 503 or 504, never a stale answer.
    tokio::time::sleep_until(start + Duration::from_millis(11_000)).await;
    let lock = registry_locked(&app).await;
    let status = app
        .clinic_request(Method::GET, "/v1/tenant", &key)
        .send()
        .await
        .unwrap()
        .status();
    lock.batch_execute("ROLLBACK").await.unwrap();
    assert!(
        status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::GATEWAY_TIMEOUT,
        "{status}"
    );
}

#[tokio::test]
async fn a_background_read_that_failed_is_tried_again_by_a_later_request() {
    let app = spawn_app_with(|s| {
        s.clinic.key_cache_ttl_ms = 4_000;
        s.clinic.statement_timeout_ms = 1_000;
    })
    .await;
    let (_, key) = app.tenant_with_key("retried").await;
    let start = tokio::time::Instant::now();
    own_tenant(&app, &key).await;

    // Past half the lifetime, the registry locked for longer than a
    // statement may wait: the background read fails.
    tokio::time::sleep_until(start + Duration::from_millis(2_200)).await;
    let lock = registry_locked(&app).await;
    own_tenant(&app, &key).await;
    tokio::time::sleep_until(start + Duration::from_millis(3_500)).await;
    lock.batch_execute("ROLLBACK").await.unwrap();

    // The next request reads the key again behind it...
    own_tenant(&app, &key).await;
    // ...so past the first entry's lifetime, the registry locked once
    // more, the entry read at 3.5 s answers (without the second read the
    // request would have to read the locked registry itself).
    tokio::time::sleep_until(start + Duration::from_millis(4_600)).await;
    let lock = registry_locked(&app).await;
    own_tenant(&app, &key).await;
    lock.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn a_suspended_tenant_is_forbidden_until_resumed() {
    let app = spawn_app().await;
    let (slug, key) = app.tenant_with_key("paused").await;

    let suspended = app
        .admin_request(Method::POST, &format!("/admin/tenants/{slug}/suspend"))
        .send()
        .await
        .unwrap();
    assert_eq!(suspended.status(), StatusCode::OK);
    let refused = app
        .clinic_request(Method::GET, "/v1/tenant", &key)
        .send()
        .await
        .unwrap();
    assert_problem(refused, StatusCode::FORBIDDEN).await;

    app.admin_request(Method::POST, &format!("/admin/tenants/{slug}/resume"))
        .send()
        .await
        .unwrap();
    own_tenant(&app, &key).await;
}

#[tokio::test]
async fn each_listener_serves_only_its_own_routes() {
    let app = spawn_app().await;
    let (_, key) = app.tenant_with_key("listeners").await;

    let admin_on_clinic = app
        .http
        .get(format!("{}/admin/tenants", app.clinic))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    let clinic_on_admin = app
        .http
        .get(format!("{}/v1/tenant", app.admin))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_problem(admin_on_clinic, StatusCode::NOT_FOUND).await;
    assert_problem(clinic_on_admin, StatusCode::NOT_FOUND).await;

    for base in [&app.clinic, &app.admin] {
        for probe in ["/healthz", "/readyz"] {
            let response = app.http.get(format!("{base}{probe}")).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{base}{probe}");
        }
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;

    let generated = app
        .http
        .get(format!("{}/healthz", app.clinic))
        .send()
        .await
        .unwrap();
    let echoed = app
        .http
        .get(format!("{}/healthz", app.clinic))
        .header("x-request-id", "front-desk-42")
        .send()
        .await
        .unwrap();
    let hostile = app
        .http
        .get(format!("{}/healthz", app.clinic))
        .header("x-request-id", "a\"b{}")
        .send()
        .await
        .unwrap();

    assert!(!generated.headers()["x-request-id"].is_empty());
    assert_eq!(echoed.headers()["x-request-id"], "front-desk-42");
    assert_ne!(hostile.headers()["x-request-id"], "a\"b{}");
}

#[tokio::test]
async fn a_stopped_postgresql_answers_503_and_recovery_needs_no_restart() {
    let dir = cluster_dir("recept-stop-");
    let password = "stop-test-password";
    let bins = recept::dev::PgBinaries::find().unwrap();
    let pg = recept::dev::PrivatePostgres::start(&bins, &spec(&dir, password)).unwrap();
    let port = pg.port();
    let settings = test_settings(&crate::helpers::url(port, password, "postgres"));
    let app = spawn_app_on(settings).await;
    let (_, key) = app.tenant_with_key("outage").await;
    own_tenant(&app, &key).await;

    pg.stop().unwrap();
    let during = app
        .clinic_request(Method::GET, "/v1/tenant", &key)
        .send()
        .await
        .unwrap();
    let ready = app
        .http
        .get(format!("{}/readyz", app.clinic))
        .send()
        .await
        .unwrap();

    let body = assert_problem(during, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(body["retry_after_ms"].as_u64().is_some());
    assert_problem(ready, StatusCode::SERVICE_UNAVAILABLE).await;
    let _ = std::fs::remove_dir_all(dir);
}

async fn session_settings(conn: &recept::pools::TenantConn) -> Result<(String, String), DbError> {
    let rows = conn
        .read(
            "SELECT current_setting('statement_timeout'), current_setting('application_name')",
            &[],
        )
        .await?;
    Ok((rows[0].get(0), rows[0].get(1)))
}

#[tokio::test]
async fn every_connection_keeps_its_pools_settings_even_after_a_session_set() {
    let app = spawn_app_with(|s| {
        s.clinic.pool_size = 1;
        s.server.workers = 1;
        s.clinic.statement_timeout_ms = 4_000;
        s.admin.pool_size = 1;
        s.admin.statement_timeout_ms = 7_000;
    })
    .await;
    let (slug, _) = app.tenant_with_key("settings").await;
    let schema = format!("t_{slug}");
    let pools = app.app_state.pools.clone();

    for _ in 0..20 {
        let conn = pools.schema("main", &schema).await.unwrap();
        assert_eq!(
            session_settings(&conn).await.unwrap(),
            ("4s".to_string(), "recept-clinic".to_string())
        );
    }
    // Code that sets session state on a clinic connection...
    let conn = pools.schema("main", &schema).await.unwrap();
    conn.write(async |tx| -> Result<(), DbError> {
        tx.batch_execute("SET statement_timeout = 0; SET application_name = 'leaked'")
            .await?;
        Ok(())
    })
    .await
    .unwrap();
    drop(conn);
    // ...is caught on the connection's next use, which is refused, and the
    // connection is replaced.
    let next = pools.schema("main", &schema).await.unwrap();
    assert!(session_settings(&next).await.is_err());
    assert!(next.tainted());
    drop(next);
    let fresh = pools.schema("main", &schema).await.unwrap();
    assert_eq!(
        session_settings(&fresh).await.unwrap(),
        ("4s".to_string(), "recept-clinic".to_string())
    );
    drop(fresh);

    // The admin pool: the same, checked when a connection is handed out.
    let admin = pools.get("main", Role::Admin).await.unwrap();
    admin
        .batch_execute("SET statement_timeout = 0; SET application_name = 'leaked'")
        .await
        .unwrap();
    drop(admin);
    let admin = pools.get("main", Role::Admin).await.unwrap();
    let row = admin
        .query_one(
            "SELECT current_setting('statement_timeout'), current_setting('application_name')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("7s".to_string(), "recept-admin".to_string())
    );
}
