//! Admin routes: audit, deletion and purge, stats, cross-tenant reports
//! bounded by the admin statement timeout, pools.

use recept::audit::Actor;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, sample_release, spawn_app, spawn_app_with, TestApp};

/// A clinic on the sample release with one insured patient and `visits`
/// encounters in May 2026.
pub(crate) async fn busy_clinic(app: &TestApp, prefix: &str, visits: usize) -> (String, String) {
    let (slug, key) = app.tenant_on_release(prefix, "2026-04").await;
    let patient: Value = app
        .clinic_request(Method::POST, "/v1/patients", &key)
        .json(&json!({"name": "伊藤 健", "birth_date": "1950-02-02", "sex": "male",
                      "insurances": [{"insurer_number": "39131015", "copay_rate": 10, "valid_from": "2020-01-01"}]}))
        .send().await.unwrap().json().await.unwrap();
    for day in 0..visits {
        let response = app
            .clinic_request(Method::POST, "/v1/encounters", &key)
            .json(
                &json!({"patient_id": patient["id"], "date": format!("2026-05-{:02}", day + 1),
                          "items": [{"code": "112007410", "quantity": 1}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    (slug, key)
}

#[tokio::test]
async fn the_audit_log_records_who_created_suspended_and_revoked() {
    let app = spawn_app().await;
    let (slug, _) = app.tenant_with_key("audited").await;
    let (key_id, _) = app.issue_key(&slug).await;

    app.admin_request(Method::POST, &format!("/admin/tenants/{slug}/suspend"))
        .header("x-admin-actor", "suzuki@ops")
        .send()
        .await
        .unwrap();
    app.admin_request(
        Method::DELETE,
        &format!("/admin/tenants/{slug}/api-keys/{key_id}"),
    )
    .send()
    .await
    .unwrap();

    let log = app.admin_json("/admin/audit").await;
    let entries = log["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "key.revoke",
            "tenant.suspend",
            "key.issue",
            "key.issue",
            "tenant.create"
        ]
    );
    assert!(entries.iter().all(|e| e["target"] == slug.as_str()));
    assert_eq!(entries[1]["actor"], "suzuki@ops");
    assert_eq!(entries[0]["actor"], "admin");
    assert_eq!(entries[0]["remote_addr"], "127.0.0.1");
    assert_eq!(entries[0]["detail"]["key_id"], key_id.as_str());
    let page = app.admin_json("/admin/audit?limit=2").await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    let before = page["next_before"].as_i64().unwrap();
    let rest = app
        .admin_json(&format!("/admin/audit?before={before}"))
        .await;
    assert_eq!(rest["entries"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_deleted_tenant_loses_access_at_once_and_is_purged_after_its_grace() {
    let app = spawn_app().await;
    let (slug, key) = app.tenant_with_key("leaving").await;

    let deleted = app
        .admin_request(Method::DELETE, &format!("/admin/tenants/{slug}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    let refused = app
        .clinic_request(Method::GET, "/v1/tenant", &key)
        .send()
        .await
        .unwrap();
    assert_problem(refused, StatusCode::UNAUTHORIZED).await;
    let shown = app.admin_json(&format!("/admin/tenants/{slug}")).await;
    assert_eq!(shown["status"], "deleted");

    let pools = &app.app_state.pools;
    let kept = recept::tenancy::purge_deleted(pools, 30, &Actor::operator())
        .await
        .unwrap();
    assert!(kept.is_empty(), "still within its grace period");
    let purged = recept::tenancy::purge_deleted(pools, 0, &Actor::operator())
        .await
        .unwrap();
    assert_eq!(purged, vec![slug.clone()]);
    let schemas: i64 = app
        .db()
        .await
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            &[&format!("t_{slug}")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0);
}

#[tokio::test]
async fn the_monthly_report_covers_every_tenant_page_by_page() {
    let app = spawn_app().await;
    app.import_release("2026-04", &sample_release("2026-04"))
        .await;
    let (first, _) = busy_clinic(&app, "rep_a", 3).await;
    let (second, _) = busy_clinic(&app, "rep_b", 2).await;

    let page = app
        .admin_json("/admin/reports/monthly?month=2026-05&limit=1")
        .await;
    assert_eq!(page["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(page["tenants"][0]["slug"], first.as_str());
    assert_eq!(page["tenants"][0]["encounters"], 3);
    assert_eq!(page["tenants"][0]["total_points"], 3 * 73);
    // 73 points at 10% = 73 yen → 70 yen, three times.
    assert_eq!(page["tenants"][0]["charge_yen"], 210);
    let after = page["next_after"].as_str().unwrap();
    let rest = app
        .admin_json(&format!(
            "/admin/reports/monthly?month=2026-05&after={after}"
        ))
        .await;
    assert_eq!(rest["tenants"][0]["slug"], second.as_str());
    assert_eq!(rest["tenants"][0]["encounters"], 2);
    let stats = app
        .admin_json(&format!("/admin/tenants/{first}/stats"))
        .await;
    assert_eq!(
        (stats["patients"].as_i64(), stats["encounters"].as_i64()),
        (Some(1), Some(3))
    );
    assert!(stats["schema_bytes"].as_i64().unwrap() > 0);
    for bad in ["month=2026-13", "month=May", "month=2026-05&limit=0"] {
        let response = app
            .admin_request(Method::GET, &format!("/admin/reports/monthly?{bad}"))
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
}

#[tokio::test]
async fn a_report_past_the_admin_timeout_is_cancelled_with_504_and_clinics_go_on() {
    let app = spawn_app_with(|s| s.admin.statement_timeout_ms = 300).await;
    app.import_release("2026-04", &sample_release("2026-04"))
        .await;
    let (slug, key) = busy_clinic(&app, "blocked", 1).await;
    // A report that cannot finish in time: a table it reads is locked.
    let holder = app.db().await;
    holder
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"t_{slug}\".claims IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .unwrap();

    let report = app
        .admin_request(Method::GET, "/admin/reports/monthly?month=2026-05")
        .send()
        .await
        .unwrap();
    let clinic = app
        .clinic_request(Method::GET, "/v1/encounters", &key)
        .send()
        .await
        .unwrap();

    let problem = assert_problem(report, StatusCode::GATEWAY_TIMEOUT).await;
    assert_eq!(problem["type"], "urn:recept:problem:timeout");
    assert_eq!(clinic.status(), StatusCode::OK);
    holder.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn pools_are_listed_per_cluster_and_role_and_each_worker_uses_its_own_share() {
    let app = spawn_app().await;
    let (_, key) = app.tenant_with_key("spread").await;
    // Requests on connections of their own, which the server hands to its
    // two workers in turn: each worker opens connections in its own share.
    let requests = (0..8).map(|_| {
        reqwest::Client::new()
            .get(format!("{}/v1/tenant", app.clinic))
            .bearer_auth(&key)
            .send()
    });
    for response in futures::future::join_all(requests).await {
        assert_eq!(response.unwrap().status(), StatusCode::OK);
    }

    let pools = app.admin_json("/admin/pools").await;

    let roles: Vec<&str> = pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "recept-admin",
            "recept-clinic",
            "recept-keys",
            "recept-migrate"
        ]
    );
    let clinic = &pools["pools"][1];
    assert_eq!(clinic["max_size"], 4);
    assert_eq!(clinic["shards"], 2);
    let shares: Vec<(u64, u64)> = clinic["by_worker"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["max_size"].as_u64().unwrap(), s["size"].as_u64().unwrap()))
        .collect();
    assert_eq!(shares.len(), 2, "{clinic}");
    assert!(
        shares.iter().all(|&(max, size)| max == 2 && size >= 1),
        "{clinic}"
    );
    assert_eq!(pools["pools"][0]["by_worker"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn metrics_show_requests_by_route_pools_and_rejections_on_the_admin_listener_only() {
    let app = spawn_app_with(|s| {
        s.clinic.tenant_max_in_flight = 1;
        s.server.tenant_metrics_top = 0;
    })
    .await;
    let (slug, key) = app.tenant_with_key("metered").await;
    for _ in 0..3 {
        app.clinic_request(Method::GET, "/v1/tenant", &key)
            .send()
            .await
            .unwrap();
    }
    let id = app.tenant_id(&slug).await;
    let held = app
        .app_state
        .pools
        .tenant(
            recept::pools::Shard::FIRST,
            id,
            "main",
            &format!("t_{slug}"),
        )
        .await
        .unwrap();
    let refused = app
        .clinic_request(Method::GET, "/v1/tenant", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(held);

    let text = app
        .http
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let on_clinic = app
        .http
        .get(format!("{}/metrics", app.clinic))
        .send()
        .await
        .unwrap();

    assert!(
        text.contains(
            r#"recept_http_requests_total{listener="clinic",route="/v1/tenant",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"recept_http_requests_total{listener="clinic",route="/v1/tenant",status="429"} 1"#
    ));
    assert!(text.contains("recept_http_request_duration_seconds_bucket"));
    assert!(text.contains(r#"recept_pool_max_size{cluster="main",role="recept-clinic"} 4"#));
    assert!(text.contains(r#"recept_admission_rejections_total{reason="tenant_share"} 1"#));
    assert!(text.contains("recept_process_resident_bytes"));
    assert!(
        text.contains("recept_clinic_connection_wait_seconds_count 4"),
        "{text}"
    );
    assert!(
        !text.contains(&key) && !text.contains(&slug),
        "no keys or tenants in series"
    );
    assert_problem(on_clinic, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_clinics_identity_is_set_checked_and_audited_on_the_admin_listener() {
    let app = spawn_app().await;
    let (slug, _) = app.tenant_with_key("identity").await;
    let path = format!("/admin/tenants/{slug}/profile");
    let put = |body: Value| {
        app.admin_request(Method::PUT, &path)
            .header("x-admin-actor", "sato@ops")
            .json(&body)
            .send()
    };

    let set = put(
        json!({"name": "札幌内科クリニック", "institution_code": "0113719", "prefecture_code": "01",
        "address": "札幌市中央区北1条西2丁目", "phone": "011-123-4567"}),
    )
    .await
    .unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    let shown = app.admin_json(&path).await;
    assert_eq!(
        (
            shown["institution_code"].as_str(),
            shown["prefecture_code"].as_str(),
            shown["fee_table"].as_str()
        ),
        (Some("0113719"), Some("01"), Some("medical"))
    );
    for (body, field) in [
        (
            json!({"name": "x", "institution_code": "0113710", "prefecture_code": "01"}),
            "institution_code",
        ),
        (
            json!({"name": "x", "institution_code": "0113719", "prefecture_code": "13"}),
            "institution_code",
        ),
        (
            json!({"name": "x", "institution_code": "0113719", "prefecture_code": "48"}),
            "prefecture_code",
        ),
        (
            json!({"name": "x", "institution_code": "0113719", "prefecture_code": "01", "fee_table": "dental"}),
            "fee_table",
        ),
        (
            json!({"name": "x", "institution_code": "0113719", "prefecture_code": "01", "phone": "call me"}),
            "phone",
        ),
    ] {
        let problem =
            assert_problem(put(body).await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    // Nothing of a refused change was written.
    assert_eq!(app.admin_json(&path).await["institution_code"], "0113719");
    let log = app.admin_json("/admin/audit").await;
    let profile_entries: Vec<&Value> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "tenant.profile")
        .collect();
    assert_eq!(profile_entries.len(), 1);
    assert_eq!(profile_entries[0]["actor"], "sato@ops");
    // The clinic sees its name.
    let clinic_name = app.admin_json(&path).await["name"].clone();
    assert_eq!(clinic_name, "札幌内科クリニック");
}
