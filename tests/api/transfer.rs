//! Per-tenant export and import: a snapshot of one tenant reproduces it
//! exactly, under another slug and on another cluster.

use recept::audit::Actor;
use recept::tenancy::{transfer, Slug};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{sample_release, spawn_app_on_two_clusters, unique_slug, TestApp};

async fn created(app: &TestApp, key: &str, path: &str, body: Value) -> Value {
    let response = app
        .clinic_request(Method::POST, path, key)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "POST {path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Every row of every table of `schema` on `url`, as one digest per table.
async fn digests(url: &str, schema: &str) -> Vec<(String, i64, String)> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tables: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 \
             AND tablename <> 'refinery_schema_history' ORDER BY 1",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for table in tables {
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) \
                     FROM \"{schema}\".\"{table}\" t"
                ),
                &[],
            )
            .await
            .unwrap();
        out.push((table, row.get(0), row.get(1)));
    }
    out
}

#[tokio::test]
async fn an_export_imported_on_another_cluster_reproduces_the_tenant_exactly() {
    let (app, control, other) = spawn_app_on_two_clusters(|_| {}).await;
    app.import_release("2026-04", &sample_release("2026-04"))
        .await;
    let (slug, key) = app.tenant_on_release("exported", "2026-04").await;
    let patient = created(&app, &key, "/v1/patients", json!({"name": "小林 直子", "name_kana": "コバヤシ ナオコ",
        "birth_date": "1966-06-06", "sex": "female", "phone": "03-1234-5678 \\ \"自宅\" 'x'",
        "insurances": [{"insurer_number": "06132013", "copay_rate": 30, "valid_from": "2020-01-01"}]})).await;
    for day in ["2026-05-01", "2026-05-15"] {
        let visit = created(&app, &key, "/v1/encounters", json!({"patient_id": patient["id"], "date": day,
            "diagnoses": ["8833421"], "items": [{"code": "111000110", "quantity": 1}, {"code": "620098801", "quantity": 3}]})).await;
        created(
            &app,
            &key,
            "/v1/payments",
            json!({"encounter_id": visit["id"], "amount_yen": 100, "method": "cash"}),
        )
        .await;
    }
    created(
        &app,
        &key,
        "/v1/claims/generate",
        json!({"month": "2026-05"}),
    )
    .await;

    let mut file = Vec::new();
    let pools = app.app_state.pools.clone();
    let exported = transfer::export(&pools, &Slug::parse(&slug).unwrap(), &mut file)
        .await
        .unwrap();
    let copy = unique_slug("imported");
    let (imported, loaded) = transfer::import(
        &pools,
        &mut file.as_slice(),
        Some(Slug::parse(&copy).unwrap()),
        "second",
        &Actor::operator(),
    )
    .await
    .unwrap();

    assert_eq!(imported.as_str(), copy);
    assert_eq!(exported, loaded);
    assert!(exported
        .iter()
        .any(|(t, n)| t == "encounter_lines" && *n == 4));
    let original = digests(&control, &format!("t_{slug}")).await;
    let reproduced = digests(&other, &format!("t_{copy}")).await;
    assert_eq!(original, reproduced);
    // The copy serves its clinic with the same patient.
    let (_, copy_key) = app.issue_key(&copy).await;
    let id = patient["id"].as_str().unwrap();
    let shown = app
        .clinic_json(&copy_key, &format!("/v1/patients/{id}"))
        .await;
    assert_eq!(shown["name"], "小林 直子");
    let balance = app
        .clinic_json(&copy_key, &format!("/v1/patients/{id}/balance"))
        .await;
    assert_eq!(balance["paid_yen"], 200);
}

#[tokio::test]
async fn a_damaged_export_creates_nothing() {
    let app = crate::helpers::spawn_app().await;
    let (slug, key) = app.tenant_with_key("damaged").await;
    created(
        &app,
        &key,
        "/v1/patients",
        json!({"name": "x", "birth_date": "1990-01-01", "sex": "male"}),
    )
    .await;
    let pools = app.app_state.pools.clone();
    let mut file = Vec::new();
    transfer::export(&pools, &Slug::parse(&slug).unwrap(), &mut file)
        .await
        .unwrap();
    let text = String::from_utf8(file).unwrap();
    let cut = &text[..text.rfind("\\.").unwrap()];
    let copy = unique_slug("halfmade");

    let refused = transfer::import(
        &pools,
        &mut cut.as_bytes(),
        Some(Slug::parse(&copy).unwrap()),
        "main",
        &Actor::operator(),
    )
    .await;

    assert!(
        matches!(refused, Err(transfer::TransferError::BadFile(_))),
        "{refused:?}"
    );
    let left = app
        .admin_request(Method::GET, &format!("/admin/tenants/{copy}"))
        .send()
        .await
        .unwrap();
    let status = left.status();
    let body: Value = left.json().await.unwrap();
    assert!(
        status == StatusCode::NOT_FOUND || body["status"] == "deleted",
        "{status} {body}"
    );
    let schemas: i64 = app
        .db()
        .await
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            &[&format!("t_{copy}")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0);
}

