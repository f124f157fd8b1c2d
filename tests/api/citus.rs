//! recept on a real Citus cluster (a coordinator and two workers, schema-
//! based sharding on): tenants placed on both workers, every clinic route,
//! migrations, master rollouts, the tenant's life, reports, export and
//! import, and a tenant moved between workers under load. Each test says
//! on stderr that it was skipped when Citus is not installed here.

use std::sync::Arc;

use recept::audit::Actor;
use recept::migrate::{run, MigrationSet, RunOptions};
use recept::tenancy::{transfer, Slug};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::citus_cluster::{citus_database, CitusDatabase};
use crate::helpers::{
    connect, rollout_everyone, sample_release, spawn_app_on, test_settings, unique_slug, TestApp,
};

async fn app_on(db: &CitusDatabase) -> TestApp {
    let app = spawn_app_on(test_settings(&db.url)).await;
    let imported = app
        .import_release("2026-04", &sample_release("2026-04"))
        .await;
    assert_eq!(imported.status(), StatusCode::CREATED);
    app
}

/// A write sent with an `Idempotency-Key`, then again with the same key:
/// both answers, which must be the same.
async fn post_twice(app: &TestApp, key: &str, path: &str, body: Value) -> Value {
    let idempotency = uuid::Uuid::new_v4().to_string();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let response = app
            .clinic_request(Method::POST, path, key)
            .header("idempotency-key", &idempotency)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "POST {path}: {status} {text}");
        answers.push(serde_json::from_str::<Value>(&text).unwrap());
    }
    assert_eq!(answers[0], answers[1], "the replay of POST {path}");
    answers.remove(0)
}

