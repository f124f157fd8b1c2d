//! Admin reports on a streaming replica: served there (never on the
//! primary, which may be frozen meanwhile), saying how fresh they are; a
//! replica past `admin.max_replica_lag_ms` gets the configured answer; a
//! stopped one a quick `503` while clinics go on; and its connections are
//! counted against the replica's own `max_connections`.

use std::time::Duration;

use recept::config::{ReplicaBehind, Settings};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::admin::busy_clinic;
use crate::helpers::{
    assert_problem, connect, sample_release, spawn_app_on, test_settings, TestApp,
};
use crate::replica_pair::ReplicaPair;

fn replica_settings(pair: &ReplicaPair, tweak: impl FnOnce(&mut Settings)) -> Settings {
    let mut settings = test_settings(&pair.primary_url);
    settings.clusters.get_mut("main").unwrap().replica_url = Some(pair.replica_url.clone());
    tweak(&mut settings);
    settings
}

/// Connections named `application_name` on a server.
async fn backends(url: &str, application_name: &str) -> i64 {
    connect(url)
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&application_name],
        )
        .await
        .unwrap()
        .get(0)
}

/// GET an admin path, giving up after a minute (a report that hangs
/// fails the test rather than the run).
async fn admin_get(app: &TestApp, path: &str) -> reqwest::Response {
    tokio::time::timeout(
        Duration::from_secs(60),
        app.admin_request(Method::GET, path).send(),
    )
    .await
    .unwrap_or_else(|_| panic!("GET {path} did not answer within a minute"))
    .unwrap()
}

