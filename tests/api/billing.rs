//! The clinic billing API against the billing rules in worked examples.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, sample_release, spawn_app, TestApp};

/// A server with the sample releases and one clinic on `2026-04`.
async fn clinic() -> (TestApp, String) {
    let app = spawn_app().await;
    app.import_release("2026-04", &sample_release("2026-04"))
        .await;
    let (_, key) = app.tenant_on_release("billing", "2026-04").await;
    (app, key)
}

async fn post(app: &TestApp, key: &str, path: &str, body: Value) -> reqwest::Response {
    app.clinic_request(Method::POST, path, key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn created(app: &TestApp, key: &str, path: &str, body: Value) -> Value {
    let response = post(app, key, path, body).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{path}: {body}");
    body
}

/// A patient with one insurance per (rate, from, to).
async fn patient(app: &TestApp, key: &str, insurances: &[(i64, &str, Option<&str>)]) -> String {
    let insurances: Vec<Value> = insurances
        .iter()
        .map(|(rate, from, to)| {
            json!({"insurer_number": "06132013", "symbol": "1234", "number": "56",
                   "copay_rate": rate, "valid_from": from, "valid_to": to})
        })
        .collect();
    let body = created(
        app,
        key,
        "/v1/patients",
        json!({"name": "山田 太郎", "name_kana": "ヤマダ タロウ", "birth_date": "1960-04-01",
               "sex": "male", "insurances": insurances}),
    )
    .await;
    body["id"].as_str().unwrap().to_string()
}

async fn encounter(
    app: &TestApp,
    key: &str,
    patient: &str,
    date: &str,
    items: &[(&str, i64)],
) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(code, quantity)| json!({"code": code, "quantity": quantity}))
        .collect();
    created(
        app,
        key,
        "/v1/encounters",
        json!({"patient_id": patient, "date": date, "diagnoses": ["8833421"], "items": items}),
    )
    .await
}

#[tokio::test]
async fn a_charge_ending_in_5_yen_rounds_up_and_one_ending_in_4_rounds_down() {
    let (app, key) = clinic().await;
    let p = patient(&app, &key, &[(30, "2024-01-01", None)]).await;

    // 再診料 73 + 外来管理加算 52 = 125 points → 375 yen at 30% → 380 yen.
    let up = encounter(
        &app,
        &key,
        &p,
        "2026-05-15",
        &[("112007410", 1), ("112011010", 1)],
    )
    .await;
    // 再診料 73 + 皮下注射 25 = 98 points → 294 yen at 30% → 290 yen.
    let down = encounter(
        &app,
        &key,
        &p,
        "2026-05-15",
        &[("112007410", 1), ("130000310", 1)],
    )
    .await;

    assert_eq!(
        (up["total_points"].as_i64(), up["charge_yen"].as_i64()),
        (Some(125), Some(380))
    );
    assert_eq!(
        (down["total_points"].as_i64(), down["charge_yen"].as_i64()),
        (Some(98), Some(290))
    );
    assert_eq!(up["copay_rate"], 30);
}

