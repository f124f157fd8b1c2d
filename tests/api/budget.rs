//! The per-host budget: it must fit the cluster, waits are bounded, a
//! tenant cannot take every connection, and PostgreSQL can come and go.

use std::time::Duration;

use recept::dev::{PgBinaries, PrivatePostgres};
use recept::startup::Application;
use reqwest::{Method, StatusCode};

use crate::helpers::{
    assert_problem, cluster_dir, fresh_database, spawn_app_on, spawn_app_with, spec, test_settings,
};

#[tokio::test]
async fn a_budget_that_does_not_fit_the_cluster_refuses_to_start() {
    let mut settings = test_settings(&fresh_database().await);
    settings.clinic.pool_size = 200;
    settings.server.hosts_per_cluster = 2;

    let refused = Application::build(settings).await.err().expect("refused");

    let message = format!("{refused:#}");
    assert!(message.contains("clinic.pool_size 200"), "{message}");
    assert!(message.contains("server.hosts_per_cluster"), "{message}");
    assert!(message.contains("max_connections 300"), "{message}");
}

#[tokio::test]
async fn with_every_connection_busy_requests_are_refused_within_their_deadline() {
    let app = spawn_app_with(|s| {
        s.clinic.pool_size = 2;
        s.server.workers = 1;
        s.clinic.queue_timeout_ms = 150;
        s.clinic.max_waiting = 1;
    })
    .await;
    let (slug, key) = app.tenant_with_key("saturated").await;
    let pools = app.app_state.pools.clone();
    let schema = format!("t_{slug}");
    // Two slow requests hold both connections.
    let first = pools.schema("main", &schema).await.unwrap();
    let second = pools.schema("main", &schema).await.unwrap();

    let waiting = app.clinic_request(Method::GET, "/v1/patients", &key).send();
    let also = app.clinic_request(Method::GET, "/v1/patients", &key).send();
    let (waiting, also) = tokio::join!(waiting, also);

    // One waited out its deadline, the other found the one place in the
    // queue taken; each is told which.
    let mut details = Vec::new();
    for response in [waiting.unwrap(), also.unwrap()] {
        assert!(response.headers().contains_key("retry-after"));
        let problem = assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
        details.push(problem["detail"].as_str().unwrap().to_string());
    }
    details.sort();
    assert_eq!(
        details,
        [
            "no database connection came free in time; retry shortly",
            "the server is at capacity; retry shortly",
        ]
    );
    // The first two finish normally and the next request is served.
    assert_eq!(
        first
            .read("SELECT count(*) FROM patients", &[])
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        second
            .read("SELECT count(*) FROM patients", &[])
            .await
            .unwrap()
            .len(),
        1
    );
    drop((first, second));
    let after = app
        .clinic_request(Method::GET, "/v1/patients", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::OK);
}

/// The clinic pool's entry in `GET /admin/pools`.
async fn clinic_pool(app: &crate::helpers::TestApp) -> serde_json::Value {
    let pools = app.admin_json("/admin/pools").await;
    pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "recept-clinic")
        .unwrap()
        .clone()
}

