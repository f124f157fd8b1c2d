//! Faults, restarts and lost responses: nothing is half-applied, nothing is
//! charged twice, and every answer is quick and a problem+json.

use std::time::Duration;

use nix::sys::signal::Signal;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{assert_problem, sample_release, spawn_app, spawn_app_with, TestApp};
use crate::process::Process;

/// A clinic on the sample release with one insured patient: (slug, key,
/// patient id).
async fn clinic_with_patient(app: &TestApp) -> (String, String, String) {
    app.import_release("2026-04", &sample_release("2026-04"))
        .await;
    let (slug, key) = app.tenant_on_release("faults", "2026-04").await;
    let patient = app.insured_patient(&key, "佐藤 一郎").await;
    (slug, key, patient)
}

fn visit(patient: &str) -> Value {
    json!({"patient_id": patient, "date": "2026-05-20",
           "items": [{"code": "111000110", "quantity": 1}, {"code": "620098801", "quantity": 3}]})
}

/// Every encounter of the tenant has all its lines and a charge, payments
/// never exceed charges, and no idempotency key is left half-written.
pub async fn assert_consistent(app: &TestApp, slug: &str) {
    let check = format!(
        "SELECT \
          (SELECT count(*) FROM \"t_{slug}\".encounters e WHERE e.total_points <> \
             coalesce((SELECT sum(points) FROM \"t_{slug}\".encounter_lines l \
                       WHERE l.encounter_id = e.id), -1)), \
          (SELECT count(*) FROM \"t_{slug}\".encounters e WHERE \
             (SELECT coalesce(sum(amount_yen), 0) FROM \"t_{slug}\".payments p \
              WHERE p.encounter_id = e.id) > e.charge_yen), \
          (SELECT count(*) FROM \"t_{slug}\".idempotency_keys WHERE status IS NULL)"
    );
    let row = app.db().await.query_one(&check, &[]).await.unwrap();
    let found: (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        found,
        (0, 0, 0),
        "encounters missing lines, overpaid encounters, half-written keys"
    );
}