#[tokio::test]
async fn drug_lines_at_15_yen_15_01_yen_and_25_yen() {
    let (app, key) = clinic().await;
    let p = patient(&app, &key, &[(30, "2024-01-01", None)]).await;

    let e = encounter(
        &app,
        &key,
        &p,
        "2026-05-15",
        &[
            ("620009129", 1),
            ("620002024", 1),
            ("622077801", 1),
            ("620098801", 14),
        ],
    )
    .await;

    let points: Vec<i64> = e["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["points"].as_i64().unwrap())
        .collect();
    // 15.00 → 1; 15.01 → 2; 25.00 → 2; 10.10 × 14 = 141.40 → 1 + ceil(126.40 / 10) = 14.
    assert_eq!(points, vec![1, 2, 2, 14]);
    assert_eq!(e["total_points"], 19);
}

#[tokio::test]
async fn a_fee_revision_applies_from_its_first_day() {
    let (app, key) = clinic().await;
    let p = patient(&app, &key, &[(30, "2024-01-01", None)]).await;

    let before = encounter(&app, &key, &p, "2026-05-31", &[("112007410", 1)]).await;
    let first_day = encounter(&app, &key, &p, "2026-06-01", &[("112007410", 1)]).await;

    assert_eq!(before["lines"][0]["points"], 73);
    assert_eq!(first_day["lines"][0]["points"], 75);
}

#[tokio::test]
async fn insurance_over_time_sets_the_copay_and_none_means_100_percent() {
    let (app, key) = clinic().await;
    let p = patient(
        &app,
        &key,
        &[
            (30, "2020-01-01", Some("2026-03-31")),
            (20, "2026-04-01", Some("2026-04-30")),
        ],
    )
    .await;

    let march = encounter(&app, &key, &p, "2026-03-31", &[("113001810", 1)]).await;
    let april = encounter(&app, &key, &p, "2026-04-01", &[("113001810", 1)]).await;
    let may = encounter(&app, &key, &p, "2026-05-01", &[("113001810", 1)]).await;

    // 225 points = 2,250 yen.
    assert_eq!(
        (march["copay_rate"].as_i64(), march["charge_yen"].as_i64()),
        (Some(30), Some(680))
    );
    assert_eq!(
        (april["copay_rate"].as_i64(), april["charge_yen"].as_i64()),
        (Some(20), Some(450))
    );
    assert_eq!(
        (may["copay_rate"].as_i64(), may["charge_yen"].as_i64()),
        (Some(100), Some(2250))
    );
    assert!(may["insurer_number"].is_null());
}

#[tokio::test]
async fn a_monthly_claim_sums_its_visits_and_leaves_out_voided_ones() {
    let (app, key) = clinic().await;
    let p = patient(&app, &key, &[(30, "2024-01-01", None)]).await;
    let mut kept = Vec::new();
    for (date, code) in [
        ("2026-05-01", "111000110"),
        ("2026-05-08", "112007410"),
        ("2026-05-08", "160000310"),
        ("2026-05-22", "112007410"),
        ("2026-05-29", "112007410"),
    ] {
        kept.push(encounter(&app, &key, &p, date, &[(code, 1)]).await);
    }
    let voided = encounter(&app, &key, &p, "2026-05-30", &[("160072310", 1)]).await;
    encounter(&app, &key, &p, "2026-06-01", &[("112007410", 1)]).await;
    let void = post(
        &app,
        &key,
        &format!("/v1/encounters/{}/void", voided["id"].as_str().unwrap()),
        json!({"reason": "entered twice"}),
    )
    .await;
    assert_eq!(void.status(), StatusCode::OK);

    let generated: Value = post(
        &app,
        &key,
        "/v1/claims/generate",
        json!({"month": "2026-05"}),
    )
    .await
    .json()
    .await
    .unwrap();

    let claims = generated["claims"]
        .as_array()
        .unwrap_or_else(|| panic!("{generated}"));
    assert_eq!(claims.len(), 1);
    let claim = &claims[0];
    let points: i64 = kept
        .iter()
        .map(|e| e["total_points"].as_i64().unwrap())
        .sum();
    let charge: i64 = kept.iter().map(|e| e["charge_yen"].as_i64().unwrap()).sum();
    assert_eq!(points, 288 + 73 + 26 + 73 + 73);
    assert_eq!(claim["total_points"].as_i64(), Some(points));
    assert_eq!(claim["charge_yen"].as_i64(), Some(charge));
    assert_eq!(claim["visit_days"], 4);
    assert_eq!(claim["diagnoses"], json!(["8833421"]));
    assert_eq!(claim["status"], "draft");
    let id = claim["id"].as_str().unwrap();
    let shown = app.clinic_json(&key, &format!("/v1/claims/{id}")).await;
    assert_eq!(shown["encounters"].as_array().unwrap().len(), 5);

    // Confirmed: final, its encounters cannot be voided, regeneration keeps it.
    let confirmed = post(&app, &key, &format!("/v1/claims/{id}/confirm"), json!({})).await;
    assert_eq!(confirmed.status(), StatusCode::OK);
    let again = post(&app, &key, &format!("/v1/claims/{id}/confirm"), json!({})).await;
    assert_problem(again, StatusCode::CONFLICT).await;
    let blocked = post(
        &app,
        &key,
        &format!("/v1/encounters/{}/void", kept[0]["id"].as_str().unwrap()),
        json!({}),
    )
    .await;
    assert_problem(blocked, StatusCode::CONFLICT).await;
    let regenerated: Value = post(
        &app,
        &key,
        "/v1/claims/generate",
        json!({"month": "2026-05"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(regenerated["claims"], json!([]));
    let listed = app.clinic_json(&key, "/v1/claims?month=2026-05").await;
    assert_eq!(listed["claims"][0]["status"], "confirmed");

    let export = app
        .clinic_request(Method::GET, "/v1/claims/export?month=2026-05", &key)
        .send()
        .await
        .unwrap();
    assert!(export.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = export.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("claim_id,month,insurer_number"));
    assert!(lines[1].contains(&format!(",4,{points},{charge},8833421")));
}

#[tokio::test]
async fn payments_reduce_the_balance_and_cannot_overpay() {
    let (app, key) = clinic().await;
    let p = patient(&app, &key, &[(30, "2024-01-01", None)]).await;
    let e = encounter(&app, &key, &p, "2026-05-15", &[("111000110", 1)]).await;
    // 288 points → 864 yen → 860 yen.
    assert_eq!(e["charge_yen"], 860);
    let id = e["id"].as_str().unwrap();

    created(
        &app,
        &key,
        "/v1/payments",
        json!({"encounter_id": id, "amount_yen": 500, "method": "cash"}),
    )
    .await;
    let over = post(
        &app,
        &key,
        "/v1/payments",
        json!({"encounter_id": id, "amount_yen": 361, "method": "card"}),
    )
    .await;
    let body = assert_problem(over, StatusCode::CONFLICT).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("amount_yen 361") && detail.contains("(360 yen)"),
        "{detail}"
    );

    let balance = app
        .clinic_json(&key, &format!("/v1/patients/{p}/balance"))
        .await;
    assert_eq!(
        balance,
        json!({"patient_id": p, "billed_yen": 860, "paid_yen": 500, "outstanding_yen": 360})
    );
}

#[tokio::test]
async fn encounter_lines_that_cannot_be_priced_are_named() {
    let (app, key) = clinic().await;
    let p = patient(&app, &key, &[(30, "2024-01-01", None)]).await;

    let response = post(
        &app,
        &key,
        "/v1/encounters",
        json!({"patient_id": p, "date": "2026-07-01", "diagnoses": ["112007410"],
               "items": [{"code": "112007410", "quantity": 1}, {"code": "nope", "quantity": 1},
                         {"code": "8833421", "quantity": 1}, {"code": "140000610", "quantity": 1}]}),
    )
    .await;
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["items/1/code", "items/2/code", "diagnoses/0"]);

    let zero = post(
        &app,
        &key,
        "/v1/encounters",
        json!({"patient_id": p, "date": "2026-07-01", "items": [{"code": "112007410", "quantity": 0}]}),
    )
    .await;
    let body = assert_problem(zero, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["errors"][0]["field"], "items/0/quantity");
    let listed = app
        .clinic_json(&key, &format!("/v1/encounters?patient_id={p}"))
        .await;
    assert_eq!(listed["encounters"], json!([]));
}

#[tokio::test]
async fn a_patients_insurances_are_read_in_order_with_their_fields_only() {
    let (app, key) = clinic().await;
    // Entered newest first; read oldest first, whichever connection serves.
    let p = patient(
        &app,
        &key,
        &[
            (30, "2025-04-01", None),
            (20, "2023-01-01", Some("2025-03-31")),
        ],
    )
    .await;
    let bare = created(
        &app,
        &key,
        "/v1/patients",
        json!({"name": "佐藤 花子", "birth_date": "1990-01-01", "sex": "female"}),
    )
    .await;
    for _ in 0..3 {
        let read = app.clinic_json(&key, &format!("/v1/patients/{p}")).await;
        let insurances = read["insurances"].as_array().unwrap();
        let froms: Vec<&str> = insurances
            .iter()
            .map(|i| i["valid_from"].as_str().unwrap())
            .collect();
        assert_eq!(froms, ["2023-01-01", "2025-04-01"], "{read}");
        assert_eq!(insurances[0]["copay_rate"], 20);
        assert_eq!(insurances[0]["valid_to"], "2025-03-31");
        assert_eq!(insurances[0]["symbol"], "1234");
        let mut fields: Vec<&str> = insurances[0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "copay_rate",
                "id",
                "income_category",
                "insurer_number",
                "kind",
                "number",
                "relation",
                "symbol",
                "valid_from",
                "valid_to"
            ],
            "{read}"
        );
        let path = format!("/v1/patients/{}", bare["id"].as_str().unwrap());
        let read = app.clinic_json(&key, &path).await;
        assert_eq!(read["insurances"], json!([]), "{read}");
    }
}

#[tokio::test]
async fn a_patient_is_updated_only_with_the_current_etag() {
    let (app, key) = clinic().await;
    let p = patient(&app, &key, &[(30, "2024-01-01", None)]).await;
    let first = app
        .clinic_request(Method::GET, &format!("/v1/patients/{p}"), &key)
        .send()
        .await
        .unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_string();

    let patch = |etag: Option<String>, body: Value| {
        let mut request = app
            .clinic_request(Method::PATCH, &format!("/v1/patients/{p}"), &key)
            .json(&body);
        if let Some(etag) = etag {
            request = request.header("if-match", etag);
        }
        request.send()
    };
    let updated = patch(
        Some(etag.clone()),
        json!({"phone": "03-1234-5678", "name_kana": null}),
    )
    .await
    .unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    let new_etag = updated.headers()["etag"].to_str().unwrap().to_string();
    assert_ne!(new_etag, etag);
    let body: Value = updated.json().await.unwrap();
    assert_eq!(body["phone"], "03-1234-5678");
    assert!(body["name_kana"].is_null());
    assert_eq!(body["name"], "山田 太郎");

    assert_problem(
        patch(Some(etag), json!({"phone": "x"})).await.unwrap(),
        StatusCode::PRECONDITION_FAILED,
    )
    .await;
    assert_problem(
        patch(None, json!({"phone": "x"})).await.unwrap(),
        StatusCode::PRECONDITION_REQUIRED,
    )
    .await;
    assert_problem(
        patch(Some(new_etag), json!({"sex": "robot"}))
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
}

#[tokio::test]
async fn patients_are_found_by_name_or_kana_prefix_page_by_page() {
    let (app, key) = clinic().await;
    for (name, kana) in [
        ("佐藤 花子", "サトウ ハナコ"),
        ("佐藤 一郎", "サトウ イチロウ"),
        ("鈴木 次郎", "スズキ ジロウ"),
    ] {
        created(
            &app,
            &key,
            "/v1/patients",
            json!({"name": name, "name_kana": kana, "birth_date": "1980-01-01", "sex": "female"}),
        )
        .await;
    }

    let first = app.clinic_json(&key, "/v1/patients?q=サトウ&limit=1").await;
    assert_eq!(first["patients"].as_array().unwrap().len(), 1);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app
        .clinic_json(
            &key,
            &format!("/v1/patients?q=サトウ&limit=1&cursor={cursor}"),
        )
        .await;
    assert_eq!(second["patients"].as_array().unwrap().len(), 1);
    let by_name = app.clinic_json(&key, "/v1/patients?q=鈴木").await;
    assert_eq!(by_name["patients"][0]["name"], "鈴木 次郎");
    let wildcard = app.clinic_json(&key, "/v1/patients?q=%25").await;
    assert_eq!(wildcard["patients"], json!([]));
}