#[tokio::test]
async fn least_loaded_placement_spreads_tenants_and_one_server_serves_both_clusters() {
    let (app, _, _) =
        spawn_app_on_two_clusters(|s| s.control.placement = recept::config::Placement::LeastLoaded)
            .await;

    let mut placed = Vec::new();
    let mut keys = Vec::new();
    for _ in 0..4 {
        let (slug, key) = app.tenant_with_key("placed").await;
        let shown = app.admin_json(&format!("/admin/tenants/{slug}")).await;
        placed.push(shown["cluster"].as_str().unwrap().to_string());
        keys.push(key);
    }
    assert_eq!(placed, ["main", "second", "main", "second"]);

    // Both clusters' clinics at the same time, through one server.
    let served = futures::future::join_all(
        keys.iter()
            .map(|key| app.clinic_request(Method::GET, "/v1/tenant", key).send()),
    )
    .await;
    for response in served {
        assert_eq!(response.unwrap().status(), StatusCode::OK);
    }
}

/// Schemas left behind by moves of `slug` on the main cluster.
async fn old_copies(app: &TestApp, slug: &str) -> i64 {
    app.db()
        .await
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE $1",
            &[&format!("t_{slug}_moved_%")],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_tenant_moved_under_light_load_loses_and_doubles_nothing_and_answers_only_503_meanwhile()
{
    let (app, _, second) = spawn_app_on_two_clusters(|s| s.clinic.key_cache_ttl_ms = 300).await;
    app.import_release("2026-04", &sample_release("2026-04"))
        .await;
    let (slug, key) = app.tenant_on_release("mover", "2026-04").await;
    let (_, bystander) = app.tenant_on_release("stayer", "2026-04").await;
    let patient = json!({"id": app.insured_patient(&key, "移動 一郎").await});

    // A front desk entering visits (retrying 503s with the same key) and
    // another clinic reading, while the move runs.
    let desk = async {
        let mut statuses = std::collections::BTreeMap::new();
        for visit in 0..40 {
            loop {
                let answer = app
                    .clinic_request(Method::POST, "/v1/encounters", &key)
                    .header("idempotency-key", format!("move-{visit}"))
                    .json(&json!({"patient_id": patient["id"], "date": "2026-05-20",
                                  "items": [{"code": "111000110", "quantity": 1}]}))
                    .send()
                    .await
                    .unwrap()
                    .status();
                *statuses.entry(answer.as_u16()).or_insert(0) += 1;
                if answer != StatusCode::SERVICE_UNAVAILABLE {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        }
        statuses
    };
    let neighbour = async {
        let mut failures = 0;
        for _ in 0..40 {
            let status = app
                .clinic_request(Method::GET, "/v1/tenant", &bystander)
                .send()
                .await
                .unwrap()
                .status();
            failures += usize::from(status != StatusCode::OK);
            tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        }
        failures
    };
    let pools = app.app_state.pools.clone();
    let mover = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        transfer::move_tenant(
            &pools,
            &Slug::parse(&slug).unwrap(),
            "second",
            std::time::Duration::from_millis(800),
            &Actor::operator(),
        )
        .await
    };
    let (statuses, neighbour_failures, moved) = tokio::join!(desk, neighbour, mover);
    let moved = moved.unwrap();

    assert_eq!(moved.to, "second");
    assert!(
        statuses.keys().all(|s| *s == 201 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.get(&503).copied().unwrap_or(0) > 0,
        "the move overlapped the writes: {statuses:?}"
    );
    assert_eq!(statuses[&201], 40, "{statuses:?}");
    assert_eq!(neighbour_failures, 0, "other clinics are not touched");
    let (client, connection) = tokio_postgres::connect(&second, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let visits: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM \"t_{slug}\".encounters"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(visits, 40, "every visit exactly once, on the new cluster");
    let shown = app.admin_json(&format!("/admin/tenants/{slug}")).await;
    assert_eq!(shown["cluster"], "second");
    // The old copy stays until purge, then goes.
    assert_eq!(old_copies(&app, &slug).await, 1);
    recept::tenancy::purge_deleted(&pools, 0, &Actor::operator())
        .await
        .unwrap();
    assert_eq!(old_copies(&app, &slug).await, 0);
}