async fn encounters(app: &TestApp, slug: &str) -> Vec<String> {
    app.db()
        .await
        .query(
            &format!("SELECT id::text FROM \"t_{slug}\".encounters"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Sends a POST over a raw connection and returns once the server has
/// started answering (so the write has committed), without reading the
/// answer: the client never sees it.
async fn post_and_lose_the_response(
    base: &str,
    path: &str,
    key: &str,
    idem: &str,
    body: &Value,
) -> TcpStream {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: {idem}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).await.unwrap();
    stream
}

/// Waits until a clinic backend waits for a lock (a request is in flight).
async fn wait_for_blocked_request(app: &TestApp) -> i32 {
    let db = app.db().await;
    for _ in 0..200 {
        let row = db
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'recept-clinic' \
                 AND wait_event_type = 'Lock' LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            return row.get(0);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no request is waiting for the lock");
}

#[tokio::test]
async fn a_post_whose_response_was_lost_is_replayed_on_retry_never_repeated() {
    let app = spawn_app().await;
    let (slug, key, patient) = clinic_with_patient(&app).await;
    let body = visit(&patient);

    // The connection drops after the commit, before the client reads.
    let lost =
        post_and_lose_the_response(&app.clinic, "/v1/encounters", &key, "visit-1", &body).await;
    drop(lost);
    let retry = app
        .clinic_request(Method::POST, "/v1/encounters", &key)
        .header("idempotency-key", "visit-1")
        .json(&body)
        .send()
        .await
        .unwrap();

    assert_eq!(retry.status(), StatusCode::CREATED);
    let replayed: Value = retry.json().await.unwrap();
    assert_eq!(
        encounters(&app, &slug).await,
        [replayed["id"].as_str().unwrap()]
    );
    assert_eq!(replayed["lines"].as_array().unwrap().len(), 2);
    assert_consistent(&app, &slug).await;
}

#[tokio::test]
async fn a_server_killed_after_commit_replays_the_original_after_restart() {
    let app = spawn_app().await;
    let (slug, key, patient) = clinic_with_patient(&app).await;
    let body = visit(&patient);
    let mut first = Process::start(&app, None, &[]).await;

    // The server dies as its answer leaves: the client never gets it.
    let lost =
        post_and_lose_the_response(&first.clinic, "/v1/encounters", &key, "visit-k", &body).await;
    first.signal(Signal::SIGKILL);
    first.wait(Duration::from_secs(10)).await;
    drop(lost);
    let second = Process::start(&app, None, &[]).await;
    let retry = app
        .http
        .post(format!("{}/v1/encounters", second.clinic))
        .bearer_auth(&key)
        .header("idempotency-key", "visit-k")
        .json(&body)
        .send()
        .await
        .unwrap();

    assert_eq!(retry.status(), StatusCode::CREATED);
    let replayed: Value = retry.json().await.unwrap();
    assert_eq!(
        encounters(&app, &slug).await,
        [replayed["id"].as_str().unwrap()]
    );
    assert_consistent(&app, &slug).await;
}

async fn age_keys(app: &TestApp, slug: &str, age: &str) {
    app.db()
        .await
        .execute(
            &format!(
                "UPDATE \"t_{slug}\".idempotency_keys SET created_at = now() - interval '{age}'"
            ),
            &[],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn an_expired_idempotency_key_may_be_used_afresh() {
    let app = spawn_app_with(|s| s.clinic.idempotency_ttl_s = 60).await;
    let (slug, key, patient) = clinic_with_patient(&app).await;
    let post = |body: Value| {
        app.clinic_request(Method::POST, "/v1/encounters", &key)
            .header("idempotency-key", "reused")
            .json(&body)
            .send()
    };
    assert_eq!(
        post(visit(&patient)).await.unwrap().status(),
        StatusCode::CREATED
    );
    let mut other = visit(&patient);
    other["date"] = json!("2026-05-21");
    let refused = post(other.clone()).await.unwrap();
    assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;

    age_keys(&app, &slug, "61 seconds").await;
    let fresh = post(other.clone()).await.unwrap();
    assert_eq!(fresh.status(), StatusCode::CREATED);
    let fresh: Value = fresh.json().await.unwrap();
    let again: Value = post(other).await.unwrap().json().await.unwrap();

    assert_eq!(fresh["id"], again["id"], "replayed within the new lifetime");
    assert_eq!(encounters(&app, &slug).await.len(), 2);
    // Expired keys are purged a few at a time by later writes.
    age_keys(&app, &slug, "1 hour").await;
    let conn = app
        .app_state
        .pools
        .schema("main", &format!("t_{slug}"))
        .await
        .unwrap();
    let purged = conn
        .write(async |tx| recept::db::idempotency::purge_expired(tx, 60.0).await)
        .await
        .unwrap();
    assert_eq!(purged, 1);
}

#[tokio::test]
async fn sigterm_finishes_requests_in_flight_refuses_new_ones_and_exits_0() {
    let app = spawn_app().await;
    let (slug, key) = app.tenant_with_key("graceful").await;
    let mut server =
        Process::start(&app, None, &[("RECEPT__CLINIC__LOCK_TIMEOUT_MS", "20000")]).await;
    let lock = app.lock_table(&slug, "patients").await;
    let in_flight = tokio::spawn(
        app.http
            .get(format!("{}/v1/patients", server.clinic))
            .bearer_auth(&key)
            .send(),
    );
    wait_for_blocked_request(&app).await;

    server.signal(Signal::SIGTERM);
    let mut refused = false;
    for _ in 0..100 {
        match TcpStream::connect(server.clinic.trim_start_matches("http://")).await {
            Err(_) => {
                refused = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(refused, "new connections are refused once stopping");
    lock.batch_execute("COMMIT").await.unwrap();

    assert_eq!(in_flight.await.unwrap().unwrap().status(), StatusCode::OK);
    assert!(server.wait(Duration::from_secs(15)).await.success());
    assert!(server.logs().contains("stopping"), "{}", server.logs());
}

#[tokio::test]
async fn logs_never_carry_keys_tokens_or_patient_names() {
    let app = spawn_app().await;
    let (slug, key) = app.tenant_with_key("quiet").await;
    let mut server = Process::start(&app, None, &[]).await;
    let http = &app.http;
    let created: Value = http
        .post(format!("{}/v1/patients", server.clinic))
        .bearer_auth(&key)
        .json(
            &json!({"name": "秘密 花子", "name_kana": "ヒミツ ハナコ", "birth_date": "1990-02-02",
                      "sex": "female", "phone": "090-1234-5678"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for query in [("q", "秘密"), ("q", "ヒミツ")] {
        let found = http
            .get(format!("{}/v1/patients", server.clinic))
            .bearer_auth(&key)
            .query(&[query])
            .send()
            .await
            .unwrap();
        assert_eq!(found.status(), StatusCode::OK);
    }
    let id = created["id"].as_str().unwrap();
    http.get(format!("{}/v1/patients/{id}", server.clinic))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    // Bad input carrying the name, a wrong key, admin calls with the token.
    http.post(format!("{}/v1/patients", server.clinic))
        .bearer_auth(&key)
        .json(&json!({"name": "秘密 花子", "birth_date": "秘密", "sex": "female"}))
        .send()
        .await
        .unwrap();
    let wrong_key = format!("{key}x");
    http.get(format!("{}/v1/tenant", server.clinic))
        .bearer_auth(&wrong_key)
        .send()
        .await
        .unwrap();
    for path in ["/admin/tenants", "/admin/audit"] {
        http.get(format!("{}{path}", server.admin))
            .bearer_auth(&app.admin_token)
            .send()
            .await
            .unwrap();
    }
    server.signal(Signal::SIGTERM);
    server.wait(Duration::from_secs(15)).await;

    let logs = server.logs();
    assert!(
        logs.contains(&slug),
        "request lines name the tenant: {logs}"
    );
    assert!(logs.contains("/v1/patients/{id}"), "{logs}");
    for secret in [
        key.as_str(),
        &key[key.len() - 12..],
        &app.admin_token,
        "秘密",
        "花子",
        "ヒミツ",
        "090-1234-5678",
        "%E7%A7%98",
    ] {
        assert!(!logs.contains(secret), "`{secret}` was logged:\n{logs}");
    }
}

#[tokio::test]
async fn oversized_queries_deep_json_long_lists_and_slow_clients_are_refused() {
    let app = spawn_app_with(|s| s.server.client_timeout_ms = 500).await;
    let (_, key) = app.tenant_with_key("limits").await;

    let long = "a".repeat(3000);
    let too_long = app
        .clinic_request(Method::GET, &format!("/v1/patients?q={long}"), &key)
        .send()
        .await
        .unwrap();
    assert_problem(too_long, StatusCode::URI_TOO_LONG).await;

    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let refused = app
        .clinic_request(Method::POST, "/v1/patients", &key)
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_problem(refused, StatusCode::BAD_REQUEST).await;

    let insurance =
        json!({"insurer_number": "06132013", "copay_rate": 30, "valid_from": "2020-01-01"});
    let many = json!({"name": "x", "birth_date": "1990-01-01", "sex": "male",
                      "insurances": vec![insurance; 11]});
    let refused = app
        .clinic_request(Method::POST, "/v1/patients", &key)
        .json(&many)
        .send()
        .await
        .unwrap();
    assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;

    // Headers past the HTTP layer's limit never reach a handler.
    let huge = app
        .clinic_request(Method::GET, "/v1/tenant", &key)
        .header("x-padding", "a".repeat(32 * 1024))
        .send()
        .await
        .unwrap();
    assert_problem(huge, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;

    // A client that never finishes its request head is cut off.
    let mut slow = TcpStream::connect(app.clinic.trim_start_matches("http://"))
        .await
        .unwrap();
    slow.write_all(b"GET /v1/tenant HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn a_backend_killed_mid_request_is_a_quick_503_and_the_retry_is_served_once() {
    let app = spawn_app_with(|s| s.clinic.lock_timeout_ms = 20_000).await;
    let (slug, key, patient) = clinic_with_patient(&app).await;
    let lock = app.lock_table(&slug, "encounter_lines").await;
    let write = tokio::spawn(
        app.clinic_request(Method::POST, "/v1/encounters", &key)
            .header("idempotency-key", "killed")
            .json(&visit(&patient))
            .send(),
    );
    let pid = wait_for_blocked_request(&app).await;

    app.db()
        .await
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let answered = write.await.unwrap().unwrap();
    lock.batch_execute("ROLLBACK").await.unwrap();

    assert_problem(answered, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_consistent(&app, &slug).await;
    let retry = app
        .clinic_request(Method::POST, "/v1/encounters", &key)
        .header("idempotency-key", "killed")
        .json(&visit(&patient))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(encounters(&app, &slug).await.len(), 1);
    assert_consistent(&app, &slug).await;
}

#[tokio::test]
async fn a_tenant_schema_dropped_under_a_running_server_is_a_500_without_retry_for_that_tenant_only(
) {
    let app = spawn_app().await;
    let (gone, gone_key) = app.tenant_with_key("gone").await;
    let (_, kept_key) = app.tenant_with_key("kept").await;
    app.clinic_json(&gone_key, "/v1/tenant").await;

    app.db()
        .await
        .batch_execute(&format!("DROP SCHEMA \"t_{gone}\" CASCADE"))
        .await
        .unwrap();

    for path in ["/v1/tenant", "/v1/patients"] {
        let response = app
            .clinic_request(Method::GET, path, &gone_key)
            .send()
            .await
            .unwrap();
        assert!(
            response.headers().get("retry-after").is_none(),
            "a dropped schema does not come back by waiting"
        );
        let problem = assert_problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
        assert_eq!(problem["type"], "urn:recept:problem:data-missing");
    }
    app.clinic_json(&kept_key, "/v1/tenant").await;
}

#[tokio::test]
async fn a_control_table_gone_is_an_operators_500_not_a_clinics_missing_data() {
    let app = spawn_app().await;
    let (slug, key) = app.tenant_with_key("ctl").await;
    app.db()
        .await
        .batch_execute("DROP TABLE recept.audit_log")
        .await
        .unwrap();

    let response = app
        .admin_request(Method::POST, &format!("/admin/tenants/{slug}/suspend"))
        .send()
        .await
        .unwrap();

    assert!(response.headers().get("retry-after").is_none());
    let problem = assert_problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert_eq!(problem["type"], "urn:recept:problem:internal");
    // Nothing half-written: the suspension rolled back with its audit row.
    app.app_state.keys.invalidate_all();
    app.clinic_json(&key, "/v1/tenant").await;
}

#[tokio::test]
async fn a_stored_row_recept_cannot_read_is_a_500_that_invites_no_retry() {
    let app = spawn_app().await;
    let (odd, _) = app.tenant_with_key("odd").await;
    let (fine, _) = app.tenant_with_key("fine").await;

    // A status no version of recept writes (as a hand edit or a newer
    // version might leave): not the client's doing, and no retry reads it.
    app.db()
        .await
        .batch_execute(&format!(
            "ALTER TABLE recept.tenants DROP CONSTRAINT tenants_status_check; \
             UPDATE recept.tenants SET status = 'archived' WHERE slug = '{odd}'"
        ))
        .await
        .unwrap();

    let response = app
        .admin_request(Method::GET, &format!("/admin/tenants/{odd}"))
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("retry-after").is_none());
    let problem = assert_problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert_eq!(problem["type"], "urn:recept:problem:internal");
    // Its neighbours are read as before.
    let neighbour = app.admin_json(&format!("/admin/tenants/{fine}")).await;
    assert_eq!(neighbour["status"], "active");
}

#[tokio::test]
async fn a_rolling_restart_on_a_shared_port_drops_no_request() {
    let app = spawn_app().await;
    let (_, key) = app.tenant_with_key("rolling").await;
    let port = crate::process::free_port();
    let shared = [
        ("RECEPT__SERVER__REUSE_PORT", "true"),
        ("RECEPT__SERVER__DRAIN_MS", "300"),
    ];
    let mut old = Process::start(&app, Some(port), &shared).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            let key = key.clone();
            let http = reqwest::Client::new();
            tokio::spawn(async move {
                let mut answers: Vec<Result<u16, String>> = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && answers.len() < 20_000 {
                    let sent = http
                        .get(format!("http://127.0.0.1:{port}/v1/tenant"))
                        .bearer_auth(&key)
                        .send()
                        .await;
                    let now = chrono::Utc::now();
                    answers.push(match sent {
                        Ok(r) if r.status() == 200 => Ok(200),
                        Ok(r) => Err(format!("{now:?} {} {:?}", r.status(), r.text().await)),
                        Err(e) => Err(format!("{now:?} {e:?}")),
                    });
                }
                answers
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The new process binds the same port, then the old one stops.
    let new = Process::start(&app, Some(port), &shared).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    old.signal(Signal::SIGTERM);
    assert!(old.wait(Duration::from_secs(15)).await.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.unwrap());
    }
    let failed: Vec<_> = answers.iter().filter(|a| **a != Ok(200)).collect();
    if !failed.is_empty() {
        // What each process said about it.
        for line in old
            .logs()
            .lines()
            .map(|l| format!("OLD {l}"))
            .chain(new.logs().lines().map(|l| format!("NEW {l}")))
        {
            if line.contains("WARN") || line.contains("ERROR") || line.contains("worker") {
                eprintln!("{line}");
            }
        }
    }
    assert!(answers.len() > 100, "{} requests", answers.len());
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        new.logs().contains("request finished"),
        "the new process served"
    );
}

/// Eight clinics' desks post visits (no Idempotency-Key) while another
/// session terminates every recept backend it catches running `COMMIT`.
/// A commit whose answer is lost is looked up (`pg_xact_status`), so every
/// `201` is a stored visit and every stored visit was answered `201`: a
/// client never reads "retry" for a write that committed.
#[tokio::test]
async fn writes_whose_commit_is_interrupted_are_answered_by_what_happened() {
    let app = spawn_app_with(|s| {
        s.clinic.tenant_max_in_flight = 16;
        s.clinic.queue_timeout_ms = 2_000;
    })
    .await;
    let (slug, key, patient) = clinic_with_patient(&app).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let db = app.db().await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut killed = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let rows = db
                    .query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = current_database() AND application_name = 'recept-clinic' \
                           AND state = 'active' AND query = 'COMMIT'",
                        &[],
                    )
                    .await
                    .unwrap();
                killed += rows.len() as u64;
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            killed
        })
    };
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let request = app
                .clinic_request(Method::POST, "/v1/encounters", &key)
                .json(&visit(&patient));
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..125 {
                    let response = request.try_clone().unwrap().send().await.unwrap();
                    statuses.push(response.status());
                }
                statuses
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for writer in writers {
        statuses.extend(writer.await.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let killed = killer.await.unwrap();

    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let other: Vec<_> = statuses
        .iter()
        .filter(|s| **s != StatusCode::CREATED && **s != StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(statuses.len(), 1_000);
    assert!(other.is_empty(), "only 201 and 503 are expected: {other:?}");
    assert!(killed > 0, "no COMMIT was interrupted");
    assert_eq!(
        created,
        encounters(&app, &slug).await.len(),
        "201s against stored visits ({killed} backends terminated during COMMIT)"
    );
    assert_consistent(&app, &slug).await;
}
