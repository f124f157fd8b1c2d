//! The month's electronic claims file (RECEIPTC.UKE): produced from the
//! confirmed claims, read back by recept's own reader, and refused with
//! the claim and field named when the clinic's data cannot make one.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::billing_rules::clinic;
use crate::helpers::{assert_problem, TestApp};

async fn export(app: &TestApp, key: &str, query: &str) -> reqwest::Response {
    app.clinic_request(Method::GET, &format!("/v1/claims/export?{query}"), key)
        .send()
        .await
        .unwrap()
}

async fn set_profile(app: &TestApp, slug: &str) {
    let set = app
        .admin_request(Method::PUT, &format!("/admin/tenants/{slug}/profile"))
        .json(&json!({"name": "札幌内科クリニック", "institution_code": "0113719", "prefecture_code": "01",
                      "phone": "011-123-4567"}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::OK);
}

/// Generates and confirms the month's claims: their JSON.
async fn confirmed(app: &TestApp, key: &str, month: &str) -> Vec<Value> {
    let generated = app
        .clinic_post(key, "/v1/claims/generate", json!({ "month": month }))
        .await;
    let mut claims = Vec::new();
    for claim in generated["claims"].as_array().unwrap() {
        let path = format!("/v1/claims/{}/confirm", claim["id"].as_str().unwrap());
        claims.push(app.clinic_post(key, &path, json!({})).await);
    }
    claims
}

#[tokio::test]
async fn a_months_claims_file_is_read_back_whole_and_matches_the_claims() {
    let (app, key, slug) = clinic().await;
    set_profile(&app, &slug).await;
    // A late-elderly patient (国保連) who reaches the ceiling, with two
    // diseases, one of them main, a drug unit over 14 days and a voided
    // visit.
    let elder = app.clinic_post(&key, "/v1/patients", json!({"name": "電算 花子", "name_kana": "デンサン ハナコ",
        "birth_date": "1945-03-03", "sex": "female",
        "insurances": [{"insurer_number": "39132015", "kind": "late_elderly", "income_category": "ippan",
                        "number": "12345678", "valid_from": "2020-01-01"}]}))
    .await;
    let elder = elder["id"].as_str().unwrap().to_string();
    for (code, main) in [("8833421", true), ("2500013", false)] {
        app.clinic_post(
            &key,
            &format!("/v1/patients/{elder}/diseases"),
            json!({"code": code, "start_date": "2025-04-01", "main": main}),
        )
        .await;
    }
    let mut visits = Vec::new();
    for date in ["2026-05-01", "2026-05-11", "2026-05-21"] {
        let visit = app.clinic_post(&key, "/v1/encounters", json!({"patient_id": elder, "date": date,
            "items": [{"code": "112007410", "quantity": 1}, {"code": "160095710", "quantity": 80}],
            "drug_units": [{"kind": "internal", "days": 14,
                            "drugs": [{"code": "620098801", "quantity": 3}, {"code": "620001883", "quantity": 2}]}]}))
        .await;
        visits.push(visit["id"].as_str().unwrap().to_string());
    }
    let voided = app
        .clinic_post(
            &key,
            "/v1/encounters",
            json!({"patient_id": elder, "date": "2026-05-25",
        "items": [{"code": "112007410", "quantity": 1}]}),
        )
        .await;
    app.clinic_post(
        &key,
        &format!("/v1/encounters/{}/void", voided["id"].as_str().unwrap()),
        json!({}),
    )
    .await;
    // An employee-insured patient (支払基金), in another file.
    let worker = app.clinic_post(&key, "/v1/patients", json!({"name": "社保 一郎", "birth_date": "1980-05-05",
        "sex": "male", "insurances": [{"insurer_number": "06132013", "kind": "employee", "relation": "dependent",
        "symbol": "12", "number": "34", "valid_from": "2020-01-01"}]}))
    .await;
    let worker = worker["id"].as_str().unwrap().to_string();
    app.clinic_post(
        &key,
        &format!("/v1/patients/{worker}/diseases"),
        json!({"code": "4659007", "start_date": "2026-05-10", "main": true, "suspected": true}),
    )
    .await;
    app.clinic_post(
        &key,
        "/v1/encounters",
        json!({"patient_id": worker, "date": "2026-05-10",
        "items": [{"code": "111000110", "quantity": 1}]}),
    )
    .await;

    let claims = confirmed(&app, &key, "2026-05").await;
    assert_eq!(claims.len(), 2);

    let response = export(&app, &key, "month=2026-05&format=uke&payer=kokuho").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    assert!(response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("RECEIPTC.UKE"));
    let bytes = response.bytes().await.unwrap();
    assert_eq!(*bytes.last().unwrap(), 0x1A, "the final EOF byte");
    assert!(bytes[..bytes.len() - 1].ends_with(b"\r\n"));
    assert!(
        !bytes.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
        "CRLF only"
    );
    let (text, _, malformed) = encoding_rs::SHIFT_JIS.decode(&bytes[..bytes.len() - 1]);
    assert!(!malformed, "Shift_JIS");
    let kinds: Vec<&str> = text
        .split("\r\n")
        .filter(|r| !r.is_empty())
        .map(|r| &r[..2])
        .collect();
    // IR, then RE HO SY SY, the lines of three visits, then GO.
    assert_eq!(&kinds[..5], ["IR", "RE", "HO", "SY", "SY"]);
    assert_eq!(kinds.iter().filter(|k| **k == "SI").count(), 6);
    assert_eq!(kinds.iter().filter(|k| **k == "IY").count(), 6);
    assert_eq!(*kinds.last().unwrap(), "GO");
    let file = recept::uke::read(&bytes).expect("our reader accepts the file");
    let elder_claim = claims
        .iter()
        .find(|c| c["insurer_number"] == "39132015")
        .unwrap();
    assert_eq!(file.payer, "2");
    assert_eq!(file.institution, "0113719");
    assert_eq!(file.billed, "202606");
    assert_eq!(file.claims.len(), 1);
    let read = &file.claims[0];
    assert_eq!(read.kind, "1318");
    assert_eq!(read.month, "202605");
    assert_eq!(read.insurer, "39132015");
    assert_eq!(read.points, elder_claim["total_points"].as_i64().unwrap());
    assert_eq!(read.days, 3);
    // The ceiling applied: the burden is what the month was charged.
    assert_eq!(read.burden, Some(18_000));
    assert_eq!(elder_claim["charge_yen"], 18_000);
    assert_eq!(
        read.diseases,
        [
            ("8833421".to_string(), true),
            ("2500013".to_string(), false)
        ]
    );
    assert_eq!(file.total_points, read.points);

    let shaho = export(&app, &key, "month=2026-05&format=uke&payer=shaho").await;
    let shaho = recept::uke::read(&shaho.bytes().await.unwrap()).expect("the other payer's file");
    assert_eq!(shaho.payer, "1");
    assert_eq!(
        (shaho.claims.len(), shaho.claims[0].kind.as_str()),
        (1, "1116")
    );
    // The CSV stays available.
    let csv = export(&app, &key, "month=2026-05").await;
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
}

#[tokio::test]
async fn a_clinic_or_claim_lacking_what_the_file_needs_is_told_what_is_missing() {
    let (app, key, slug) = clinic().await;
    let patient = app.clinic_post(&key, "/v1/patients", json!({"name": "不足 太郎", "birth_date": "1980-05-05",
        "sex": "other", "insurances": [{"insurer_number": "06132013", "kind": "employee", "valid_from": "2020-01-01"}]}))
    .await;
    let patient = patient["id"].as_str().unwrap().to_string();
    app.clinic_post(
        &key,
        "/v1/encounters",
        json!({"patient_id": patient, "date": "2026-05-10",
        "items": [{"code": "111000110", "quantity": 1}]}),
    )
    .await;
    let claims = confirmed(&app, &key, "2026-05").await;
    let claim = claims[0]["id"].as_str().unwrap();

    // No institution code yet.
    let problem = assert_problem(
        export(&app, &key, "month=2026-05&format=uke&payer=shaho").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(
        problem["errors"][0]["field"], "clinic/institution_code",
        "{problem}"
    );

    // With one: the claim's patient has no sex a claim can state, and no
    // disease; both are named.
    set_profile(&app, &slug).await;
    let problem = assert_problem(
        export(&app, &key, "month=2026-05&format=uke&payer=shaho").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            format!("claims/{claim}/patient/sex"),
            format!("claims/{claim}/diseases")
        ],
        "{problem}"
    );

    // Nothing to send to a payer is said so, and a bad query is named.
    let none = assert_problem(
        export(&app, &key, "month=2026-05&format=uke&payer=kokuho").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(none["errors"][0]["field"], "month");
    for (query, field) in [
        ("month=2026-05&format=uke", "payer"),
        ("month=2026-05&format=pdf", "format"),
        ("month=2026-05&payer=shaho", "payer"),
    ] {
        let problem = assert_problem(
            export(&app, &key, query).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{query}");
    }
}

fn recept(args: &[&str], db_url: &str) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_recept"));
    for (name, _) in std::env::vars() {
        if name.starts_with("RECEPT__") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .env("RECEPT__CLUSTERS__MAIN__URL", db_url)
        .env("RECEPT__ADMIN__TOKEN", "0123456789abcdef0123")
        .env(
            "RECEPT__CLINIC__KEY_SECRET",
            "0123456789abcdef0123456789abcdef",
        )
        .output()
        .expect("recept runs")
}

#[tokio::test]
async fn the_command_line_writes_one_tenants_file_or_every_tenants_and_checks_a_file() {
    let (app, key, slug) = clinic().await;
    set_profile(&app, &slug).await;
    let patient = app.clinic_post(&key, "/v1/patients", json!({"name": "命令 行", "birth_date": "1960-02-02",
        "sex": "male", "insurances": [{"insurer_number": "138057", "kind": "national", "valid_from": "2020-01-01"}]}))
    .await;
    let patient = patient["id"].as_str().unwrap().to_string();
    app.clinic_post(
        &key,
        &format!("/v1/patients/{patient}/diseases"),
        json!({"code": "8833421", "start_date": "2026-01-05", "main": true}),
    )
    .await;
    app.clinic_post(
        &key,
        "/v1/encounters",
        json!({"patient_id": patient, "date": "2026-05-07",
        "items": [{"code": "112007410", "quantity": 1}]}),
    )
    .await;
    confirmed(&app, &key, "2026-05").await;
    // A second tenant with nothing to send is reported, not fatal.
    app.tenant_on_release("quiet", "2026-04").await;
    let out = tempfile::tempdir().unwrap();

    let file = out.path().join("RECEIPTC.UKE");
    let one = recept(
        &[
            "claims",
            "uke",
            "--tenant",
            &slug,
            "--month",
            "2026-05",
            "--payer",
            "kokuho",
            "--out",
            file.to_str().unwrap(),
        ],
        &app.db_url,
    );
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    let read = recept::uke::read(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!((read.claims.len(), read.total_points), (1, 73));

    let every = out.path().join("all");
    let all = recept(
        &[
            "claims",
            "uke",
            "--cluster",
            "main",
            "--month",
            "2026-05",
            "--payer",
            "kokuho",
            "--out",
            every.to_str().unwrap(),
        ],
        &app.db_url,
    );
    let printed = String::from_utf8_lossy(&all.stdout).into_owned();
    assert!(
        all.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&all.stderr)
    );
    assert!(every.join(&slug).join("RECEIPTC.UKE").is_file());
    assert!(
        printed.contains("wrote 1 file(s)") && printed.contains("1 tenant(s) had none"),
        "{printed}"
    );

    let check = recept(&["claims", "check", file.to_str().unwrap()], "unused");
    let printed = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        check.status.success() && printed.contains("1 claims, 73 points"),
        "{printed}"
    );
    let mut damaged = std::fs::read(&file).unwrap();
    damaged.pop();
    std::fs::write(&file, damaged).unwrap();
    let refused = recept(&["claims", "check", file.to_str().unwrap()], "unused");
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(
        !refused.status.success() && said.contains("0x1A") && !said.contains("panicked"),
        "{said}"
    );
}
