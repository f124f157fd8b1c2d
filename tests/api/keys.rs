//! Keys that cannot be forged into database reads: a key's tag is checked
//! in memory before the key cache and the registry; keys issued before tags
//! keep working; uncached keys are read in a lane of their own.

use futures::future::join_all;
use recept::tenancy::KeySecrets;
use reqwest::{Method, StatusCode};
use uuid::Uuid;

use crate::helpers::{
    assert_problem, spawn_app, spawn_app_on, spawn_app_with, test_settings, TestApp,
};

async fn status(app: &TestApp, key: &str) -> StatusCode {
    app.clinic_request(Method::GET, "/v1/tenant", key)
        .send()
        .await
        .unwrap()
        .status()
}

/// (keys cached, keys read from the registry, keys refused as forged).
async fn key_counts(app: &TestApp) -> (u64, u64, u64) {
    app.app_state.keys.run_pending_tasks().await;
    let (cached, _, misses) = app.app_state.keys.usage();
    (cached, misses, app.app_state.keys.refusals().0)
}

/// `rk_` and 43 base64url characters: the shape of a key issued before
/// keys were tagged.
fn legacy_shaped() -> String {
    let random = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    format!("rk_{}", &random[..43])
}

/// `key` with one character of its tag changed.
fn with_wrong_tag(key: &str, at: usize) -> String {
    let mut bytes = key.as_bytes().to_vec();
    let i = bytes.len() - 1 - at % 22;
    bytes[i] = if bytes[i] == b'x' { b'y' } else { b'x' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn keys_with_a_wrong_tag_are_refused_without_a_registry_read_or_a_cache_entry() {
    let app = spawn_app().await;
    let (_, key) = app.tenant_with_key("forged").await;
    assert_eq!(status(&app, &key).await, StatusCode::OK);
    let (cached, misses, forged) = key_counts(&app).await;
    assert_eq!((cached, misses, forged), (1, 1, 0));

    // A real key with its tag altered, keys tagged under another secret,
    // legacy-shaped keys nobody issued, and keys of no known shape.
    let elsewhere = KeySecrets::new("a secret this server does not hold!!", None);
    let mut presented: Vec<String> = (0..50).map(|i| with_wrong_tag(&key, i)).collect();
    presented.extend((0..50).map(|_| elsewhere.issue().secret));
    presented.extend((0..50).map(|_| legacy_shaped()));
    presented.extend(["rk_", "rk_x.y", "not a key at all"].map(String::from));
    let answers = join_all(
        presented
            .iter()
            .map(|k| app.clinic_request(Method::GET, "/v1/patients", k).send()),
    )
    .await;
    for answer in answers {
        let problem = assert_problem(answer.unwrap(), StatusCode::UNAUTHORIZED).await;
        assert_eq!(problem["type"], "urn:recept:problem:unauthorized");
    }

    let (cached, misses, forged) = key_counts(&app).await;
    assert_eq!(cached, 1, "forged keys never enter the key cache");
    assert_eq!(misses, 1, "forged keys are never read from the registry");
    assert_eq!(forged, presented.len() as u64);
    let scrape = crate::observability::scrape(&app).await;
    assert_eq!(
        scrape.value("recept_forged_keys_refused_total", &[]),
        presented.len() as f64
    );
    // The key-lookup lane opened the one connection the real key needed.
    let pools = app.admin_json("/admin/pools").await;
    let lane = pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "recept-keys")
        .expect("a key-lookup pool");
    assert_eq!(lane["opened"], 1);
    assert_eq!(status(&app, &key).await, StatusCode::OK);
}

#[tokio::test]
async fn keys_tagged_under_the_previous_secret_work_during_a_rotation_and_not_after() {
    let app = spawn_app().await;
    let (_, old_key) = app.tenant_with_key("rotation").await;

    let mut rotated = test_settings(&app.db_url);
    rotated.clinic.previous_key_secret = Some(app.key_secret.clone());
    rotated.clinic.key_secret = format!("{}-rotated", app.key_secret);
    let during = spawn_app_on(rotated.clone()).await;
    assert_eq!(status(&during, &old_key).await, StatusCode::OK);
    let (slug, _) = during.tenant_with_key("rotated").await;
    let (_, new_key) = during.issue_key(&slug).await;
    assert_eq!(status(&during, &new_key).await, StatusCode::OK);
    // A host not yet given the new secret refuses keys tagged under it.
    assert_eq!(status(&app, &new_key).await, StatusCode::UNAUTHORIZED);

    rotated.clinic.previous_key_secret = None;
    let after = spawn_app_on(rotated).await;
    assert_eq!(status(&after, &new_key).await, StatusCode::OK);
    assert_eq!(status(&after, &old_key).await, StatusCode::UNAUTHORIZED);
    assert_eq!(key_counts(&after).await.2, 1);
}

/// Stores `key` as a key issued before tags existed.
async fn store_legacy_key(app: &TestApp, slug: &str, key: &str) {
    let tenant = app.tenant_id(slug).await;
    app.db()
        .await
        .execute(
            "INSERT INTO recept.api_keys (id, tenant_id, key_hash, prefix, label) \
             VALUES (gen_random_uuid(), $1, sha256(convert_to($2, 'UTF8')), left($2, 9), 'legacy')",
            &[&tenant, &key],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn keys_issued_before_tags_keep_working_until_legacy_keys_are_turned_off() {
    let app = spawn_app().await;
    let (slug, _) = app.tenant_with_key("legacy").await;
    let legacy = legacy_shaped();
    store_legacy_key(&app, &slug, &legacy).await;

    let mut settings = test_settings(&app.db_url);
    settings.clinic.key_secret = app.key_secret.clone();
    let restarted = spawn_app_on(settings.clone()).await;
    assert_eq!(restarted.app_state.keys.refusals().1, 1);
    let tenant = restarted.clinic_json(&legacy, "/v1/tenant").await;
    assert_eq!(tenant["slug"], slug.as_str());
    // A legacy-shaped key that was never issued is forged: no registry read.
    let misses = key_counts(&restarted).await.1;
    assert_eq!(
        status(&restarted, &legacy_shaped()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(key_counts(&restarted).await.1, misses);

    settings.clinic.accept_legacy_keys = false;
    let strict = spawn_app_on(settings).await;
    assert_eq!(status(&strict, &legacy).await, StatusCode::UNAUTHORIZED);
    assert_eq!(key_counts(&strict).await, (0, 0, 1));
}

#[tokio::test]
async fn uncached_keys_wait_in_their_own_lane_while_clinics_with_cached_keys_are_served() {
    let app = spawn_app_with(|s| {
        s.clinic.key_lookup_pool_size = 1;
        s.clinic.key_lookup_max_waiting = 2;
        s.clinic.key_cache_ttl_ms = 10_000;
        s.clinic.lock_timeout_ms = 10_000;
    })
    .await;
    let (_, key) = app.tenant_with_key("lane").await;
    assert_eq!(status(&app, &key).await, StatusCode::OK);

    // Key reads block behind a lock: the lane's one connection and its two
    // waiters are taken by keys that are well formed but unknown (as from
    // someone who holds the secret, or keys revoked long ago).
    let lock = app.db().await;
    lock.batch_execute("BEGIN; LOCK TABLE recept.api_keys IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let secrets = KeySecrets::new(&app.key_secret, None);
    let flood: Vec<_> = (0..12)
        .map(|_| {
            let request = app
                .clinic_request(Method::GET, "/v1/patients", &secrets.issue().secret)
                .send();
            tokio::spawn(request)
        })
        .collect();
    // The nine past the lane's connection and queue are refused at once,
    // while the lock still holds the other three.
    let mut waited = 0;
    while flood.iter().filter(|r| r.is_finished()).count() < 9 {
        assert!(waited < 1_000, "nine unknown keys were not refused");
        waited += 1;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (refused, blocked): (Vec<_>, Vec<_>) = flood.into_iter().partition(|r| r.is_finished());
    assert_eq!((refused.len(), blocked.len()), (9, 3));
    for request in refused {
        let answer = request.await.unwrap().unwrap();
        let problem = assert_problem(answer, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(problem["type"], "urn:recept:problem:unavailable");
    }
    // The clinic's own requests go on: its key is cached and its data sits
    // behind its own pool, which the flood never touches.
    for _ in 0..5 {
        let served = app
            .clinic_request(Method::GET, "/v1/patients", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(served.status(), StatusCode::OK);
    }
    lock.batch_execute("COMMIT").await.unwrap();
    for request in blocked {
        let answer = request.await.unwrap().unwrap();
        assert_problem(answer, StatusCode::UNAUTHORIZED).await;
    }
}
