//! PostgreSQL faults against clusters the test starts itself: a restart in
//! the middle of writes, a control cluster that goes away while the
//! tenants' cluster stays, and a statement past its time limit.

use std::time::Duration;

use recept::config::ClusterSettings;
use recept::dev::{PgBinaries, PrivatePostgres};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, cluster_dir, fresh_database, sample_release, spawn_app_on, spawn_app_with,
    spec, test_settings, url, TestApp,
};
use crate::reliability::assert_consistent;

/// Starts a private PostgreSQL; returns it with its directory, port and
/// password.
fn private_postgres(prefix: &str) -> (PrivatePostgres, std::path::PathBuf, u16) {
    let dir = cluster_dir(prefix);
    let pg = PrivatePostgres::start(&PgBinaries::find().unwrap(), &spec(&dir, "fault-password"))
        .unwrap();
    let port = pg.port();
    (pg, dir, port)
}

fn restart(dir: &std::path::Path, port: u16) -> PrivatePostgres {
    let mut again = spec(dir, "fault-password");
    again.port = Some(port);
    PrivatePostgres::start(&PgBinaries::find().unwrap(), &again).unwrap()
}

/// Sends one write until it is answered with something other than 503
/// (or a 500 saying the outcome is unknown), as a careful client would:
/// the same Idempotency-Key every time, which replays the write if it was
/// stored. Returns that answer and how many refusals came first.
async fn write_until_answered(
    app: &TestApp,
    key: &str,
    path: &str,
    idem: &str,
    body: &Value,
) -> (StatusCode, usize) {
    for refused in 0..200 {
        let sent = app
            .clinic_request(Method::POST, path, key)
            .header("idempotency-key", idem)
            .json(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == StatusCode::INTERNAL_SERVER_ERROR => {
                let problem: Value = response.json().await.unwrap();
                assert_eq!(
                    problem["type"], "urn:recept:problem:outcome-unknown",
                    "the only 500 a restart may cause"
                );
            }
            Ok(response) if response.status() != StatusCode::SERVICE_UNAVAILABLE => {
                return (response.status(), refused)
            }
            Ok(response) => {
                assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
            }
            Err(e) => panic!("recept did not answer: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never succeeded");
}

#[tokio::test]
async fn postgresql_restarted_during_writes_loses_and_doubles_nothing() {
    let (pg, dir, port) = private_postgres("recept-fault-restart-");
    let app = spawn_app_on(test_settings(&url(port, "fault-password", "postgres"))).await;
    app.import_release("2026-04", &sample_release("2026-04"))
        .await;
    let (slug, key) = app.tenant_on_release("restarted", "2026-04").await;
    let patient = json!({"id": app.insured_patient(&key, "鈴木 次郎").await});

    // Four clinics' front desks enter visits and take payments while
    // PostgreSQL stops and starts again under them.
    let writers: Vec<_> = (0..4)
        .map(|desk| {
            let app = &app;
            let key = &key;
            let patient = &patient;
            async move {
                let mut refused = 0;
                for visit in 0..15 {
                    tokio::time::sleep(Duration::from_millis(60)).await;
                    let idem = format!("desk{desk}-visit{visit}");
                    let body = json!({"patient_id": patient["id"], "date": "2026-05-20",
                        "items": [{"code": "111000110", "quantity": 1}, {"code": "620098801", "quantity": visit + 1}]});
                    let (status, refusals) =
                        write_until_answered(app, key, "/v1/encounters", &idem, &body).await;
                    assert_eq!(status, StatusCode::CREATED, "{idem}");
                    refused += refusals;
                }
                refused
            }
        })
        .collect();
    let outage = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        pg.stop().unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        restart(&dir, port)
    };
    let (refused, pg) = tokio::join!(futures::future::join_all(writers), outage);

    assert!(
        refused.iter().sum::<usize>() > 0,
        "the writes ran through the outage"
    );
    let count: i64 = app
        .db()
        .await
        .query_one(
            &format!("SELECT count(*) FROM \"t_{slug}\".encounters"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 60, "every visit exactly once");
    assert_consistent(&app, &slug).await;
    drop(pg);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_control_cluster_gone_leaves_known_clinics_served_and_others_a_quick_503() {
    let (control, dir, port) = private_postgres("recept-fault-control-");
    let mut settings = test_settings(&url(port, "fault-password", "postgres"));
    settings.clinic.key_cache_ttl_ms = 500;
    settings.clusters.insert(
        "tenants".into(),
        ClusterSettings {
            url: fresh_database().await,
            replica_url: None,
        },
    );
    let app = spawn_app_on(settings).await;
    let created = app
        .admin_request(Method::POST, "/admin/tenants")
        .json(&json!({"slug": crate::helpers::unique_slug("elsewhere"), "name": "Elsewhere", "cluster": "tenants"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let slug = created.json::<Value>().await.unwrap()["slug"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, key) = app.issue_key(&slug).await;
    app.clinic_json(&key, "/v1/tenant").await;

    control.stop().unwrap();
    // Its key was just resolved: the tenants' cluster serves it.
    app.clinic_json(&key, "/v1/tenant").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Once the key must be read again, a clear 503 instead.
    let refused = app
        .clinic_request(Method::GET, "/v1/tenant", &key)
        .send()
        .await
        .unwrap();
    assert!(refused.headers().contains_key("retry-after"));
    assert_problem(refused, StatusCode::SERVICE_UNAVAILABLE).await;

    let control = restart(&dir, port);
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..100 {
        status = app
            .clinic_request(Method::GET, "/v1/tenant", &key)
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::OK, "served again by itself");
    drop(control);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_statement_past_the_clinic_limit_is_a_504_and_the_connection_is_reused_clean() {
    let app = spawn_app_with(|s| {
        s.clinic.statement_timeout_ms = 300;
        s.clinic.lock_timeout_ms = 10_000;
        s.clinic.pool_size = 1;
        s.server.workers = 1;
    })
    .await;
    let (slug, key) = app.tenant_with_key("timed").await;
    let lock = app.lock_table(&slug, "patients").await;

    let slow = app
        .clinic_request(Method::GET, "/v1/patients", &key)
        .send()
        .await
        .unwrap();
    lock.batch_execute("ROLLBACK").await.unwrap();

    let problem = assert_problem(slow, StatusCode::GATEWAY_TIMEOUT).await;
    assert!(problem["detail"].as_str().is_some());
    // The only connection went back healthy and serves the next request.
    app.clinic_json(&key, "/v1/patients").await;
}
