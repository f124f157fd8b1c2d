//! The clinic API cannot be misused: other tenants' ids, retries, bad input.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, sample_release, spawn_app, spawn_app_on, test_settings, TestApp,
};

/// Two clinics on one server; the first has a patient, an encounter with a
/// payment, and a claim. Returns (app, key A, key B, ids of A's objects).
async fn two_clinics() -> (TestApp, String, String, Value) {
    let app = spawn_app().await;
    app.import_release("2026-04", &sample_release("2026-04"))
        .await;
    let (_, key_a) = app.tenant_on_release("owner", "2026-04").await;
    let (_, key_b) = app.tenant_on_release("intruder", "2026-04").await;
    let patient: Value = app
        .clinic_request(Method::POST, "/v1/patients", &key_a)
        .json(&json!({"name": "高橋 由美", "birth_date": "1975-09-09", "sex": "female",
                      "insurances": [{"insurer_number": "138057", "copay_rate": 30, "valid_from": "2020-01-01"}]}))
        .send().await.unwrap().json().await.unwrap();
    let encounter: Value = app
        .clinic_request(Method::POST, "/v1/encounters", &key_a)
        .json(&json!({"patient_id": patient["id"], "date": "2026-05-12", "items": [{"code": "111000110", "quantity": 1}]}))
        .send().await.unwrap().json().await.unwrap();
    let payment: Value = app
        .clinic_request(Method::POST, "/v1/payments", &key_a)
        .json(&json!({"encounter_id": encounter["id"], "amount_yen": 100, "method": "cash"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let claims: Value = app
        .clinic_request(Method::POST, "/v1/claims/generate", &key_a)
        .json(&json!({"month": "2026-05"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids = json!({
        "patient": patient["id"], "encounter": encounter["id"],
        "payment": payment["id"], "claim": claims["claims"][0]["id"],
    });
    (app, key_a, key_b, ids)
}

#[tokio::test]
async fn another_clinics_ids_are_not_found_on_every_object_route() {
    let (app, key_a, key_b, ids) = two_clinics().await;
    let id = |name: &str| ids[name].as_str().unwrap().to_string();
    let (patient, encounter, claim) = (id("patient"), id("encounter"), id("claim"));

    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/patients/{patient}"), None),
        (
            Method::PATCH,
            format!("/v1/patients/{patient}"),
            Some(json!({"phone": "1"})),
        ),
        (Method::GET, format!("/v1/patients/{patient}/balance"), None),
        (Method::GET, format!("/v1/encounters/{encounter}"), None),
        (
            Method::POST,
            format!("/v1/encounters/{encounter}/void"),
            Some(json!({})),
        ),
        (
            Method::POST,
            "/v1/encounters".into(),
            Some(
                json!({"patient_id": patient, "date": "2026-05-13", "items": [{"code": "112007410", "quantity": 1}]}),
            ),
        ),
        (
            Method::POST,
            "/v1/payments".into(),
            Some(json!({"encounter_id": encounter, "amount_yen": 10, "method": "cash"})),
        ),
        (Method::GET, format!("/v1/claims/{claim}"), None),
        (
            Method::POST,
            format!("/v1/claims/{claim}/confirm"),
            Some(json!({})),
        ),
    ];
    for (method, path, body) in attempts {
        let mut request = app
            .clinic_request(method.clone(), &path, &key_b)
            .header("if-match", "\"1\"");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let problem = assert_problem(response, StatusCode::NOT_FOUND).await;
        assert!(!problem.to_string().contains("高橋"), "{method} {path}");
    }
    let listed = app
        .clinic_json(&key_b, &format!("/v1/encounters?patient_id={patient}"))
        .await;
    assert_eq!(listed["encounters"], json!([]));
    let claims = app.clinic_json(&key_b, "/v1/claims?month=2026-05").await;
    assert_eq!(claims["claims"], json!([]));
    let search = app.clinic_json(&key_b, "/v1/patients?q=高橋").await;
    assert_eq!(search["patients"], json!([]));

    // And the owner still sees all of it, unchanged.
    let balance = app
        .clinic_json(&key_a, &format!("/v1/patients/{patient}/balance"))
        .await;
    assert_eq!(balance["paid_yen"], 100);
    let encounter = app
        .clinic_json(&key_a, &format!("/v1/encounters/{encounter}"))
        .await;
    assert_eq!(encounter["status"], "active");
}

#[tokio::test]
async fn fifty_concurrent_duplicates_of_an_encounter_make_one_encounter() {
    let (app, key, _, ids) = two_clinics().await;
    let body = json!({"patient_id": ids["patient"], "date": "2026-05-20",
                      "items": [{"code": "112007410", "quantity": 1}, {"code": "620098801", "quantity": 3}]});

    let attempts = (0..50).map(|_| {
        app.clinic_request(Method::POST, "/v1/encounters", &key)
            .header("idempotency-key", "visit-2026-05-20-001")
            .json(&body)
            .send()
    });
    let responses = futures::future::join_all(attempts).await;

    let mut bodies = Vec::new();
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        bodies.push(response.json::<Value>().await.unwrap());
    }
    assert!(bodies.iter().all(|b| b == &bodies[0]));
    let listed = app
        .clinic_json(
            &key,
            &format!(
                "/v1/encounters?patient_id={}&from=2026-05-20&to=2026-05-20",
                ids["patient"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(listed["encounters"].as_array().unwrap().len(), 1);
    assert_eq!(listed["encounters"][0]["id"], bodies[0]["id"]);
}

#[tokio::test]
async fn a_retried_payment_replays_even_after_a_restart_and_a_reused_key_is_refused() {
    let (app, key, _, ids) = two_clinics().await;
    let pay = |app: &TestApp, amount: i64| {
        app.clinic_request(Method::POST, "/v1/payments", &key)
            .header("idempotency-key", "till-7-receipt-42")
            .json(
                &json!({"encounter_id": ids["encounter"], "amount_yen": amount, "method": "cash"}),
            )
            .send()
    };

    let first = pay(&app, 200).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    // A second server on the same database: as after a restart.
    let mut settings = test_settings(&app.db_url);
    settings.admin.token = app.admin_token.clone();
    settings.clinic.key_secret = app.key_secret.clone();
    let restarted = spawn_app_on(settings).await;
    let replay = pay(&restarted, 200).await.unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.json::<Value>().await.unwrap(), first);

    let reused = pay(&app, 300).await.unwrap();
    let problem = assert_problem(reused, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    let balance = app
        .clinic_json(
            &key,
            &format!("/v1/patients/{}/balance", ids["patient"].as_str().unwrap()),
        )
        .await;
    assert_eq!(balance["paid_yen"], 300, "100 before, 200 once");
}

#[tokio::test]
async fn bad_input_on_every_writing_route_is_refused_and_writes_nothing() {
    let (app, key, _, ids) = two_clinics().await;
    let patient = ids["patient"].as_str().unwrap();
    let encounter = ids["encounter"].as_str().unwrap();
    let huge = "x".repeat(300_000);
    let cases: Vec<(&str, String, String, StatusCode)> = vec![
        ("POST", "/v1/patients".into(), "{\"name\":".into(), StatusCode::BAD_REQUEST),
        ("POST", "/v1/patients".into(), json!({"name": huge}).to_string(), StatusCode::PAYLOAD_TOO_LARGE),
        ("POST", "/v1/patients".into(), json!({"name": 5, "birth_date": "1990-01-01", "sex": "male"}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/v1/patients".into(), json!({"name": "x", "birth_date": "1990-02-30", "sex": "male"}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/v1/patients".into(), json!({"name": "x", "birth_date": "2999-01-01", "sex": "male"}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/v1/patients".into(), json!({"name": "x", "birth_date": "1990-01-01", "sex": "male", "insurances": [{"insurer_number": "12", "copay_rate": 40, "valid_from": "2020-01-01"}]}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/v1/patients".into(), json!({"name": "", "birth_date": "1990-01-01", "sex": "male"}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/v1/encounters".into(), json!({"patient_id": "not-a-uuid", "date": "2026-05-01", "items": []}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/v1/encounters".into(), json!({"patient_id": patient, "date": "2026-05-01", "items": []}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/v1/encounters".into(), json!({"patient_id": patient, "date": "2026-05-01", "items": [{"code": "112007410", "quantity": "1"}]}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/v1/encounters".into(), json!({"patient_id": patient, "date": "2026-05-01", "items": [{"code": "112007410", "quantity": 100000}]}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/v1/encounters".into(), json!({"patient_id": patient, "date": "2026-05-01", "items": [{"code": "112007410", "quantity": 1, "price": 1}]}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/v1/payments".into(), json!({"encounter_id": encounter, "amount_yen": -5, "method": "cash"}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/v1/payments".into(), json!({"encounter_id": encounter, "amount_yen": 1.5, "method": "cash"}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/v1/payments".into(), json!({"encounter_id": encounter, "amount_yen": 5, "method": "bitcoin"}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/v1/payments".into(), json!({"encounter_id": encounter, "amount_yen": 99999999999i64, "method": "cash"}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/v1/claims/generate".into(), json!({"month": "2026-13"}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/v1/claims/generate".into(), json!({"month": "May"}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("PATCH", format!("/v1/patients/{patient}"), json!({"birth_date": "yesterday"}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", format!("/v1/encounters/{encounter}/void"), json!({"reason": 5}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", format!("/v1/encounters/{encounter}/void"), "bU\u{1}p".into(), StatusCode::BAD_REQUEST),
        ("POST", "/v1/encounters".into(), json!({"patient_id": patient, "date": "2026-05-01", "items": [{"code": "112-007", "quantity": 1}]}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/v1/encounters".into(), json!({"patient_id": patient, "date": "2026-05-01", "items": [{"code": "112007410", "quantity": 1}], "diagnoses": ["８８４"]}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    let db = app.db().await;
    let count = async || -> i64 {
        let schemas: Vec<String> = db
            .query(
                "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 't\\_owner%'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let s = &schemas[0];
        db.query_one(
            &format!("SELECT (SELECT count(*) FROM \"{s}\".patients) + (SELECT count(*) FROM \"{s}\".encounters) \
                      + (SELECT count(*) FROM \"{s}\".payments) + (SELECT count(*) FROM \"{s}\".claims) \
                      + (SELECT sum(version) FROM \"{s}\".patients)"),
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    let before = count().await;

    for (method, path, body, status) in cases {
        let response = app
            .clinic_request(Method::from_bytes(method.as_bytes()).unwrap(), &path, &key)
            .header("content-type", "application/json")
            .header("if-match", "\"1\"")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let got = response.status();
        assert_eq!(
            got,
            status,
            "{method} {path} {}",
            &body[..body.len().min(120)]
        );
        assert_problem(response, status).await;
    }
    for path in [
        "/v1/patients?limit=0",
        "/v1/patients?limit=abc",
        "/v1/patients?cursor=@@",
        "/v1/encounters?from=2026-99-01",
        "/v1/encounters?patient_id=abc",
        "/v1/claims?month=2026-5",
        "/v1/claims/export?month=",
        "/v1/patients?unknown=1",
    ] {
        let response = app
            .clinic_request(Method::GET, path, &key)
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    for path in [
        "/v1/patients/not-a-uuid",
        "/v1/encounters/12",
        "/v1/claims/%2e%2e%2ftenant",
        "/v1/patients/00000000-0000-0000-0000-000000000000",
    ] {
        let response = app
            .clinic_request(Method::GET, path, &key)
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::NOT_FOUND).await;
    }
    assert_eq!(count().await, before, "nothing was written");
}

/// The OpenAPI document as the clinic listener serves it.
async fn served_document(app: &TestApp) -> Value {
    let response = app
        .http
        .get(format!("{}/v1/openapi.json", app.clinic))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_openapi_document_covers_every_clinic_route_and_resolves_every_schema() {
    let app = spawn_app().await;
    let doc = served_document(&app).await;

    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut routes: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    routes.sort();
    let mut expected = vec![
        "GET /v1/tenant",
        "GET /v1/master/items",
        "POST /v1/patients",
        "GET /v1/patients",
        "GET /v1/patients/{id}",
        "PATCH /v1/patients/{id}",
        "GET /v1/patients/{id}/balance",
        "GET /v1/patients/{id}/diseases",
        "POST /v1/patients/{id}/diseases",
        "PATCH /v1/patients/{id}/diseases/{disease_id}",
        "DELETE /v1/patients/{id}/diseases/{disease_id}",
        "POST /v1/encounters",
        "GET /v1/encounters",
        "GET /v1/encounters/{id}",
        "POST /v1/encounters/{id}/void",
        "POST /v1/payments",
        "POST /v1/claims/generate",
        "GET /v1/claims",
        "GET /v1/claims/{id}",
        "POST /v1/claims/{id}/confirm",
        "GET /v1/claims/export",
    ];
    expected.sort();
    assert_eq!(routes, expected);
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "unresolved schema {name}");
    }
    let page = app
        .http
        .get(format!("{}/v1/docs", app.clinic))
        .send()
        .await
        .unwrap();
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("/v1/claims/{id}/confirm"));
}

/// What the document's validation promises, the server keeps: JSON Schema's
/// integers include `7.0`, an entity tag is quoted, an impossible change is
/// refused as such before its version is compared, and an
/// `Idempotency-Key` is visible ASCII.
#[tokio::test]
async fn requests_are_judged_as_the_document_describes_them() {
    let (app, key, _, ids) = two_clinics().await;
    let patient = ids["patient"].as_str().unwrap();
    let encounter: Value = app
        .clinic_request(Method::POST, "/v1/encounters", &key)
        .json(&json!({"patient_id": patient, "date": "2026-05-13",
                      "items": [{"code": "112007410", "quantity": 2.0}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(encounter["lines"][0]["quantity"], 2, "{encounter}");

    let patch = |etag: &'static str, body: Value| {
        app.clinic_request(Method::PATCH, &format!("/v1/patients/{patient}"), &key)
            .header("if-match", etag)
            .json(&body)
            .send()
    };
    let unquoted = patch("1", json!({"phone": "03"})).await.unwrap();
    let problem = assert_problem(unquoted, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "If-Match");
    let impossible = patch("\"7\"", json!({"name": "   "})).await.unwrap();
    let problem = assert_problem(impossible, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "name");
    let stale = patch("\"7\"", json!({"phone": "03"})).await.unwrap();
    assert_problem(stale, StatusCode::PRECONDITION_FAILED).await;

    let spaced = app
        .clinic_request(Method::POST, "/v1/payments", &key)
        .header("idempotency-key", "two words")
        .json(&json!({"encounter_id": encounter["id"], "amount_yen": 10, "method": "cash"}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(spaced, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
}

/// The document a client is generated from: unique operation ids, links
/// from each creating operation to the ones that take its id (naming real
/// operations and their parameters), and a description on every field and
/// parameter.
#[tokio::test]
async fn the_openapi_document_links_created_ids_and_describes_every_field() {
    let app = spawn_app().await;
    let doc = served_document(&app).await;
    let mut operations = std::collections::BTreeMap::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            let id = operation["operationId"].as_str().expect("an operationId");
            assert!(
                operations
                    .insert(id.to_string(), operation.clone())
                    .is_none(),
                "operationId {id} twice"
            );
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                assert!(
                    parameter["description"].is_string(),
                    "{id}: parameter {} has no description",
                    parameter["name"]
                );
            }
        }
    }
    let mut linked = std::collections::BTreeSet::new();
    for (from, operation) in &operations {
        for (status, response) in operation["responses"].as_object().unwrap() {
            for (name, link) in response["links"].as_object().into_iter().flatten() {
                let to = link["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{from} {status} {name}: no operationId in {link}"));
                let target = operations
                    .get(to)
                    .unwrap_or_else(|| panic!("{from} {status} {name}: no operation {to}"));
                let parameters: Vec<&str> = target["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                for parameter in link["parameters"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|p| p.0)
                {
                    assert!(
                        parameters.contains(&parameter.as_str()),
                        "{from} {name}: {to} has no parameter {parameter}"
                    );
                }
                linked.insert(to.to_string());
            }
        }
    }
    for taking_an_id in [
        "get_patient",
        "update_patient",
        "get_patient_balance",
        "create_encounter",
        "get_encounter",
        "void_encounter",
        "create_payment",
        "get_claim",
        "confirm_claim",
        "export_claims",
        "list_patient_diseases",
        "add_patient_disease",
        "update_patient_disease",
        "delete_patient_disease",
    ] {
        assert!(
            linked.contains(taking_an_id),
            "no link leads to {taking_an_id}"
        );
    }
    let mut undescribed = Vec::new();
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        for (field, property) in schema["properties"].as_object().into_iter().flatten() {
            let described = property["description"].is_string()
                || property["oneOf"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|s| s["description"].is_string()));
            if !described {
                undescribed.push(format!("{name}.{field}"));
            }
        }
    }
    assert!(
        undescribed.is_empty(),
        "fields without a description: {undescribed:?}"
    );
}
