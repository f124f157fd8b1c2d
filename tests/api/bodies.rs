//! Request bodies within the memory budget: read only after the caller is
//! known, only into reserved space, and only for `server.body_timeout_ms`.
//! Spoken over raw TCP, to send a head without its body.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with, TestApp};

/// Opens a connection and sends a `POST /v1/patients` head declaring
/// `length` bytes (or chunked), with `key`, then `body`.
async fn post(app: &TestApp, key: Option<&str>, length: Option<usize>, body: &[u8]) -> TcpStream {
    let address = app.clinic.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    let mut head = String::from("POST /v1/patients HTTP/1.1\r\nHost: recept\r\n");
    if let Some(key) = key {
        head.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    head.push_str("Content-Type: application/json\r\nConnection: close\r\n");
    match length {
        Some(n) => head.push_str(&format!("Content-Length: {n}\r\n\r\n")),
        None => head.push_str("Transfer-Encoding: chunked\r\n\r\n"),
    }
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream
}

/// The response's status and problem (or object) body, read to the end of
/// the connection, which the server closes.
async fn answer(mut stream: TcpStream) -> (u16, Value) {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("the server answers and closes the connection")
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text}"));
    let (_, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // A chunked answer: the JSON is between the chunk sizes.
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |i| i + 1);
    (
        status,
        serde_json::from_str(&body[start..end]).unwrap_or(Value::Null),
    )
}

