//! Migration runs across tenants: failures isolated, resumable, one at a
//! time, dry runs, canaries, and tenants behind the binary not served.

use std::process::Command;

use recept::migrate::{run, MigrationSet, RunError, RunOptions};
use recept::tenancy::Slug;
use reqwest::{Method, StatusCode};

use crate::helpers::{assert_problem, spawn_app, TestApp};

/// The newest tenant migration of this binary.
const LATEST: i32 = 5;

/// Undoes the newest tenant migration (V5) in schema `{s}`.
const UNDO_LATEST: &str = "DROP TABLE {s}.patient_diseases; \
     ALTER TABLE {s}.insurances DROP CONSTRAINT insurances_rate_or_kind, DROP COLUMN kind CASCADE, \
       DROP COLUMN relation, DROP COLUMN income_category, ALTER COLUMN copay_rate SET NOT NULL; \
     DROP INDEX {s}.encounters_month_order; \
     ALTER TABLE {s}.encounters DROP COLUMN copay_rule, DROP COLUMN charge_before_ceiling_yen, \
       DROP COLUMN ceiling_yen; \
     ALTER TABLE {s}.encounter_lines DROP COLUMN unit_no, DROP COLUMN unit_kind, DROP COLUMN unit_days; \
     ALTER TABLE {s}.claims DROP COLUMN charge_before_ceiling_yen; \
     ALTER TABLE {s}.clinic DROP COLUMN institution_code, DROP COLUMN prefecture_code, \
       DROP COLUMN fee_table, DROP COLUMN address, DROP COLUMN phone, DROP COLUMN profile_updated_at;";

const EXTRA: [(&str, &str); 1] = [(
    "V100__visit_room",
    "ALTER TABLE encounters ADD COLUMN room text NOT NULL DEFAULT 'main'; \
     CREATE INDEX encounters_room ON encounters (room); \
     CREATE TABLE rooms (name text PRIMARY KEY);",
)];

fn options(concurrency: usize) -> RunOptions {
    RunOptions {
        concurrency,
        retries: 1,
        ..RunOptions::default()
    }
}

