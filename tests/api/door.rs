//! The door: a clinic connection that shows no key recept could have issued
//! is answered on a thread of its own at the lowest priority, with exactly
//! the answer a worker would give, and loses its connection.

use std::time::Duration;

use reqwest::{header, Method, StatusCode};

use crate::helpers::{assert_problem, spawn_app, TestApp};
use crate::observability::scrape;

/// Connections the door answered, as `/metrics` says.
async fn answered(app: &TestApp) -> f64 {
    scrape(app)
        .await
        .value("recept_door_connections_total", &[r#"outcome="answered""#])
}

/// Waits (a bounded while) until the door has answered `n` connections:
/// it counts one when the connection is closed, just after its answer.
async fn until_answered(app: &TestApp, n: f64) {
    for _ in 0..500 {
        if answered(app).await >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(answered(app).await, n);
}

fn closes(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

#[tokio::test]
async fn strangers_are_answered_at_the_door_and_lose_their_connection_while_callers_with_keys_stay()
{
    let app = spawn_app().await;
    let (_, key) = app.tenant_with_key("door").await;
    // A new connection for every request, so each is a first head.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let get = |path: &str, key: Option<&str>| {
        let request = http.request(Method::GET, format!("{}{path}", app.clinic));
        match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    };

    // A caller with a key, and health probes, are served by the workers,
    // on connections that stay open.
    let served = get("/v1/tenant", Some(&key)).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert!(!closes(&served));
    let probe = get("/healthz", None).send().await.unwrap();
    assert_eq!(probe.status(), StatusCode::OK);
    assert!(!closes(&probe));
    assert_eq!(answered(&app).await, 0.0);

    // A forged key and no key: the same 401 problem, and the connection
    // closes.
    let last = if key.ends_with('A') { "B" } else { "A" };
    let forged = format!("{}{last}", &key[..key.len() - 1]);
    for stranger in [Some(forged.as_str()), None] {
        let refused = get("/v1/patients", stranger).send().await.unwrap();
        assert!(closes(&refused), "{stranger:?}");
        let problem = assert_problem(refused, StatusCode::UNAUTHORIZED).await;
        assert_eq!(problem["type"], "urn:recept:problem:unauthorized");
    }
    // The door answers what a worker would: the public document too.
    let document = get("/v1/openapi.json", None).send().await.unwrap();
    assert_eq!(document.status(), StatusCode::OK);
    assert!(closes(&document));
    assert!(document.json::<serde_json::Value>().await.unwrap()["paths"].is_object());
    until_answered(&app, 3.0).await;
    let scrape = scrape(&app).await;
    assert_eq!(
        scrape.value("recept_door_connections_total", &[r#"outcome="dropped""#]),
        0.0
    );
    assert_eq!(scrape.value("recept_forged_keys_refused_total", &[]), 1.0);

    // The caller with a key is still served.
    let again = get("/v1/tenant", Some(&key)).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}
