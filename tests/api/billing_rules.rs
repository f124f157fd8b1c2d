//! The billing engine of a receipt computer, over HTTP: drug units, the
//! share from age and insurance, and the monthly high-cost ceiling at the
//! window.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, sample_release, spawn_app, TestApp};

/// A clinic on the sample release 2026-04: (app, key, slug).
pub async fn clinic() -> (TestApp, String, String) {
    let app = spawn_app().await;
    app.import_release("2026-04", &sample_release("2026-04"))
        .await;
    let (slug, key) = app.tenant_on_release("rules", "2026-04").await;
    (app, key, slug)
}

/// A patient born on `birth` with `insurances`: its id.
async fn patient(app: &TestApp, key: &str, birth: &str, insurances: Value) -> String {
    let response = app
        .clinic_request(Method::POST, "/v1/patients", key)
        .json(&json!({"name": "規則 太郎", "birth_date": birth, "sex": "male", "insurances": insurances}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

fn national(from: &str, to: Option<&str>, category: Option<&str>) -> Value {
    json!({"insurer_number": "06132013", "kind": "national", "relation": "insured",
           "income_category": category, "valid_from": from, "valid_to": to})
}

fn late_elderly(from: &str, category: Option<&str>) -> Value {
    json!({"insurer_number": "39132015", "kind": "late_elderly", "income_category": category,
           "valid_from": from})
}

/// Records a visit: (status, body).
async fn visit(app: &TestApp, key: &str, body: Value) -> (StatusCode, Value) {
    let response = app
        .clinic_request(Method::POST, "/v1/encounters", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// A visit of `quantity` × 血液学的検査判断料 (125 points each) on `date`.
async fn judged(app: &TestApp, key: &str, patient: &str, date: &str, quantity: i64) -> Value {
    let (status, body) = visit(
        app,
        key,
        json!({"patient_id": patient, "date": date, "items": [{"code": "160095710", "quantity": quantity}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

#[tokio::test]
async fn a_drug_unit_is_priced_by_its_yen_per_day_times_days_and_a_lone_drug_line_as_before() {
    let (app, key, _) = clinic().await;
    let id = app.insured_patient(&key, "剤 花子").await;

    // 10.10 × 3 + 27.90 × 2 = 86.10 yen a day → 9 points; 14 days → 126.
    let (status, unit) = visit(&app, &key, json!({"patient_id": id, "date": "2026-07-01",
        "drug_units": [{"kind": "internal", "days": 14,
                        "drugs": [{"code": "620098801", "quantity": 3}, {"code": "620001883", "quantity": 2}]}]}))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{unit}");
    assert_eq!(unit["total_points"], 126);
    let lines = unit["lines"].as_array().unwrap();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["points"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [0, 126],
        "the unit's points on its last line"
    );
    assert!(lines
        .iter()
        .all(|l| l["unit"] == 1 && l["unit_kind"] == "internal" && l["unit_days"] == 14));

    // A drug line sent as before: one drug for one day, 141.40 yen → 14.
    let (status, lone) = visit(
        &app,
        &key,
        json!({"patient_id": id, "date": "2026-07-01",
        "items": [{"code": "620098801", "quantity": 14}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(lone["total_points"], 14);
    assert!(lone["lines"][0]["unit"].is_null());

    // As needed per dose, external once (17.10 × 5 = 85.50 yen → 9 points).
    let (_, doses) = visit(&app, &key, json!({"patient_id": id, "date": "2026-07-01",
        "drug_units": [{"kind": "as_needed", "days": 5, "drugs": [{"code": "620098801", "quantity": 1}]},
                       {"kind": "external", "drugs": [{"code": "620007423", "quantity": 5}]}]}))
    .await;
    assert_eq!(doses["total_points"], 5 + 9);

    for (body, field) in [
        (
            json!([{"kind": "internal", "days": 7, "drugs": [{"code": "112007410", "quantity": 1}]}]),
            "drug_units/0/drugs/0/code",
        ),
        (
            json!([{"kind": "internal", "drugs": [{"code": "620098801", "quantity": 1}]}]),
            "drug_units/0/days",
        ),
        (
            json!([{"kind": "external", "days": 3, "drugs": [{"code": "620007423", "quantity": 1}]}]),
            "drug_units/0/days",
        ),
        (
            json!([{"kind": "internal", "days": 7, "drugs": []}]),
            "drug_units/0/drugs",
        ),
    ] {
        let (status, problem) = visit(
            &app,
            &key,
            json!({"patient_id": id, "date": "2026-07-01", "drug_units": body}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert!(
            problem["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field),
            "{field}: {problem}"
        );
    }
}

/// The share and its rule for a visit on `date` of `patient`.
async fn share(app: &TestApp, key: &str, patient: &str, date: &str) -> (i64, String) {
    let body = judged(app, key, patient, date, 1).await;
    // 125 points at the share, rounded to 10 yen.
    let rate = body["copay_rate"].as_i64().unwrap();
    assert_eq!(
        body["charge_before_ceiling_yen"].as_i64().unwrap(),
        (1250 * rate / 100 + 5) / 10 * 10
    );
    (rate, body["copay_rule"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn the_share_follows_age_and_insurance_at_every_boundary() {
    let (app, key, _) = clinic().await;
    // (born, insurances, visits on (date, share, rule)).
    let cases = [
        // Attains 6 on 1 April 2025: 20% until 31 March 2026.
        (
            "2019-04-02",
            json!([national("2019-04-02", None, None)]),
            vec![
                ("2026-03-31", 20, "preschool"),
                ("2026-04-01", 30, "working_age"),
            ],
        ),
        // Born on 1 April: attains 6 on 31 March 2025, at school from 1 April.
        (
            "2019-04-01",
            json!([national("2019-04-01", None, None)]),
            vec![
                ("2025-03-31", 20, "preschool"),
                ("2025-04-01", 30, "working_age"),
            ],
        ),
        // 70 on the 2nd of June: 20% from July; born on the 1st: from June.
        (
            "1956-06-02",
            json!([national("2020-01-01", None, None)]),
            vec![
                ("2026-06-30", 30, "working_age"),
                ("2026-07-01", 20, "elderly"),
            ],
        ),
        (
            "1956-06-01",
            json!([national("2020-01-01", None, None)]),
            vec![
                ("2026-05-31", 30, "working_age"),
                ("2026-06-01", 20, "elderly"),
            ],
        ),
        (
            "1955-01-10",
            json!([national("2020-01-01", None, Some("genekinami_2"))]),
            vec![("2026-06-01", 30, "elderly")],
        ),
        // The 75th birthday moves the patient to the late-elderly system.
        (
            "1951-07-06",
            json!([
                national("2020-01-01", Some("2026-07-05"), None),
                late_elderly("2026-07-06", Some("ippan"))
            ]),
            vec![
                ("2026-07-05", 20, "elderly"),
                ("2026-07-06", 10, "late_elderly"),
            ],
        ),
        // No valid insurance on the day: everything.
        (
            "1990-01-01",
            json!([national("2026-01-01", None, None)]),
            vec![
                ("2025-12-31", 100, "uninsured"),
                ("2026-01-01", 30, "working_age"),
            ],
        ),
    ];
    for (born, insurances, visits) in cases {
        let id = patient(&app, &key, born, insurances).await;
        for (date, rate, rule) in visits {
            assert_eq!(
                share(&app, &key, &id, date).await,
                (rate, rule.to_string()),
                "{born} on {date}"
            );
        }
    }
    for (category, rate) in [
        ("ippan", 10),
        ("ippan_2", 20),
        ("teishotoku_1", 10),
        ("teishotoku_2", 10),
        ("genekinami_1", 30),
        ("genekinami_3", 30),
    ] {
        let elder = patient(
            &app,
            &key,
            "1945-03-03",
            json!([late_elderly("2020-01-01", Some(category))]),
        )
        .await;
        assert_eq!(
            share(&app, &key, &elder, "2026-06-01").await,
            (rate, "late_elderly".to_string()),
            "{category}"
        );
    }

    // A rate typed on the insurance overrides the rules and says so.
    let typed = json!([{"insurer_number": "06132013", "kind": "national", "copay_rate": 30, "valid_from": "2020-01-01"}]);
    let typed = patient(&app, &key, "1955-01-10", typed).await;
    assert_eq!(
        share(&app, &key, &typed, "2026-06-01").await,
        (30, "override".to_string())
    );

    // An insurance with neither kind nor rate, or a late-elderly insurance
    // with an under-70 category, is refused naming the field.
    for (insurance, field) in [
        (
            json!({"insurer_number": "06132013", "valid_from": "2020-01-01"}),
            "insurances/0/kind",
        ),
        (
            json!({"insurer_number": "39132015", "kind": "late_elderly", "income_category": "u", "valid_from": "2020-01-01"}),
            "insurances/0/income_category",
        ),
        (
            json!({"insurer_number": "06132013", "kind": "national", "income_category": "x", "valid_from": "2020-01-01"}),
            "insurances/0/income_category",
        ),
    ] {
        let response = app
            .clinic_request(Method::POST, "/v1/patients", &key)
            .json(&json!({"name": "誤り", "birth_date": "1950-01-01", "sex": "male", "insurances": [insurance]}))
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
}

async fn encounter(app: &TestApp, key: &str, id: &str) -> Value {
    app.clinic_json(key, &format!("/v1/encounters/{id}")).await
}

#[tokio::test]
async fn the_monthly_ceiling_stops_charges_in_the_middle_of_a_month_and_a_void_recomputes_it() {
    let (app, key, _) = clinic().await;
    // Late-elderly, general: 10%, outpatient ceiling 18,000 yen.
    let elder = patient(
        &app,
        &key,
        "1945-03-03",
        json!([late_elderly("2020-01-01", Some("ippan"))]),
    )
    .await;
    // 80 × 125 = 10,000 points: 100,000 yen, 10,000 yen at 10%.
    let first = judged(&app, &key, &elder, "2026-05-01", 80).await;
    let second = judged(&app, &key, &elder, "2026-05-10", 80).await;
    let third = judged(&app, &key, &elder, "2026-05-20", 80).await;
    let charged = |v: &Value| {
        (
            v["charge_before_ceiling_yen"].as_i64(),
            v["charge_yen"].as_i64(),
            v["ceiling_yen"].as_i64(),
        )
    };
    assert_eq!(charged(&first), (Some(10_000), Some(10_000), Some(18_000)));
    assert_eq!(charged(&second), (Some(10_000), Some(8_000), Some(18_000)));
    assert_eq!(charged(&third), (Some(10_000), Some(0), Some(18_000)));
    // The next month starts afresh.
    let june = judged(&app, &key, &elder, "2026-06-01", 80).await;
    assert_eq!(charged(&june), (Some(10_000), Some(10_000), Some(18_000)));

    // A visit entered late, dated before the others, takes its place in
    // the month's order.
    let early = judged(&app, &key, &elder, "2026-05-02", 8).await;
    assert_eq!(early["charge_yen"], 1_000);
    let second_now = encounter(&app, &key, second["id"].as_str().unwrap()).await;
    assert_eq!(second_now["charge_yen"], 7_000);

    // Voiding the first visit lowers the month: later visits owe more.
    let void = app
        .clinic_request(
            Method::POST,
            &format!("/v1/encounters/{}/void", first["id"].as_str().unwrap()),
            &key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(void.status(), StatusCode::OK);
    let mut after = Vec::new();
    for v in [&early, &second, &third] {
        after.push(
            encounter(&app, &key, v["id"].as_str().unwrap()).await["charge_yen"]
                .as_i64()
                .unwrap(),
        );
    }
    assert_eq!(after, [1_000, 10_000, 7_000]);

    // The claim carries the month's figures; the balance what is owed.
    let generated = app
        .clinic_request(Method::POST, "/v1/claims/generate", &key)
        .json(&json!({"month": "2026-05"}))
        .send()
        .await
        .unwrap();
    let claims: Value = generated.json().await.unwrap();
    let claim = &claims["claims"][0];
    assert_eq!(
        (
            claim["charge_yen"].as_i64(),
            claim["charge_before_ceiling_yen"].as_i64()
        ),
        (Some(18_000), Some(21_000))
    );
    let balance = app
        .clinic_json(&key, &format!("/v1/patients/{elder}/balance"))
        .await;
    assert_eq!(balance["billed_yen"], 18_000 + 10_000);
}

#[tokio::test]
async fn the_mhlw_worked_example_for_category_u_at_the_window() {
    let (app, key, _) = clinic().await;
    let worker = patient(
        &app,
        &key,
        "1980-05-05",
        json!([{"insurer_number": "06132013", "kind": "employee",
        "relation": "insured", "income_category": "u", "valid_from": "2020-01-01"}]),
    )
    .await;
    // 800 × 125 = 100,000 points: 総医療費 1,000,000 yen, 3割 300,000 yen.
    let visit = judged(&app, &key, &worker, "2026-05-11", 800).await;
    assert_eq!(visit["charge_before_ceiling_yen"], 300_000);
    assert_eq!(visit["charge_yen"], 87_430);
    assert_eq!(visit["ceiling_yen"], 87_430);
    // 1% of what the month costs after: 10,000 points more → 1,000 yen.
    let more = judged(&app, &key, &worker, "2026-05-12", 80).await;
    assert_eq!(more["charge_yen"], 1_000);
    // Without a certificate, nothing is applied at the window under 70.
    let plain = patient(
        &app,
        &key,
        "1980-05-05",
        json!([national("2020-01-01", None, None)]),
    )
    .await;
    let uncapped = judged(&app, &key, &plain, "2026-05-11", 800).await;
    assert_eq!(
        (
            uncapped["charge_yen"].as_i64(),
            uncapped["ceiling_yen"].as_i64()
        ),
        (Some(300_000), None)
    );
}

#[tokio::test]
async fn visits_of_one_patient_entered_at_once_never_pass_the_ceiling_together() {
    let (app, key, slug) = clinic().await;
    let elder = patient(
        &app,
        &key,
        "1945-03-03",
        json!([late_elderly("2020-01-01", Some("ippan"))]),
    )
    .await;
    let app = std::sync::Arc::new(app);
    // Held, the diagnoses table stops both writes after they have read
    // their month and before they commit, so that they overlap for
    // certain: only the patient's lock keeps the second from reading the
    // month before the first is stored.
    let held = app.lock_table(&slug, "encounter_diagnoses").await;
    let sent: Vec<_> = [1, 2]
        .into_iter()
        .map(|day| {
            let (app, key, elder) = (app.clone(), key.clone(), elder.clone());
            tokio::spawn(async move {
                judged(&app, &key, &elder, &format!("2026-05-{day:02}"), 80).await;
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    held.batch_execute("COMMIT").await.unwrap();
    for request in sent {
        request.await.unwrap();
    }
    let month = app
        .clinic_json(
            &key,
            &format!("/v1/encounters?patient_id={elder}&limit=100"),
        )
        .await;
    let charges: Vec<i64> = month["encounters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["charge_yen"].as_i64().unwrap())
        .collect();
    assert_eq!(
        charges,
        [10_000, 8_000],
        "in date order, the second stops at the ceiling"
    );
}
