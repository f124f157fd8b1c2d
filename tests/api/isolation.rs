//! Attacks on tenant isolation: SQL and path tricks in every place a client
//! chooses text, keys of suspended, deleted and revoked clinics, and a
//! second clinic that must never see the first one's data.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, sample_release, spawn_app, TestApp};

/// Text a client may send where it chooses a string.
const TRICKS: [&str; 14] = [
    "'",
    "\"",
    ";",
    "' OR '1'='1",
    "'; DROP TABLE patients; --",
    "\"; DROP SCHEMA recept CASCADE; --",
    "..",
    "../../etc/passwd",
    "%",
    "_",
    "\\",
    "%' OR 1=1 --",
    "ｔ＿ｏｗｎｅｒ",
    "\u{0}",
];

async fn status_of(app: &TestApp, key: &str, path: &str, query: &[(&str, &str)]) -> StatusCode {
    app.clinic_request(Method::GET, path, key)
        .query(query)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn sql_and_path_tricks_are_data_never_code_and_reach_no_other_clinic() {
    let app = spawn_app().await;
    app.import_release("2026-04", &sample_release("2026-04"))
        .await;
    let (owner, owner_key) = app.tenant_on_release("owner", "2026-04").await;
    let (_, other_key) = app.tenant_on_release("other", "2026-04").await;
    let created = app
        .clinic_request(Method::POST, "/v1/patients", &owner_key)
        .json(&json!({"name": "山田 花子", "name_kana": "ヤマダ ハナコ", "birth_date": "1985-03-03", "sex": "female"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    for trick in TRICKS {
        // Search strings: matched literally, in the caller's clinic only.
        for key in [&owner_key, &other_key] {
            let found = app
                .clinic_request(Method::GET, "/v1/patients", key)
                .query(&[("q", trick)])
                .send()
                .await
                .unwrap();
            if found.status() == StatusCode::OK {
                let page: Value = found.json().await.unwrap();
                assert_eq!(page["patients"], json!([]), "q={trick:?} matched nothing");
            } else {
                // Control characters (PostgreSQL cannot even hold NUL).
                assert_problem(found, StatusCode::UNPROCESSABLE_ENTITY).await;
            }
            for (name, value) in [("q", trick), ("code", trick)] {
                let status = status_of(&app, key, "/v1/master/items", &[(name, value)]).await;
                assert!(
                    [
                        StatusCode::OK,
                        StatusCode::BAD_REQUEST,
                        StatusCode::UNPROCESSABLE_ENTITY
                    ]
                    .contains(&status),
                    "{name}={trick:?}: {status}"
                );
            }
        }
        // Path segments: not found, never an error or another object.
        let encoded: String = trick.bytes().map(|b| format!("%{b:02X}")).collect();
        for path in [
            format!("/v1/patients/{encoded}"),
            format!("/v1/patients/{encoded}/balance"),
            format!("/v1/encounters/{encoded}"),
            format!("/v1/claims/{encoded}"),
        ] {
            let response = app
                .clinic_request(Method::GET, &path, &other_key)
                .send()
                .await
                .unwrap();
            assert_problem(response, StatusCode::NOT_FOUND).await;
        }
        // Slugs chosen by an admin: refused, or simply not found.
        let refused = app
            .admin_request(Method::POST, "/admin/tenants")
            .json(&json!({"slug": trick, "name": "x"}))
            .send()
            .await
            .unwrap();
        assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
        let missing = app
            .admin_request(Method::GET, &format!("/admin/tenants/{encoded}"))
            .send()
            .await
            .unwrap();
        let status = missing.status();
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{trick:?}: {status}"
        );
    }

    // Every trick as a patient's name is stored as written; NUL is refused.
    for trick in TRICKS {
        let response = app
            .clinic_request(Method::POST, "/v1/patients", &other_key)
            .json(
                &json!({"name": format!("x{trick}"), "birth_date": "1985-03-03", "sex": "female"}),
            )
            .send()
            .await
            .unwrap();
        if trick.contains('\u{0}') {
            assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        } else {
            assert_eq!(response.status(), StatusCode::CREATED, "{trick:?}");
            let stored: Value = response.json().await.unwrap();
            assert_eq!(stored["name"], format!("x{trick}"));
        }
    }

    // Everything is still there, and still the owner's only.
    let mine: Value = app
        .clinic_json(&owner_key, "/v1/patients?q=%E5%B1%B1%E7%94%B0")
        .await;
    assert_eq!(mine["patients"].as_array().unwrap().len(), 1);
    let theirs: Value = app
        .clinic_json(&other_key, "/v1/patients?q=%E5%B1%B1%E7%94%B0")
        .await;
    assert_eq!(theirs["patients"], json!([]));
    let tenants: Value = app
        .admin_request(Method::GET, "/admin/tenants")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(tenants.to_string().contains(&owner));
}

#[tokio::test]
async fn keys_of_suspended_deleted_and_revoked_clinics_get_nothing() {
    let app = spawn_app().await;
    let (suspended, suspended_key) = app.tenant_with_key("paused").await;
    let (deleted, deleted_key) = app.tenant_with_key("removed").await;
    let (revoked, _) = app.tenant_with_key("rekeyed").await;
    let (key_id, revoked_key) = app.issue_key(&revoked).await;
    for (method, path) in [
        (Method::POST, format!("/admin/tenants/{suspended}/suspend")),
        (Method::DELETE, format!("/admin/tenants/{deleted}")),
        (
            Method::DELETE,
            format!("/admin/tenants/{revoked}/api-keys/{key_id}"),
        ),
    ] {
        let done = app.admin_request(method, &path).send().await.unwrap();
        assert!(done.status().is_success(), "{path}: {}", done.status());
    }

    for path in ["/v1/tenant", "/v1/patients", "/v1/claims"] {
        let paused = app
            .clinic_request(Method::GET, path, &suspended_key)
            .send()
            .await
            .unwrap();
        assert_problem(paused, StatusCode::FORBIDDEN).await;
        for key in [&deleted_key, &revoked_key] {
            let refused = app
                .clinic_request(Method::GET, path, key)
                .send()
                .await
                .unwrap();
            assert_problem(refused, StatusCode::UNAUTHORIZED).await;
        }
    }
}