/// Polls the clinic pool until `done` holds (at most ten seconds).
async fn until_clinic_pool(
    app: &crate::helpers::TestApp,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..200 {
        let pool = clinic_pool(app).await;
        if done(&pool) {
            return pool;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the clinic pool never reached the expected state");
}

#[tokio::test]
async fn a_standing_queue_cuts_new_waits_short_and_refuses_the_excess_before_any_work() {
    let app = spawn_app_with(|s| {
        s.clinic.pool_size = 2;
        s.server.workers = 1;
        s.clinic.max_waiting = 8;
        s.clinic.queue_timeout_ms = 30_000;
        s.clinic.standing_queue_ms = 100;
        s.clinic.overload_queue_timeout_ms = 20;
        // The key must stay cached while every connection is held.
        s.clinic.key_cache_ttl_ms = 10_000;
    })
    .await;
    let (slug, key) = app.tenant_with_key("standing").await;
    let schema = format!("t_{slug}");
    let pools = app.app_state.pools.clone();
    // The key is resolved and cached while connections are free; the
    // second request finds a connection open and waits for none, so the
    // interval holds a short wait.
    for _ in 0..2 {
        let patients = app.clinic_request(Method::GET, "/v1/patients", &key);
        assert_eq!(patients.send().await.unwrap().status(), StatusCode::OK);
    }

    // Both connections held; something waits behind them.
    let held = (
        pools.schema("main", &schema).await.unwrap(),
        pools.schema("main", &schema).await.unwrap(),
    );
    let waiter = |pools: std::sync::Arc<recept::pools::Pools>, schema: String| {
        tokio::spawn(async move { pools.schema("main", &schema).await.map(drop) })
    };
    let first = waiter(pools.clone(), schema.clone());
    until_clinic_pool(&app, |p| p["waiting"] == 1).await;
    assert_eq!(clinic_pool(&app).await["overloaded"], false);

    // The queue stands once a whole interval passed in which it was not
    // empty and nobody was served (the interval before still holds the
    // quick first request). Any clinic request ends an interval, even one
    // for no route; the next request after a second interval finds the
    // queue standing, waits only the short overload deadline and is refused.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let probe = app.clinic_request(Method::GET, "/v1/no-such-route", &key);
    assert_eq!(probe.send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(clinic_pool(&app).await["overloaded"], false);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = app
        .clinic_request(Method::GET, "/v1/patients", &key)
        .send()
        .await
        .unwrap();
    assert!(second.headers().contains_key("retry-after"));
    assert_problem(second, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(clinic_pool(&app).await["overloaded"], true);

    // One more waiter fills the overload queue (one per connection): now
    // requests are refused before routing or key lookup, so even a wrong
    // key gets 503, while the health probes still answer.
    let third = waiter(pools.clone(), schema.clone());
    until_clinic_pool(&app, |p| p["waiting"] == 2).await;
    let wrong_key = app
        .clinic_request(Method::GET, "/v1/patients", "rk_not_a_key")
        .send()
        .await
        .unwrap();
    assert_problem(wrong_key, StatusCode::SERVICE_UNAVAILABLE).await;
    let shed = app
        .clinic_request(Method::GET, "/v1/tenant", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(shed.headers()["retry-after"], "1");
    let problem = assert_problem(shed, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(problem["type"], "urn:recept:problem:unavailable");
    let health = app.http.get(format!("{}/healthz", app.clinic)).send().await;
    assert_eq!(health.unwrap().status(), StatusCode::OK);
    let refused_before_routing = crate::observability::scrape(&app).await.value(
        "recept_http_requests_total",
        &[r#"route="(refused: overloaded)""#],
    );
    assert_eq!(refused_before_routing, 2.0);

    // Work already admitted finishes; once nobody has been refused for a
    // while the pool is no longer overloaded and requests are served.
    drop(held);
    first.await.unwrap().unwrap();
    third.await.unwrap().unwrap();
    until_clinic_pool(&app, |p| p["overloaded"] == false).await;
    let after = app.clinic_request(Method::GET, "/v1/patients", &key);
    assert_eq!(after.send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_tenant_over_its_share_gets_429_while_another_is_served() {
    let app = spawn_app_with(|s| {
        s.clinic.pool_size = 4;
        s.clinic.tenant_max_in_flight = 1;
    })
    .await;
    let (noisy, noisy_key) = app.tenant_with_key("noisy").await;
    let (_, quiet_key) = app.tenant_with_key("quiet").await;
    let noisy_id = app.tenant_id(&noisy).await;
    // The noisy clinic's one allowed request is in flight.
    let held = app
        .app_state
        .pools
        .tenant(
            recept::pools::Shard::FIRST,
            noisy_id,
            "main",
            &format!("t_{noisy}"),
        )
        .await
        .unwrap();

    let refused = app
        .clinic_request(Method::GET, "/v1/patients", &noisy_key)
        .send()
        .await
        .unwrap();
    let served = app
        .clinic_request(Method::GET, "/v1/patients", &quiet_key)
        .send()
        .await
        .unwrap();

    assert!(refused.headers().contains_key("retry-after"));
    assert_problem(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(served.status(), StatusCode::OK);
    drop(held);
    let again = app
        .clinic_request(Method::GET, "/v1/patients", &noisy_key)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn postgresql_restarted_is_answered_with_503_then_served_without_restarting_recept() {
    let dir = cluster_dir("recept-restart-");
    let password = "restart-test-password";
    let bins = PgBinaries::find().unwrap();
    let pg = PrivatePostgres::start(&bins, &spec(&dir, password)).unwrap();
    let port = pg.port();
    let app = spawn_app_on(test_settings(&crate::helpers::url(
        port, password, "postgres",
    )))
    .await;
    let (_, key) = app.tenant_with_key("restart").await;
    let get = || app.clinic_request(Method::GET, "/v1/patients", &key).send();
    assert_eq!(get().await.unwrap().status(), StatusCode::OK);

    pg.stop().unwrap();
    let down = get().await.unwrap();
    assert_problem(down, StatusCode::SERVICE_UNAVAILABLE).await;
    let mut again = spec(&dir, password);
    again.port = Some(port);
    let pg = PrivatePostgres::start(&bins, &again).unwrap();

    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..100 {
        status = get().await.unwrap().status();
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status,
        StatusCode::OK,
        "served again after PostgreSQL came back"
    );
    drop(pg);
    let _ = std::fs::remove_dir_all(dir);
}
