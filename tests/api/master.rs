//! Master releases, tenant copies and diff-based rollouts.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, sample_release, spawn_app, spawn_app_with, TestApp};

const HEAD: &str = "code,kind,name,points,unit_price_yen,valid_from,valid_to\n";

/// The tenant's copy of `code` valid `on`, or `None`.
async fn item_on(app: &TestApp, key: &str, code: &str, on: &str) -> Option<Value> {
    let page = app
        .clinic_json(key, &format!("/v1/master/items?code={code}&on={on}"))
        .await;
    page["items"].as_array().unwrap().first().cloned()
}

#[tokio::test]
async fn a_release_with_bad_rows_is_refused_whole_with_line_numbers() {
    let app = spawn_app().await;
    let csv = format!(
        "{HEAD}111000110,procedure,初診料,291,,2026-06-01,\n\
         111000111,surgery,手術,100,,2026-06-01,\n\
         111000112,procedure,点数なし,,,2026-06-01,\n\
         620000001,drug,薬価なし,,,2026-06-01,\n\
         620000002,drug,日付,,10.10,2026-02-30,\n\
         111000110,procedure,初診料,300,,2026-07-01,\n"
    );

    let response = app.import_release("2026-bad", &csv).await;

    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["line 3", "line 4", "line 5", "line 6"]);
    let releases: Value = app
        .admin_request(Method::GET, "/admin/master/releases")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(releases["releases"], json!([]));

    // Only the overlap left: it is reported on its own line.
    let overlap = format!(
        "{HEAD}111000110,procedure,初診料,291,,2026-06-01,\n\
         111000110,procedure,初診料,300,,2026-07-01,\n"
    );
    let body = assert_problem(
        app.import_release("2026-bad", &overlap).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "line 3");
}