async fn json_ok(response: reqwest::Response) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_are_read_on_the_replica_even_with_the_primary_frozen() {
    let pair = ReplicaPair::start().await;
    let app = spawn_app_on(replica_settings(&pair, |_| {})).await;
    app.import_release("2026-04", &sample_release("2026-04"))
        .await;
    let (slug, _) = busy_clinic(&app, "replicated", 2).await;
    pair.wait_replayed().await;

    let report = json_ok(admin_get(&app, "/admin/reports/monthly?month=2026-05").await).await;
    assert_eq!(report["tenants"][0]["slug"], slug.as_str());
    assert_eq!(report["tenants"][0]["encounters"], 2);
    let freshness = report["freshness"].as_array().unwrap();
    assert_eq!(freshness.len(), 1, "{report}");
    assert_eq!(freshness[0]["cluster"], "main");
    assert_eq!(freshness[0]["source"], "replica");
    assert!(freshness[0]["replayed_at"].is_string(), "{report}");
    let stats = json_ok(admin_get(&app, &format!("/admin/tenants/{slug}/stats")).await).await;
    assert_eq!(
        (stats["patients"].as_i64(), stats["encounters"].as_i64()),
        (Some(1), Some(2))
    );
    assert_eq!(stats["freshness"]["source"], "replica");

    // The report pool's connections are on the replica, none on the primary.
    assert!(backends(&pair.replica_url, "recept-report").await >= 1);
    assert_eq!(backends(&pair.primary_url, "recept-report").await, 0);
    let pools = app.admin_json("/admin/pools").await;
    let report_pool = pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "recept-report")
        .expect("the report pool is shown");
    assert!(report_pool["opened"].as_u64().unwrap() >= 1);

    // A primary that answers nothing at all does not hold a report.
    pair.freeze_primary(true);
    let report = admin_get(&app, "/admin/reports/monthly?month=2026-05").await;
    let stats = admin_get(&app, &format!("/admin/tenants/{slug}/stats")).await;
    pair.freeze_primary(false);
    let report = json_ok(report).await;
    assert_eq!(report["tenants"][0]["encounters"], 2);
    assert_eq!(report["freshness"][0]["source"], "replica");
    assert_eq!(json_ok(stats).await["encounters"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_past_the_lag_bound_refuses_or_falls_back_as_configured() {
    let pair = ReplicaPair::start().await;
    let bound = |s: &mut Settings| s.admin.max_replica_lag_ms = 200;
    let refusing = spawn_app_on(replica_settings(&pair, bound)).await;
    let falling_back = spawn_app_on(replica_settings(&pair, |s| {
        bound(s);
        s.admin.replica_behind = ReplicaBehind::Primary;
    }))
    .await;
    let (slug, key) = refusing.tenant_with_key("lagging").await;
    refusing.insured_patient(&key, "一郎").await;
    pair.wait_replayed().await;
    let stats_path = format!("/admin/tenants/{slug}/stats");
    let stats = json_ok(admin_get(&refusing, &stats_path).await).await;
    assert_eq!(stats["patients"], 1);

    // Replay paused, then a write the replica receives but does not apply.
    let replica = connect(&pair.replica_url).await;
    replica
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    refusing.insured_patient(&key, "二郎").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let behind: bool = replica
            .query_one(
                "SELECT pg_get_wal_replay_pause_state() = 'paused' \
                 AND pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if behind {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never fell behind"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Past the bound of 200 ms since the last transaction it replayed.
    tokio::time::sleep(Duration::from_millis(400)).await;

    for path in [stats_path.as_str(), "/admin/reports/monthly?month=2026-05"] {
        let response = admin_get(&refusing, path).await;
        assert!(response.headers().contains_key("retry-after"), "{path}");
        let problem = assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("trails its primary"), "{detail}");
    }
    let stats = json_ok(admin_get(&falling_back, &stats_path).await).await;
    assert_eq!(stats["patients"], 2, "read on the primary: {stats}");
    assert_eq!(stats["freshness"]["source"], "primary");
    let reason = stats["freshness"]["fallback"].as_str().unwrap();
    assert!(reason.contains("trails by"), "{reason}");
    // Clinics never read the replica.
    assert_eq!(
        refusing.clinic_json(&key, "/v1/patients").await["patients"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    replica
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    pair.wait_replayed().await;
    let stats = json_ok(admin_get(&refusing, &stats_path).await).await;
    assert_eq!(stats["patients"], 2);
    assert_eq!(stats["freshness"]["source"], "replica");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_replica_refuses_reports_at_once_and_clinics_go_on() {
    let mut pair = ReplicaPair::start().await;
    let app = spawn_app_on(replica_settings(&pair, |_| {})).await;
    let (slug, key) = app.tenant_with_key("stopped").await;
    let patient = app.insured_patient(&key, "三郎").await;
    pair.wait_replayed().await;
    let stats_path = format!("/admin/tenants/{slug}/stats");
    json_ok(admin_get(&app, &stats_path).await).await;

    pair.stop_replica().await;
    for path in [stats_path.as_str(), "/admin/reports/monthly?month=2026-05"] {
        let response = admin_get(&app, path).await;
        assert!(response.headers().contains_key("retry-after"), "{path}");
        let problem = assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("cannot be reached"), "{detail}");
    }
    let shown = app
        .clinic_json(&key, &format!("/v1/patients/{patient}"))
        .await;
    assert_eq!(shown["name"], "三郎");
    app.clinic_post(
        &key,
        "/v1/patients",
        serde_json::json!({"name": "四郎", "birth_date": "1980-01-01", "sex": "male"}),
    )
    .await;

    // Back, it serves reports again: the refusal was one that heals.
    pair.restart_replica().await;
    pair.wait_replayed().await;
    let stats = json_ok(admin_get(&app, &stats_path).await).await;
    assert_eq!(stats["patients"], 2);
    assert_eq!(stats["freshness"]["source"], "replica");
}

#[tokio::test(flavor = "multi_thread")]
async fn report_connections_that_do_not_fit_the_replica_refuse_to_start() {
    let pair = ReplicaPair::start().await;
    // The replica allows 300 connections (less the reserved ones).
    let settings = replica_settings(&pair, |s| s.admin.replica_pool_size = 400);
    let error = recept::startup::Application::build(settings)
        .await
        .err()
        .expect("the budget does not fit");
    let message = format!("{error:#}");
    assert!(message.contains("admin.replica_pool_size"), "{message}");
    assert!(message.contains("replica of cluster `main`"), "{message}");
}