async fn history_version(app: &TestApp, slug: &str) -> i32 {
    app.db()
        .await
        .query_one(
            &format!("SELECT max(version) FROM \"t_{slug}\".refinery_schema_history"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn three_tenants(app: &TestApp) -> Vec<String> {
    let mut slugs = Vec::new();
    for prefix in ["mig_a", "mig_b", "mig_c"] {
        slugs.push(app.tenant_with_key(prefix).await.0);
    }
    slugs.sort();
    slugs
}

#[tokio::test]
async fn a_failing_tenant_keeps_its_version_and_a_rerun_finishes_the_job() {
    let app = spawn_app().await;
    let slugs = three_tenants(&app).await;
    let pools = app.app_state.pools.clone();
    let set = MigrationSet::with_extra(&EXTRA).unwrap();
    let db = app.db().await;
    // A conflicting object planted in one tenant's schema.
    db.batch_execute(&format!("CREATE TABLE \"t_{}\".rooms (x int)", slugs[1]))
        .await
        .unwrap();

    let first = run(&pools, &set, &options(2), |_| {}).await.unwrap();

    assert_eq!(first.migrated, 2);
    assert_eq!(first.failed.len(), 1);
    assert_eq!(first.failed[0].slug, slugs[1]);
    let error = first.failed[0].error.clone().unwrap();
    assert!(error.contains("rooms"), "{error}");
    assert_eq!(history_version(&app, &slugs[1]).await, LATEST);
    let column: i64 = db
        .query_one(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_schema = $1 AND column_name = 'room'",
            &[&format!("t_{}", slugs[1])],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(column, 0, "nothing of the failed migration remains");
    assert_eq!(history_version(&app, &slugs[0]).await, 100);

    db.batch_execute(&format!("DROP TABLE \"t_{}\".rooms", slugs[1]))
        .await
        .unwrap();
    let second = run(&pools, &set, &options(2), |_| {}).await.unwrap();

    assert_eq!(
        (second.migrated, second.current, second.failed.len()),
        (1, 2, 0)
    );
    for slug in &slugs {
        assert_eq!(history_version(&app, slug).await, 100, "{slug}");
    }
    let ledger: i64 = db
        .query_one("SELECT count(*) FROM recept.migration_ledger", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ledger, 4);
}

#[tokio::test]
async fn a_second_concurrent_run_is_refused() {
    let app = spawn_app().await;
    three_tenants(&app).await;
    let pools = app.app_state.pools.clone();
    let set = MigrationSet::with_extra(&EXTRA).unwrap();
    // Another run holds the run lock.
    let other = app.db().await;
    other
        .query_one(
            "SELECT pg_try_advisory_lock($1)",
            &[&0x7265_6365_7074_0002_i64],
        )
        .await
        .unwrap();

    let refused = run(&pools, &set, &options(2), |_| {}).await;

    assert!(matches!(refused, Err(RunError::AlreadyRunning)));
    drop(other);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let after = run(&pools, &set, &options(2), |_| {}).await.unwrap();
    assert_eq!(after.migrated, 3);
}

#[tokio::test]
async fn a_dry_run_changes_nothing() {
    let app = spawn_app().await;
    let slugs = three_tenants(&app).await;
    let pools = app.app_state.pools.clone();
    let set = MigrationSet::with_extra(&EXTRA).unwrap();
    let mut dry = options(2);
    dry.dry_run = true;

    let summary = run(&pools, &set, &dry, |_| {}).await.unwrap();

    assert_eq!(
        (summary.pending, summary.migrated, summary.run_id),
        (3, 0, None)
    );
    for slug in &slugs {
        assert_eq!(history_version(&app, slug).await, LATEST);
    }
    let runs: i64 = app
        .db()
        .await
        .query_one("SELECT count(*) FROM recept.migration_runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 0);
}

#[tokio::test]
async fn a_failing_canary_stops_the_run_before_anyone_else() {
    let app = spawn_app().await;
    let slugs = three_tenants(&app).await;
    let pools = app.app_state.pools.clone();
    let set = MigrationSet::with_extra(&EXTRA).unwrap();
    app.db()
        .await
        .batch_execute(&format!("CREATE TABLE \"t_{}\".rooms (x int)", slugs[2]))
        .await
        .unwrap();
    let mut canary = options(2);
    canary.canary = Some(Slug::parse(&slugs[2]).unwrap());

    let result = run(&pools, &set, &canary, |_| {}).await;

    assert!(matches!(result, Err(RunError::CanaryFailed { ref slug, .. }) if *slug == slugs[2]));
    for slug in &slugs {
        assert_eq!(history_version(&app, slug).await, LATEST, "{slug}");
    }
}

#[tokio::test]
async fn a_tenant_behind_the_binary_gets_503_while_others_are_served() {
    let app = spawn_app().await;
    let (behind, behind_key) = app.tenant_with_key("behind").await;
    let (_, current_key) = app.tenant_with_key("current").await;
    let db = app.db().await;
    // As after deploying a binary with a migration this tenant lacks: its
    // last migration is undone and the registry knows it.
    db.batch_execute(&format!(
        "{} \
         DELETE FROM \"t_{behind}\".refinery_schema_history WHERE version = {LATEST}; \
         UPDATE recept.tenants SET schema_version = {LATEST} - 1 WHERE slug = '{behind}';",
        UNDO_LATEST.replace("{s}", &format!("\"t_{behind}\""))
    ))
    .await
    .unwrap();
    app.app_state.keys.invalidate_all();

    let refused = app
        .clinic_request(Method::GET, "/v1/patients", &behind_key)
        .send()
        .await
        .unwrap();
    let served = app
        .clinic_request(Method::GET, "/v1/patients", &current_key)
        .send()
        .await
        .unwrap();
    assert!(refused.headers().contains_key("retry-after"));
    assert_problem(refused, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(served.status(), StatusCode::OK);

    let summary = run(
        &app.app_state.pools,
        &MigrationSet::embedded(),
        &options(2),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((summary.migrated, summary.current), (1, 1));
    app.app_state.keys.invalidate_all();
    let after = app
        .clinic_request(Method::GET, "/v1/patients", &behind_key)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::OK);
    let status: serde_json::Value = app
        .admin_request(Method::GET, "/admin/migrations")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["binary_version"], LATEST);
    assert_eq!(status["behind"], serde_json::json!([]));
    assert_eq!(status["latest_run"]["migrated"], 1);
}

#[tokio::test]
async fn the_command_line_names_a_failed_tenant_and_exits_non_zero() {
    let app = spawn_app().await;
    let (broken, _) = app.tenant_with_key("broken").await;
    app.tenant_with_key("fine").await;
    // Its history forgets the last migration while what it made remains:
    // re-applying it conflicts.
    app.db()
        .await
        .batch_execute(&format!(
            "DELETE FROM \"t_{broken}\".refinery_schema_history WHERE version = {LATEST}; \
             UPDATE recept.tenants SET schema_version = {LATEST} - 1 WHERE slug = '{broken}';"
        ))
        .await
        .unwrap();
    let recept = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_recept"))
            .args(args)
            .env("RECEPT__CLUSTERS__MAIN__URL", &app.db_url)
            .env("RECEPT__ADMIN__TOKEN", &app.admin_token)
            .env("RECEPT__CLINIC__KEY_SECRET", &app.key_secret)
            .output()
            .unwrap()
    };

    let output = recept(&["migrate"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(stderr.contains(&broken), "{stderr}");
    assert!(stdout.contains("1 already current, 1 failed"), "{stdout}");

    let status = recept(&["migrate", "--status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success());
    assert!(text.contains(&format!("failed: {broken}")), "{text}");
}

#[tokio::test]
async fn a_migration_waiting_on_a_busy_table_gives_up_and_is_retried() {
    let app = crate::helpers::spawn_app_with(|s| s.migrate.lock_timeout_ms = 200).await;
    let (busy, _) = app.tenant_with_key("busy").await;
    let pools = app.app_state.pools.clone();
    let set = MigrationSet::with_extra(&EXTRA).unwrap();
    // A long clinic transaction holds the table the migration alters.
    let holder = app.db().await;
    holder
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"t_{busy}\".encounters IN ACCESS SHARE MODE"
        ))
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        holder.batch_execute("COMMIT").await.unwrap();
    });
    let attempts = std::sync::Mutex::new(0);
    let mut retrying = options(1);
    retrying.retries = 10;

    let summary = run(&pools, &set, &retrying, |event| {
        if let recept::migrate::Event::Tenant(t) = event {
            *attempts.lock().unwrap() = t.attempts;
        }
    })
    .await
    .unwrap();
    release.await.unwrap();

    assert_eq!(
        (summary.migrated, summary.failed.len()),
        (1, 0),
        "{:?}",
        summary.failed
    );
    assert!(
        *attempts.lock().unwrap() >= 2,
        "the first attempt gave up on the lock"
    );
    assert_eq!(history_version(&app, &busy).await, 100);
}

#[test]
fn the_tests_know_the_newest_tenant_migration() {
    assert_eq!(recept::migrate::latest_tenant_version(), LATEST);
}