#[tokio::test]
async fn reimporting_a_version_is_a_conflict_and_other_media_types_are_refused() {
    let app = spawn_app().await;
    let csv = sample_release("2026-04");

    assert_eq!(
        app.import_release("2026-04", &csv).await.status(),
        StatusCode::CREATED
    );
    assert_problem(
        app.import_release("2026-04", &csv).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_problem(
        app.import_release("bad version!", &csv).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let json_body = app
        .admin_request(Method::POST, "/admin/master/releases?version=2026-05")
        .json(&json!({"items": []}))
        .send()
        .await
        .unwrap();
    assert_problem(json_body, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
}

#[tokio::test]
async fn a_tenant_copies_its_release_and_a_rollout_applies_changes_additions_and_retirements() {
    let app = spawn_app().await;
    app.import_release("2026-04", &sample_release("2026-04"))
        .await;
    app.import_release("2026-06", &sample_release("2026-06"))
        .await;
    let (slug, key) = app.tenant_on_release("roll", "2026-04").await;

    let before = app.clinic_json(&key, "/v1/tenant").await;
    assert_eq!(before["master_release"], "2026-04");
    let patient = app.insured_patient(&key, "中村 明").await;
    // Release A: 10.10 yen × 30 = 303 yen → 1 + ceil(288 / 10) = 30 points.
    let (status, on_a) = enter(&app, &key, &patient, "2026-07-01", "620098801", 30).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        (
            on_a["total_points"].as_i64(),
            on_a["master_release"].as_str()
        ),
        (Some(30), Some("2026-04"))
    );
    let (status, _) = enter(&app, &key, &patient, "2026-07-01", "140000610", 1).await;
    assert_eq!(status, StatusCode::CREATED, "not retired in A");
    let loxoprofen = item_on(&app, &key, "620098801", "2026-07-01")
        .await
        .unwrap();
    assert_eq!(loxoprofen["unit_price_yen"], "10.10");
    assert!(item_on(&app, &key, "160022510", "2026-07-01")
        .await
        .is_none());
    assert!(item_on(&app, &key, "140000610", "2026-07-01")
        .await
        .is_some());

    let started = app
        .admin_request(Method::POST, "/admin/master/rollouts")
        .json(&json!({"version": "2026-06", "tenants": [slug]}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let id = started.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let report = wait_for_rollout(&app, &id).await;

    assert_eq!(report["counts"]["done"], 1);
    assert_eq!(report["tenants"][0]["from_version"], "2026-04");
    let after = app.clinic_json(&key, "/v1/tenant").await;
    assert_eq!(after["master_release"], "2026-06");
    // Changed from 2026-06-01, unchanged before.
    let changed = item_on(&app, &key, "620098801", "2026-07-01")
        .await
        .unwrap();
    assert_eq!(changed["unit_price_yen"], "9.80");
    let earlier = item_on(&app, &key, "620098801", "2026-05-31")
        .await
        .unwrap();
    assert_eq!(earlier["unit_price_yen"], "10.10");
    // Added.
    let added = item_on(&app, &key, "160022510", "2026-07-01")
        .await
        .unwrap();
    assert_eq!(added["points"], 98);
    // Retired after 2026-06-30.
    assert!(item_on(&app, &key, "140000610", "2026-06-30")
        .await
        .is_some());
    assert!(item_on(&app, &key, "140000610", "2026-07-01")
        .await
        .is_none());
    // Renamed.
    let renamed = item_on(&app, &key, "160061810", "2026-07-01")
        .await
        .unwrap();
    assert_eq!(renamed["name"], "ＣＲＰ定量");
}

/// Enters an encounter and returns (status, body).
async fn enter(
    app: &TestApp,
    key: &str,
    patient: &str,
    date: &str,
    code: &str,
    quantity: i64,
) -> (StatusCode, Value) {
    let response = app
        .clinic_request(Method::POST, "/v1/encounters", key)
        .json(&json!({"patient_id": patient, "date": date, "items": [{"code": code, "quantity": quantity}]}))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn wait_for_rollout(app: &TestApp, id: &str) -> Value {
    for _ in 0..200 {
        let report: Value = app
            .admin_request(Method::GET, &format!("/admin/master/rollouts/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !report["finished_at"].is_null() {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("rollout {id} did not finish");
}

/// Rows of the tenant's copy that differ from the release, either way.
async fn copy_differs_from_release(app: &TestApp, slug: &str, version: &str) -> i64 {
    let cols = recept::master::ITEM_COLUMNS;
    let db = app.db().await;
    db.query_one(
        &format!(
            "SELECT (SELECT count(*) FROM (SELECT {cols} FROM \"t_{slug}\".master_items \
               EXCEPT ALL SELECT {cols} FROM recept.master_items WHERE version = $1) a) \
             + (SELECT count(*) FROM (SELECT {cols} FROM recept.master_items WHERE version = $1 \
               EXCEPT ALL SELECT {cols} FROM \"t_{slug}\".master_items) b)"
        ),
        &[&version],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn a_rollout_that_fails_half_way_resumes_and_applies_every_tenant_exactly_once() {
    // A short lock timeout on admin connections lets a locked tenant fail fast.
    let app = spawn_app_with(|s| {
        s.admin.statement_timeout_ms = 500;
        s.admin.pool_size = 3;
    })
    .await;
    app.import_release("2026-04", &sample_release("2026-04"))
        .await;
    app.import_release("2026-06", &sample_release("2026-06"))
        .await;
    let mut slugs = Vec::new();
    for _ in 0..6 {
        slugs.push(app.tenant_on_release("resume", "2026-04").await.0);
    }
    slugs.sort();
    let pools = app.app_state.pools.clone();

    // Hold one tenant's master_meta so its upgrade cannot take the lock.
    let blocker = app.db().await;
    blocker.batch_execute("BEGIN").await.unwrap();
    blocker
        .batch_execute(&format!(
            "SELECT * FROM \"t_{}\".master_meta FOR UPDATE",
            slugs[2]
        ))
        .await
        .unwrap();
    let first = crate::helpers::rollout_everyone(&pools, "2026-06", 2).await;
    blocker.batch_execute("ROLLBACK").await.unwrap();

    assert_eq!((first.counts.done, first.counts.failed), (5, 1));
    let failed = first.tenants.iter().find(|t| t.state == "failed").unwrap();
    assert_eq!(failed.slug, slugs[2]);
    assert!(failed.error.is_some());

    let second = crate::helpers::rollout_everyone(&pools, "2026-06", 2).await;

    assert_eq!((second.counts.done, second.counts.skipped), (1, 5));
    for slug in &slugs {
        assert_eq!(
            copy_differs_from_release(&app, slug, "2026-06").await,
            0,
            "{slug}"
        );
    }
}

#[tokio::test]
async fn two_tenants_on_different_releases_see_different_prices_at_the_same_time() {
    let app = spawn_app().await;
    app.import_release("2026-04", &sample_release("2026-04"))
        .await;
    app.import_release("2026-06", &sample_release("2026-06"))
        .await;
    let (_, old_key) = app.tenant_on_release("older", "2026-04").await;
    let (_, new_key) = app.tenant_on_release("newer", "2026-06").await;

    let requests = (0..40).map(|i| {
        let key = if i % 2 == 0 { &old_key } else { &new_key };
        let app = &app;
        async move {
            let item = item_on(app, key, "620098801", "2026-07-01").await.unwrap();
            (
                i % 2 == 0,
                item["unit_price_yen"].as_str().unwrap().to_string(),
            )
        }
    });
    for (older, price) in futures::future::join_all(requests).await {
        assert_eq!(price, if older { "10.10" } else { "9.80" });
    }
    let old_patient = app.insured_patient(&old_key, "中村 明").await;
    let new_patient = app.insured_patient(&new_key, "中村 明").await;
    let (old_priced, new_priced) = tokio::join!(
        enter(&app, &old_key, &old_patient, "2026-07-01", "620098801", 30),
        enter(&app, &new_key, &new_patient, "2026-07-01", "620098801", 30),
    );
    assert_eq!(old_priced.1["total_points"], 30);
    assert_eq!(new_priced.1["total_points"], 29);
}

#[tokio::test]
async fn a_new_tenant_copies_the_newest_release_unless_told_and_an_unknown_one_is_refused() {
    let app = spawn_app().await;
    app.import_release("2026-04", &sample_release("2026-04"))
        .await;
    app.import_release("2026-06", &sample_release("2026-06"))
        .await;

    let newest = app
        .create_tenant(&crate::helpers::unique_slug("newest"), "N")
        .await;
    assert_eq!(newest["master_release"], "2026-06");
    let unknown = app
        .admin_request(Method::POST, "/admin/tenants")
        .json(&json!({"slug": crate::helpers::unique_slug("nope"), "name": "x", "master_release": "1999-01"}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(unknown, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["errors"][0]["field"], "master_release");
}

#[tokio::test]
async fn master_item_search_pages_and_validates() {
    let app = spawn_app().await;
    app.import_release("2026-04", &sample_release("2026-04"))
        .await;
    let (_, key) = app.tenant_on_release("search", "2026-04").await;

    let drugs = app
        .clinic_json(&key, "/v1/master/items?kind=drug&on=2026-07-01&limit=5")
        .await;
    assert_eq!(drugs["items"].as_array().unwrap().len(), 5);
    let cursor = drugs["next_cursor"].as_str().unwrap();
    let rest = app
        .clinic_json(
            &key,
            &format!("/v1/master/items?kind=drug&on=2026-07-01&limit=50&cursor={cursor}"),
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 6);
    assert!(rest["next_cursor"].is_null());

    let by_name = app.clinic_json(&key, "/v1/master/items?q=再診").await;
    assert_eq!(by_name["items"].as_array().unwrap().len(), 2);
    let wildcard = app.clinic_json(&key, "/v1/master/items?q=%25").await;
    assert_eq!(wildcard["items"], json!([]));

    for bad in [
        "kind=surgery",
        "on=2026-13-01",
        "limit=0",
        "limit=9999",
        "cursor=zzz",
        "colour=red",
    ] {
        let response = app
            .clinic_request(Method::GET, &format!("/v1/master/items?{bad}"), &key)
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
}

#[tokio::test]
async fn a_tenant_on_another_cluster_gets_its_copy_rollouts_and_migrations_by_copy() {
    let (app, _, other) = crate::helpers::spawn_app_on_two_clusters(|_| {}).await;
    app.import_release("2026-04", &sample_release("2026-04"))
        .await;
    app.import_release("2026-06", &sample_release("2026-06"))
        .await;
    let slug = crate::helpers::unique_slug("remote");
    let created = app
        .admin_request(Method::POST, "/admin/tenants")
        .json(&json!({"slug": slug, "name": "Remote clinic", "cluster": "second", "master_release": "2026-04"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let (_, key) = app.issue_key(&slug).await;

    let before = item_on(&app, &key, "620098801", "2026-07-01")
        .await
        .unwrap();
    assert_eq!(before["unit_price_yen"], "10.10");
    let report = crate::helpers::rollout_everyone(&app.app_state.pools, "2026-06", 1).await;
    assert_eq!(report.counts.done, 1);
    let after = item_on(&app, &key, "620098801", "2026-07-01")
        .await
        .unwrap();
    assert_eq!(after["unit_price_yen"], "9.80");
    assert!(item_on(&app, &key, "140000610", "2026-07-01")
        .await
        .is_none());

    // The schema lives in the other database, not the control one.
    let (remote, connection) = tokio_postgres::connect(&other, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let copied: i64 = remote
        .query_one(
            &format!("SELECT count(*) FROM \"t_{slug}\".master_items"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let release: i64 = app
        .db()
        .await
        .query_one(
            "SELECT count(*) FROM recept.master_items WHERE version = '2026-06'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(copied, release);
    let migrated = recept::migrate::run(
        &app.app_state.pools,
        &recept::migrate::MigrationSet::with_extra(&[(
            "V100__remote",
            "CREATE TABLE remote_note (x int)",
        )])
        .unwrap(),
        &recept::migrate::RunOptions {
            concurrency: 1,
            ..Default::default()
        },
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(migrated.migrated, 1);
    let version: i32 = app
        .db()
        .await
        .query_one(
            "SELECT schema_version FROM recept.tenants WHERE slug = $1",
            &[&slug],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 100);
}