/// Waits until the clinic body space reserved is `bytes`.
async fn until_reserved(app: &TestApp, bytes: usize) {
    for _ in 0..500 {
        if app.app_state.clinic_bodies.usage().0 == bytes {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "reserved {} bytes, never {bytes}",
        app.app_state.clinic_bodies.usage().0
    );
}

#[tokio::test]
async fn a_body_that_stalls_past_the_body_timeout_gets_408_and_its_space_back() {
    let app = spawn_app_with(|s| s.server.body_timeout_ms = 500).await;
    let (_, key) = app.tenant_with_key("stall").await;

    let stalled = post(&app, Some(&key), Some(100_000), &[b' '; 10_000]).await;
    // Twice the declared length: the body and its parse.
    until_reserved(&app, 200_000).await;
    let (status, problem) = answer(stalled).await;
    assert_eq!(status, 408);
    assert_eq!(problem["type"], "urn:recept:problem:body-timeout");
    until_reserved(&app, 0).await;
    let counts = app.app_state.clinic_bodies.counts();
    assert_eq!(
        counts.timed_out.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let scrape = crate::observability::scrape(&app).await;
    assert_eq!(
        scrape.value(
            "recept_request_bodies_refused_total",
            &[r#"reason="timeout""#]
        ),
        1.0
    );
}

#[tokio::test]
async fn bodies_beyond_the_body_budget_are_refused_before_they_are_read() {
    let app = spawn_app_with(|s| {
        s.server.body_memory_mb = 1;
        s.server.body_timeout_ms = 3_000;
    })
    .await;
    let (_, key) = app.tenant_with_key("budget").await;
    let (_, other_key) = app.tenant_with_key("neighbour").await;

    // Two heads declaring 256 KiB each, no body yet: 1 MiB reserved.
    let first = post(&app, Some(&key), Some(262_144), b"").await;
    let second = post(&app, Some(&other_key), Some(262_144), b"").await;
    until_reserved(&app, 1024 * 1024).await;
    // A third is answered at once, though not a byte of its body was sent.
    let third = post(&app, Some(&other_key), Some(1_000), b"").await;
    let (status, problem) = answer(third).await;
    assert_eq!(status, 503);
    assert_eq!(problem["type"], "urn:recept:problem:unavailable");
    assert!(problem["retry_after_ms"].as_u64().unwrap() > 0);
    for stalled in [first, second] {
        assert_eq!(answer(stalled).await.0, 408);
    }
    until_reserved(&app, 0).await;

    // With the space back, a body is read and the write is served.
    let body = br#"{"name": "Budget Hanako", "birth_date": "1980-01-01", "sex": "female"}"#;
    let created = post(&app, Some(&key), Some(body.len()), body).await;
    let (status, patient) = answer(created).await;
    assert_eq!(status, 201, "{patient}");
    assert_eq!(patient["name"], "Budget Hanako");
}

#[tokio::test]
async fn one_clinic_holds_only_its_share_of_the_body_budget() {
    let app = spawn_app_with(|s| {
        s.clinic.tenant_max_in_flight = 1;
        s.server.body_timeout_ms = 3_000;
    })
    .await;
    let (_, key) = app.tenant_with_key("greedy").await;
    let (_, other_key) = app.tenant_with_key("modest").await;

    // One request in flight's worth of bodies: 2 x 256 KiB.
    let held = post(&app, Some(&key), Some(262_144), b"").await;
    until_reserved(&app, 512 * 1024).await;
    let (status, problem) = answer(post(&app, Some(&key), Some(10), b"").await).await;
    assert_eq!(status, 429);
    assert_eq!(problem["type"], "urn:recept:problem:too-many-requests");
    let body = br#"{"name": "Modest Taro", "birth_date": "1980-01-01", "sex": "male"}"#;
    let (status, _) = answer(post(&app, Some(&other_key), Some(body.len()), body).await).await;
    assert_eq!(status, 201);
    assert_eq!(answer(held).await.0, 408);
}

#[tokio::test]
async fn a_strangers_body_or_one_declared_too_long_is_refused_before_it_is_sent() {
    let app = spawn_app_with(|s| s.server.body_timeout_ms = 60_000).await;
    let (_, key) = app.tenant_with_key("strangers").await;

    let altered = key.replace('.', ",");
    for stranger in [None, Some("rk_guessed"), Some(altered.as_str())] {
        let stream = post(&app, stranger, Some(200_000), b"").await;
        let (status, problem) = answer(stream).await;
        assert_eq!(status, 401, "{stranger:?}");
        assert_eq!(problem["type"], "urn:recept:problem:unauthorized");
    }
    let too_long = post(&app, Some(&key), Some(10_000_000), b"").await;
    let (status, problem) = answer(too_long).await;
    assert_eq!(status, 413);
    assert_eq!(problem["type"], "urn:recept:problem:payload-too-large");
    assert_eq!(app.app_state.clinic_bodies.usage().0, 0);
}

#[tokio::test]
async fn a_chunked_body_is_read_within_the_limit() {
    let app = spawn_app_with(|_| {}).await;
    let (_, key) = app.tenant_with_key("chunked").await;

    let json = br#"{"name": "Chunked Jiro", "birth_date": "1990-02-03", "sex": "male"}"#;
    let (a, b) = json.split_at(20);
    let mut body = Vec::new();
    for part in [a, b] {
        body.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        body.extend_from_slice(part);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let (status, patient) = answer(post(&app, Some(&key), None, &body).await).await;
    assert_eq!(status, 201, "{patient}");
    assert_eq!(patient["name"], "Chunked Jiro");

    until_reserved(&app, 0).await;
}

#[tokio::test]
async fn a_known_callers_body_past_the_limit_is_read_so_that_its_client_reads_the_413() {
    let app = spawn_app_with(|_| {}).await;
    let (_, key) = app.tenant_with_key("oversized").await;

    // Twelve times the 256 KiB limit, sent only once recept reads it: a
    // client that sends its body after the head would otherwise meet a
    // connection closed under it instead of the answer.
    let length = 12 * 262_144;
    let mut stream = post(&app, Some(&key), Some(length), b"").await;
    for _ in 0..500 {
        if app.app_state.clinic_bodies.draining() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(app.app_state.clinic_bodies.draining(), 1, "never read");
    let sent = stream.write_all(&vec![b' '; length]).await;
    assert!(sent.is_ok(), "the body could not be sent: {sent:?}");
    let (status, problem) = answer(stream).await;
    assert_eq!(status, 413);
    assert_eq!(problem["type"], "urn:recept:problem:payload-too-large");
    assert_eq!(app.app_state.clinic_bodies.usage().0, 0);
    assert_eq!(app.app_state.clinic_bodies.draining(), 0);
}
