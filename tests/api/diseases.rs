//! A patient's disease list (傷病名), kept apart from single visits and
//! checked against the clinic's master copy.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::billing_rules::clinic;
use crate::helpers::assert_problem;

#[tokio::test]
async fn a_patients_diseases_are_kept_checked_against_the_master_copy() {
    let (app, key, _) = clinic().await;
    let id = app.insured_patient(&key, "病名 一郎").await;
    let path = format!("/v1/patients/{id}/diseases");
    let add = |body: Value| {
        app.clinic_request(Method::POST, &path, &key)
            .json(&body)
            .send()
    };

    let added = add(json!({"code": "8833421", "start_date": "2025-01-10", "main": true}))
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::CREATED);
    let added: Value = added.json().await.unwrap();
    assert_eq!(
        (
            added["name"].as_str(),
            added["outcome"].as_str(),
            added["main"].as_bool(),
            added["suspected"].as_bool()
        ),
        (
            Some("高血圧症"),
            Some("continuing"),
            Some(true),
            Some(false)
        )
    );
    for (body, field) in [
        (
            json!({"code": "620098801", "start_date": "2025-01-10"}),
            "code",
        ),
        (
            json!({"code": "9999999", "start_date": "2025-01-10"}),
            "code",
        ),
        (
            json!({"code": "8833421", "start_date": "2020-01-10"}),
            "code",
        ),
        (
            json!({"code": "8833421", "start_date": "2025-01-10", "outcome": "cured"}),
            "outcome_date",
        ),
        (
            json!({"code": "8833421", "start_date": "2025-01-10", "outcome_date": "2025-02-01"}),
            "outcome_date",
        ),
        (
            json!({"code": "8833421", "start_date": "2025-01-10", "outcome": "gone"}),
            "outcome",
        ),
    ] {
        let problem =
            assert_problem(add(body).await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let suspected = add(json!({"code": "4659007", "start_date": "2026-02-01", "suspected": true}))
        .await
        .unwrap();
    let suspected: Value = suspected.json().await.unwrap();

    let entry = format!("{path}/{}", added["id"].as_str().unwrap());
    let patch = |body: Value| {
        app.clinic_request(Method::PATCH, &entry, &key)
            .json(&body)
            .send()
    };
    let early = patch(json!({"outcome": "cured", "outcome_date": "2024-12-31"}))
        .await
        .unwrap();
    assert_problem(early, StatusCode::UNPROCESSABLE_ENTITY).await;
    let cured = patch(json!({"outcome": "cured", "outcome_date": "2026-06-01"}))
        .await
        .unwrap();
    assert_eq!(cured.status(), StatusCode::OK);
    let cured: Value = cured.json().await.unwrap();
    assert_eq!(
        (cured["outcome"].as_str(), cured["outcome_date"].as_str()),
        (Some("cured"), Some("2026-06-01"))
    );
    let again: Value = patch(json!({"outcome": "continuing"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(again["outcome_date"].is_null());

    let list = app.clinic_json(&key, &path).await;
    let codes: Vec<&str> = list["diseases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["8833421", "4659007"]);
    let removed = app
        .clinic_request(
            Method::DELETE,
            &format!("{path}/{}", suspected["id"].as_str().unwrap()),
            &key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::OK);
    assert_eq!(
        app.clinic_json(&key, &path).await["diseases"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let gone = app
        .clinic_request(
            Method::DELETE,
            &format!("{path}/{}", suspected["id"].as_str().unwrap()),
            &key,
        )
        .send()
        .await
        .unwrap();
    assert_problem(gone, StatusCode::NOT_FOUND).await;
    let stranger = app
        .clinic_request(
            Method::GET,
            &format!("/v1/patients/{}/diseases", uuid::Uuid::new_v4()),
            &key,
        )
        .send()
        .await
        .unwrap();
    assert_problem(stranger, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_patients_list_holds_at_most_200_diseases() {
    let (app, key, _) = clinic().await;
    let id = app.insured_patient(&key, "多病 太郎").await;
    let db = app.db().await;
    let slug = app.clinic_json(&key, "/v1/tenant").await["slug"]
        .as_str()
        .unwrap()
        .to_string();
    db.batch_execute(&format!(
        "INSERT INTO \"t_{slug}\".patient_diseases (id, patient_id, code, name, start_date) \
         SELECT gen_random_uuid(), '{id}', '8833421', '高血圧症', '2025-01-01' FROM generate_series(1, 200)"
    ))
    .await
    .unwrap();
    let refused = app
        .clinic_request(Method::POST, &format!("/v1/patients/{id}/diseases"), &key)
        .json(&json!({"code": "8833421", "start_date": "2025-01-10"}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(refused, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("200"),
        "{problem}"
    );
}