#[tokio::test]
async fn on_citus_tenants_spread_over_both_workers_and_every_clinic_route_answers() {
    let Some(db) = citus_database("on_citus_every_clinic_route").await else {
        return;
    };
    let app = app_on(&db).await;
    let mut slugs = Vec::new();
    for _ in 0..4 {
        slugs.push(app.tenant_on_release("cit", "2026-04").await);
    }
    let mut workers = Vec::new();
    for (slug, _) in &slugs {
        workers.push(db.worker_of(slug).await);
    }
    workers.sort();
    workers.dedup();
    assert_eq!(workers.len(), 2, "tenants on both workers");

    let (slug, key) = &slugs[0];
    let tenant = app.clinic_json(key, "/v1/tenant").await;
    assert_eq!(tenant["schema"], format!("t_{slug}"));
    assert_eq!(tenant["master_release"], "2026-04");
    let patient = post_twice(&app, key, "/v1/patients", json!({"name": "分散 花子",
        "birth_date": "1980-02-29", "sex": "female",
        "insurances": [{"insurer_number": "06132013", "copay_rate": 30, "valid_from": "2020-01-01"}]}))
    .await;
    let id = patient["id"].as_str().unwrap();
    let shown = app
        .clinic_request(Method::GET, &format!("/v1/patients/{id}"), key)
        .send()
        .await
        .unwrap();
    let etag = shown.headers()["etag"].to_str().unwrap().to_string();
    let changed = app
        .clinic_request(Method::PATCH, &format!("/v1/patients/{id}"), key)
        .header("if-match", etag)
        .json(&json!({"phone": "03-0000-0000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(
        app.clinic_json(key, "/v1/patients").await["patients"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let lines = json!([{"code": "111000110", "quantity": 1}, {"code": "620098801", "quantity": 3}]);
    let mut visits = Vec::new();
    for date in ["2026-05-01", "2026-05-15", "2026-05-20"] {
        let visit = post_twice(
            &app,
            key,
            "/v1/encounters",
            json!({"patient_id": id, "date": date,
            "diagnoses": ["8833421"], "items": lines}),
        )
        .await;
        visits.push(visit["id"].as_str().unwrap().to_string());
    }
    app.clinic_json(key, &format!("/v1/encounters/{}", visits[0]))
        .await;
    assert_eq!(
        app.clinic_json(key, "/v1/encounters").await["encounters"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    app.clinic_post(
        key,
        &format!("/v1/encounters/{}/void", visits[2]),
        json!({"reason": "entered twice"}),
    )
    .await;
    post_twice(
        &app,
        key,
        "/v1/payments",
        json!({"encounter_id": visits[0], "amount_yen": 100, "method": "cash"}),
    )
    .await;
    let balance = app
        .clinic_json(key, &format!("/v1/patients/{id}/balance"))
        .await;
    assert_eq!(balance["paid_yen"], 100);
    let items = app
        .clinic_json(key, "/v1/master/items?code=111000110&on=2026-05-01")
        .await;
    assert_eq!(items["items"].as_array().unwrap().len(), 1);

    let generated = app
        .clinic_post(key, "/v1/claims/generate", json!({"month": "2026-05"}))
        .await;
    let claim = generated["claims"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(generated["claims"][0]["visit_days"], 2);
    assert_eq!(
        app.clinic_json(key, "/v1/claims?month=2026-05").await["claims"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        app.clinic_json(key, &format!("/v1/claims/{claim}")).await["encounters"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let confirmed = app
        .clinic_post(key, &format!("/v1/claims/{claim}/confirm"), json!({}))
        .await;
    assert_eq!(
        (confirmed["status"].as_str(), confirmed["month"].as_str()),
        (Some("confirmed"), Some("2026-05"))
    );
    let export = app
        .clinic_request(Method::GET, "/v1/claims/export?month=2026-05", key)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), StatusCode::OK);
    assert!(export.text().await.unwrap().contains(&claim));

    // The billing rules' writes: a disease list, a drug unit, and a
    // month settled under the ceiling (late-elderly, 10%, 18,000 yen).
    let diseases = format!("/v1/patients/{id}/diseases");
    let disease = post_twice(
        &app,
        key,
        &diseases,
        json!({"code": "8833421", "start_date": "2026-05-01", "main": true}),
    )
    .await;
    let entry = format!("{diseases}/{}", disease["id"].as_str().unwrap());
    let cured = app
        .clinic_request(Method::PATCH, &entry, key)
        .json(&json!({"outcome": "cured", "outcome_date": "2026-05-30"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cured.status(), StatusCode::OK);
    assert_eq!(
        app.clinic_json(key, &diseases).await["diseases"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let removed = app
        .clinic_request(Method::DELETE, &entry, key)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::OK);
    let elder = post_twice(&app, key, "/v1/patients", json!({"name": "後期 高齢", "birth_date": "1945-03-03", "sex": "male",
        "insurances": [{"insurer_number": "39132015", "kind": "late_elderly", "income_category": "ippan", "valid_from": "2020-01-01"}]}))
    .await;
    let elder = elder["id"].as_str().unwrap();
    let mut charges = Vec::new();
    for date in ["2026-05-01", "2026-05-02", "2026-05-03"] {
        let visit = post_twice(&app, key, "/v1/encounters", json!({"patient_id": elder, "date": date,
            "items": [{"code": "160095710", "quantity": 80}],
            "drug_units": [{"kind": "internal", "days": 14, "drugs": [{"code": "620098801", "quantity": 3}, {"code": "620001883", "quantity": 2}]}]}))
        .await;
        charges.push(visit["charge_yen"].as_i64().unwrap());
    }
    // 10,126 points: 10,130 yen at 10%; the month stops at 18,000.
    assert_eq!(charges, [10_130, 7_870, 0]);

    // Sizes are read where the data is: the busy tenant's shards hold more
    // than an empty tenant's, which the coordinator's shells would not show.
    let busy = app
        .admin_json(&format!("/admin/tenants/{slug}/stats"))
        .await;
    let idle = app
        .admin_json(&format!("/admin/tenants/{}/stats", slugs[1].0))
        .await;
    assert_eq!(
        (busy["patients"].as_i64(), busy["encounters"].as_i64()),
        (Some(2), Some(6))
    );
    assert!(
        busy["schema_bytes"].as_i64().unwrap() > idle["schema_bytes"].as_i64().unwrap(),
        "{busy} {idle}"
    );
}

const EXTRA: [(&str, &str); 1] = [(
    "V100__visit_room",
    "ALTER TABLE encounters ADD COLUMN room text NOT NULL DEFAULT 'main'; \
     CREATE INDEX encounters_room ON encounters (room); \
     CREATE TABLE rooms (name text PRIMARY KEY);",
)];

#[tokio::test]
async fn on_citus_migrations_rollouts_reports_transfers_and_a_tenants_life_work() {
    let Some(db) = citus_database("on_citus_migrations_rollouts_and_life").await else {
        return;
    };
    let app = app_on(&db).await;
    let (first, first_key) = app.tenant_on_release("life", "2026-04").await;
    let (second, _) = app.tenant_on_release("life", "2026-04").await;
    let patient = app.insured_patient(&first_key, "移動 一郎").await;
    let visit = app
        .clinic_request(Method::POST, "/v1/encounters", &first_key)
        .json(&json!({"patient_id": patient, "date": "2026-05-07", "items": [{"code": "111000110", "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(visit.status(), StatusCode::CREATED);
    let pools = app.app_state.pools.clone();

    // Export, then import as a new tenant on the same coordinator.
    let mut file = Vec::new();
    let exported = transfer::export(&pools, &Slug::parse(&first).unwrap(), &mut file)
        .await
        .unwrap();
    let copy = unique_slug("copy");
    let (_, loaded) = transfer::import(
        &pools,
        &mut file.as_slice(),
        Some(Slug::parse(&copy).unwrap()),
        "main",
        &Actor::operator(),
    )
    .await
    .unwrap();
    assert_eq!(exported, loaded);
    let (_, copy_key) = app.issue_key(&copy).await;
    app.clinic_json(&copy_key, &format!("/v1/patients/{patient}"))
        .await;

    // A migration with DDL Citus forwards to the workers one statement at a time.
    let set = MigrationSet::with_extra(&EXTRA).unwrap();
    let options = RunOptions {
        concurrency: 2,
        retries: 1,
        ..RunOptions::default()
    };
    let summary = run(&pools, &set, &options, |_| {}).await.unwrap();
    // The imported copy is migrated too.
    assert_eq!(
        (summary.migrated, summary.failed.len()),
        (3, 0),
        "{:?}",
        summary.failed
    );
    let coordinator = connect(&db.url).await;
    let rooms: i64 = coordinator
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'room' \
             AND table_schema = ANY ($1)",
            &[&vec![format!("t_{first}"), format!("t_{second}")]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rooms, 2);

    // A master rollout: only the difference, in each tenant's own schema.
    let imported = app
        .import_release("2026-06", &sample_release("2026-06"))
        .await;
    assert_eq!(imported.status(), StatusCode::CREATED);
    let report = rollout_everyone(&pools, "2026-06", 2).await;
    assert_eq!(
        (report.counts.done, report.counts.failed),
        (3, 0),
        "{report:?}"
    );
    let added = app
        .clinic_json(&first_key, "/v1/master/items?code=160022510&on=2026-07-01")
        .await;
    assert_eq!(added["items"].as_array().unwrap().len(), 1);

    let month = app.admin_json("/admin/reports/monthly?month=2026-05").await;
    let listed: Vec<&str> = month["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&first.as_str()), "{month}");

    // Suspend, resume and delete, through the admin API.
    for (action, status) in [
        ("suspend", StatusCode::FORBIDDEN),
        ("resume", StatusCode::OK),
    ] {
        let answered = app
            .admin_request(Method::POST, &format!("/admin/tenants/{first}/{action}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answered.status(), StatusCode::OK, "{action}");
        app.app_state.keys.invalidate_all();
        let seen = app
            .clinic_request(Method::GET, "/v1/tenant", &first_key)
            .send()
            .await
            .unwrap();
        assert_eq!(seen.status(), status, "the clinic after {action}");
    }
    let deleted = app
        .admin_request(Method::DELETE, &format!("/admin/tenants/{second}"))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
}

#[tokio::test]
async fn on_citus_a_tenant_moved_between_workers_under_load_loses_nothing() {
    let Some(db) = citus_database("on_citus_schema_move").await else {
        return;
    };
    let app = Arc::new(app_on(&db).await);
    let (slug, key) = app.tenant_on_release("moving", "2026-04").await;
    let patient = app.insured_patient(&key, "引越 次郎").await;
    let from = db.worker_of(&slug).await;
    let to = if from == db.workers[0] {
        db.workers[1]
    } else {
        db.workers[0]
    };

    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (app, key, patient) = (app.clone(), key.clone(), patient.clone());
            tokio::spawn(async move {
                let mut answered = Vec::new();
                for n in 0..60 {
                    let body = json!({"patient_id": patient, "date": "2026-05-01",
                        "items": [{"code": "111000110", "quantity": 1}], "notes": format!("{writer}-{n}")});
                    let idempotency = uuid::Uuid::new_v4().to_string();
                    let response = app
                        .clinic_request(Method::POST, "/v1/encounters", &key)
                        .header("idempotency-key", idempotency)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    answered.push(response.status());
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let coordinator = connect(&db.url).await;
    coordinator
        .execute(
            "SELECT citus_schema_move($1::text::regnamespace, '127.0.0.1'::text, $2::int)",
            &[&format!("t_{slug}"), &i32::from(to)],
        )
        .await
        .expect("citus_schema_move");
    let mut created = 0i64;
    for writer in writers {
        for status in writer.await.unwrap() {
            assert_eq!(status, StatusCode::CREATED);
            created += 1;
        }
    }

    assert_eq!(db.worker_of(&slug).await, to);
    let stored: i64 = coordinator
        .query_one(&format!("SELECT count(*) FROM t_{slug}.encounters"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, created);
}
