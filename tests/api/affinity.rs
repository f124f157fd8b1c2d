//! Tenant-affine routing in a clinic worker's share of the pool: a
//! tenant's requests take one of its two home connections when one is idle
//! and another at once when both are busy (no wait for a home), and a connection that
//! has served `clinic.connection_max_schemas` schemas is retired. At most
//! `clinic.max_active` connections are in use at once, the rest waiting
//! idle; a tenant's reads at home use statements of its own (those naming
//! its tables run alone, outside any transaction), as do the statements a
//! write asks for as its own (`Tx::prepare_own`), and a connection keeps
//! at most `clinic.connection_max_statements`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use recept::pools::Shard;

use crate::helpers::{spawn_app_with, TestApp};

/// The clinic pool's figures in `/admin/pools`.
async fn clinic_pool(app: &TestApp) -> Value {
    let pools = app.admin_json("/admin/pools").await;
    pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "recept-clinic")
        .cloned()
        .expect("the clinic pool")
}

fn served(pool: &Value) -> (u64, u64, u64) {
    let a = &pool["affinity"];
    (
        a["home"].as_u64().unwrap(),
        a["warm"].as_u64().unwrap(),
        a["cold"].as_u64().unwrap(),
    )
}

/// `n` requests of the tenant `slug` (with `key`), each holding its clinic
/// connection while it waits on a lock of its `encounters` table, once the
/// pool shows them in use; with the lock's holder, whose `COMMIT` lets them
/// go.
async fn blocked_on_a_lock(
    app: &TestApp,
    slug: &str,
    key: &str,
    n: usize,
) -> (
    tokio_postgres::Client,
    Vec<tokio::task::JoinHandle<StatusCode>>,
) {
    let holder = app.lock_table(slug, "encounters").await;
    let mut blocked = Vec::new();
    for held in 1..=n {
        let request = app.clinic_request(Method::GET, "/v1/encounters", key);
        blocked.push(tokio::spawn(async move {
            request.send().await.unwrap().status()
        }));
        wait_in_use(app, held).await;
    }
    (holder, blocked)
}

/// Waits until the clinic pool shows `n` connections in use.
async fn wait_in_use(app: &TestApp, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while clinic_pool(app).await["in_use"] != n {
        assert!(
            std::time::Instant::now() < deadline,
            "the requests never took their connections"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The backends serving recept's clinic connections.
async fn clinic_backends(app: &TestApp) -> Vec<i32> {
    let rows = app
        .db()
        .await
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'recept-clinic' \
             AND datname = current_database() ORDER BY pid",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn a_tenant_uses_its_homes_when_idle_and_another_at_once_when_not() {
    // One worker, so every request meets the same four connections.
    let app = one_worker(4, |_| {}).await;
    let (slug, key) = app.tenant_with_key("homed").await;
    let patient = app.insured_patient(&key, "家 太郎").await;
    let before = served(&clinic_pool(&app).await);
    for _ in 0..20 {
        app.clinic_json(&key, &format!("/v1/patients/{patient}"))
            .await;
    }
    let after = served(&clinic_pool(&app).await);
    assert_eq!(
        (after.0 - before.0, after.1 - before.1, after.2 - before.2),
        (20, 0, 0),
        "one request at a time: always at home"
    );

    // The first home held by a request that waits on a lock: the second
    // serves the next, a home too.
    let (holder, blocked) = blocked_on_a_lock(&app, &slug, &key, 1).await;
    let before = served(&clinic_pool(&app).await);
    app.clinic_json(&key, &format!("/v1/patients/{patient}"))
        .await;
    let after = served(&clinic_pool(&app).await);
    assert_eq!(after.0, before.0 + 1, "the second home");
    holder.batch_execute("COMMIT").await.unwrap();
    for request in blocked {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }

    // Both homes held by requests that wait on a lock; the tenant's next
    // request is served on another connection while those still wait.
    let (holder, blocked) = blocked_on_a_lock(&app, &slug, &key, 2).await;
    let before = served(&clinic_pool(&app).await);
    let shown = app
        .clinic_json(&key, &format!("/v1/patients/{patient}"))
        .await;
    assert_eq!(shown["id"], patient.as_str());
    assert!(
        blocked.iter().all(|b| !b.is_finished()),
        "the first requests still wait on their lock"
    );
    let after = served(&clinic_pool(&app).await);
    assert_eq!(after.0, before.0, "not at home: both homes are busy");
    assert_eq!(after.1 + after.2, before.1 + before.2 + 1);
    holder.batch_execute("COMMIT").await.unwrap();
    for request in blocked {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_connection_that_served_its_share_of_schemas_is_retired() {
    let app = one_worker(1, |s| {
        s.clinic.connection_max_schemas = 2;
    })
    .await;
    let mut clinics = Vec::new();
    for prefix in ["first", "second", "third"] {
        let (_, key) = app.tenant_with_key(prefix).await;
        let patient = app.insured_patient(&key, "三 花子").await;
        clinics.push((key, patient));
    }
    let get = |i: usize| {
        let (key, patient) = clinics[i].clone();
        let app = &app;
        async move {
            app.clinic_json(&key, &format!("/v1/patients/{patient}"))
                .await;
        }
    };
    // Registering the patients touched three schemas already; the third
    // was served last, by the connection open now.
    get(2).await;
    let retired = clinic_pool(&app).await["retired"].as_u64().unwrap();
    let backend = clinic_backends(&app).await;
    // A second schema, then both again: the same connection serves them.
    for i in [0, 2, 0, 2] {
        get(i).await;
    }
    let pool = clinic_pool(&app).await;
    assert_eq!(pool["schemas_per_connection"]["max"], 2, "{pool}");
    assert_eq!(pool["retired"].as_u64().unwrap(), retired);
    assert_eq!(clinic_backends(&app).await, backend);
    // A third schema: the connection is retired first, and a new backend
    // serves it.
    get(1).await;
    let pool = clinic_pool(&app).await;
    assert_eq!(pool["retired"].as_u64().unwrap(), retired + 1, "{pool}");
    assert_eq!(pool["schemas_per_connection"]["max"], 1, "{pool}");
    // The retired backend ends moments after its connection closed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut now = clinic_backends(&app).await;
    while now.len() > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        now = clinic_backends(&app).await;
    }
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now, backend);
}

#[tokio::test]
async fn tenants_taking_turns_each_keep_to_their_own_home() {
    let app = one_worker(4, |_| {}).await;
    let mut clinics = Vec::new();
    for i in 0..12 {
        let (_, key) = app.tenant_with_key(&format!("turns{i}")).await;
        let patient = app.insured_patient(&key, "順 番").await;
        clinics.push((key, patient));
    }
    // One request at a time, the tenants in turn: one pool without
    // affinity would serve them all on one idle connection.
    for _ in 0..3 {
        for (key, patient) in &clinics {
            app.clinic_json(key, &format!("/v1/patients/{patient}"))
                .await;
        }
    }
    let pool = clinic_pool(&app).await;
    let open = pool["size"].as_u64().unwrap();
    let mean = pool["schemas_per_connection"]["mean"].as_f64().unwrap();
    // Twelve tenants over four connections: more than one is in use...
    assert!(open > 1, "{pool}");
    // ...and each tenant's schema was served by exactly one connection,
    // its first home.
    assert_eq!((mean * open as f64).round() as u64, 12, "{pool}");
    assert_eq!(
        served(&pool).2,
        0,
        "never on a connection new to the schema"
    );
}

#[tokio::test]
async fn no_more_than_max_active_connections_are_in_use_however_many_are_idle() {
    let app = one_worker(4, |s| {
        s.clinic.max_active = 1;
        s.clinic.queue_timeout_ms = 300;
    })
    .await;
    let (slug, key) = app.tenant_with_key("active").await;
    let (_, other) = app.tenant_with_key("waiting").await;
    let pool = clinic_pool(&app).await;
    assert_eq!(
        (pool["max_size"].as_u64(), pool["max_active"].as_u64()),
        (Some(4), Some(1)),
        "{pool}"
    );

    // The one request allowed at once waits on a lock, holding its
    // connection; three others are idle, yet another tenant's request
    // waits its turn and is refused at the deadline.
    let (holder, mut blocked) = blocked_on_a_lock(&app, &slug, &key, 1).await;
    let blocked = blocked.pop().unwrap();
    let refused = app
        .clinic_request(Method::GET, "/v1/encounters", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!blocked.is_finished());
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(blocked.await.unwrap(), StatusCode::OK);
    // Free again: the other tenant is served.
    let served = app
        .clinic_request(Method::GET, "/v1/encounters", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), StatusCode::OK);
}

/// An app with one clinic worker and `n` clinic connections, its other
/// settings as `tweak` leaves them.
async fn one_worker(n: usize, tweak: impl FnOnce(&mut recept::config::Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.server.workers = 1;
        s.clinic.pool_size = n;
        tweak(s);
    })
    .await
}

/// A new tenant of `app` as the pools know it: its id and its schema.
async fn new_tenant(app: &TestApp, prefix: &str) -> (uuid::Uuid, String) {
    let (slug, _) = app.tenant_with_key(prefix).await;
    (app.tenant_id(&slug).await, format!("t_{slug}"))
}

/// An app with one worker and `n` clinic connections, and a new tenant
/// of it: its id and its schema. With three, a tenant has its two homes
/// and one other.
async fn connections(n: usize, prefix: &str) -> (TestApp, uuid::Uuid, String) {
    let app = one_worker(n, |_| {}).await;
    let (tenant, schema) = new_tenant(&app, prefix).await;
    (app, tenant, schema)
}

/// One of `tenant`'s clinic connections from the first worker's shard,
/// taken as a request would take it.
async fn connection(app: &TestApp, tenant: uuid::Uuid, schema: &str) -> recept::pools::TenantConn {
    app.app_state
        .pools
        .tenant(Shard::FIRST, tenant, "main", schema)
        .await
        .unwrap()
}

/// Has the shard's idle connections serve `n` made-up tenants' schemas,
/// one after the other (with all but one held by the caller, that one),
/// so that it counts as serving many tenants (more than
/// `pools::slots::FEW_SCHEMAS`).
async fn serve_others(app: &TestApp, n: usize) {
    for i in 0..n {
        let conn = connection(app, uuid::Uuid::new_v4(), &format!("t_someone_{i}")).await;
        conn.read("SELECT 1", &[]).await.unwrap();
    }
}

/// The statements prepared on `conn`'s connection, as PostgreSQL lists them.
async fn prepared(conn: &recept::pools::TenantConn) -> Vec<String> {
    conn.read(
        "SELECT statement FROM pg_prepared_statements ORDER BY prepare_time",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Whether any of the `listed` statement texts is `schema`'s own.
fn has_own(listed: &[String], schema: &str) -> bool {
    let own = format!("/* \"{schema}\" */");
    listed.iter().any(|s| s.contains(&own))
}

#[tokio::test]
async fn a_tenant_reads_at_home_with_statements_of_its_own_and_elsewhere_with_shared_ones() {
    let (app, tenant, schema) = connections(3, "ownplans").await;

    // Idle pool: the tenant's first home, then with that one held its
    // second. On both its read is prepared as the tenant's own statement,
    // the schema named in the text.
    let home = connection(&app, tenant, &schema).await;
    let second = connection(&app, tenant, &schema).await;
    // The other connection serves many tenants.
    serve_others(&app, 9).await;
    let own = format!("/* \"{schema}\" */ SELECT statement FROM pg_prepared_statements");
    for at_home in [&home, &second] {
        let listed = prepared(at_home).await;
        assert!(listed.iter().any(|s| s.starts_with(&own)), "{listed:?}");
    }

    // Both homes held: the tenant's next connection is the other, where
    // the same read is the statement every tenant shares.
    let away = connection(&app, tenant, &schema).await;
    let listed = prepared(&away).await;
    assert!(
        listed
            .iter()
            .any(|s| s.starts_with("SELECT statement FROM pg_prepared_statements")),
        "{listed:?}"
    );
    assert!(!has_own(&listed, &schema), "{listed:?}");
    drop(away);
    drop(second);
    drop(home);
}

/// What a read of the tenant's own table learns of how it ran: the rows
/// it counted and the `search_path` it ran under (the tenant's inside the
/// read's transaction, the session's own outside one).
async fn how_it_ran(conn: &recept::pools::TenantConn) -> (i64, String) {
    let rows = conn
        .read(
            "SELECT (SELECT count(*) FROM \"{tenant}\".patients), \
             current_setting('search_path')",
            &[],
        )
        .await
        .unwrap();
    (rows[0].get(0), rows[0].get(1))
}

#[tokio::test]
async fn a_read_naming_the_tenants_tables_runs_alone_at_home_and_in_a_transaction_elsewhere() {
    let (app, tenant, schema) = connections(3, "alone").await;
    let (other, other_schema) = new_tenant(&app, "alone_other").await;
    // One patient in the tenant's schema, none in the other's.
    let conn = app.app_state.pools.schema("main", &schema).await.unwrap();
    conn.write(async |tx| -> Result<(), recept::pools::DbError> {
        tx.batch_execute(
            "INSERT INTO patients (id, name, name_kana, birth_date, sex) \
             VALUES (gen_random_uuid(), '一 太郎', 'イチ タロウ', '1980-01-01', 'male')",
        )
        .await?;
        Ok(())
    })
    .await
    .unwrap();
    drop(conn);

    // At home: the schema named in the text, and no search_path but the
    // session's own: no transaction selected the schema.
    let home = connection(&app, tenant, &schema).await;
    assert_eq!(how_it_ran(&home).await, (1, "pg_catalog".into()));
    let listed = prepared(&home).await;
    assert!(
        listed.iter().any(|s| s.contains(&format!(
            "SELECT (SELECT count(*) FROM \"{schema}\".patients), "
        ))),
        "{listed:?}"
    );

    // Away (both homes held, the other connection serving many tenants):
    // the shared text, under the tenant's path in the read's transaction.
    let second = connection(&app, tenant, &schema).await;
    assert_eq!(how_it_ran(&second).await, (1, "pg_catalog".into()));
    serve_others(&app, 9).await;
    let away = connection(&app, tenant, &schema).await;
    assert_eq!(how_it_ran(&away).await, (1, format!("\"{schema}\"")));
    let listed = prepared(&away).await;
    assert!(
        listed
            .iter()
            .any(|s| s.starts_with("SELECT (SELECT count(*) FROM patients)")),
        "{listed:?}"
    );
    drop(away);
    drop(second);
    drop(home);

    // Another tenant's read, at its own home, counts its own table.
    let theirs = connection(&app, other, &other_schema).await;
    assert_eq!(how_it_ran(&theirs).await.0, 0);
}

/// Counts the tenant's patients in `conn`'s write, on the statement
/// `Tx::prepare_own` gives it.
async fn count_in_write(conn: &recept::pools::TenantConn) -> i64 {
    conn.write(async |tx| -> Result<i64, recept::pools::DbError> {
        let statement = tx.prepare_own("SELECT count(*) FROM patients").await?;
        Ok(tx.query_one(&statement, &[]).await?.get(0))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_writes_own_statement_is_its_tenants_at_home_and_the_shared_one_elsewhere() {
    // One connection: home to every tenant.
    let app = one_worker(1, |_| {}).await;
    let (a, a_schema) = new_tenant(&app, "ownwrite_a").await;
    let (b, b_schema) = new_tenant(&app, "ownwrite_b").await;
    let conn = app.app_state.pools.schema("main", &a_schema).await.unwrap();
    conn.write(async |tx| -> Result<(), recept::pools::DbError> {
        tx.batch_execute(
            "INSERT INTO patients (id, name, birth_date, sex) \
             VALUES (gen_random_uuid(), '一 太郎', '1980-01-01', 'male')",
        )
        .await?;
        Ok(())
    })
    .await
    .unwrap();
    drop(conn);

    // Taking turns on the one connection, each tenant's write counts its
    // own table on a statement of its own, prepared in its schema.
    for _ in 0..3 {
        let conn = connection(&app, a, &a_schema).await;
        assert_eq!(count_in_write(&conn).await, 1);
        drop(conn);
        let conn = connection(&app, b, &b_schema).await;
        assert_eq!(count_in_write(&conn).await, 0);
        drop(conn);
    }
    let conn = connection(&app, a, &a_schema).await;
    let listed = prepared(&conn).await;
    for schema in [&a_schema, &b_schema] {
        let own = format!("/* \"{schema}\" */ SELECT count(*) FROM patients");
        assert_eq!(
            listed.iter().filter(|s| **s == own).count(),
            1,
            "{listed:?}"
        );
    }
    assert!(
        !listed.iter().any(|s| s == "SELECT count(*) FROM patients"),
        "{listed:?}"
    );
    drop(conn);

    // Three connections: away from both homes, on one serving many
    // tenants, the write uses the statement every tenant shares.
    let (app, tenant, schema) = connections(3, "ownwrite_away").await;
    let home = connection(&app, tenant, &schema).await;
    let second = connection(&app, tenant, &schema).await;
    serve_others(&app, 9).await;
    let away = connection(&app, tenant, &schema).await;
    assert_eq!(count_in_write(&away).await, 0);
    let listed = prepared(&away).await;
    assert!(
        listed.iter().any(|s| s == "SELECT count(*) FROM patients"),
        "{listed:?}"
    );
    assert!(!has_own(&listed, &schema), "{listed:?}");
    drop(away);
    drop(second);
    drop(home);
}

/// How often PostgreSQL planned the statement `text` prepared on `conn`'s
/// connection: (generic plans, custom plans).
async fn plans_of(conn: &recept::pools::TenantConn, text: &str) -> (i64, i64) {
    let rows = conn
        .read(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements \
             WHERE statement = $1",
            &[&text],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{text} is prepared once");
    (rows[0].get(0), rows[0].get(1))
}

/// The transaction's `plan_cache_mode`, in a write planned as `planning`
/// that first runs the tenant's own `sql` once.
async fn write_planned_once(
    conn: &recept::pools::TenantConn,
    planning: recept::pools::Planning,
    sql: &str,
) -> String {
    conn.write_planned(
        planning,
        async |tx| -> Result<String, recept::pools::DbError> {
            let statement = tx.prepare_own(sql).await?;
            tx.query_one(&statement, &[&uuid::Uuid::new_v4()]).await?;
            Ok(tx
                .query_one("SELECT current_setting('plan_cache_mode')", &[])
                .await?
                .get(0))
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_generic_write_keeps_its_plan_from_the_first_use_and_only_for_its_transaction() {
    use recept::pools::Planning;
    let (app, tenant, schema) = connections(1, "generic").await;
    let conn = connection(&app, tenant, &schema).await;
    let by_key = "SELECT count(*) FROM patients WHERE id = $1";
    let by_name = "SELECT count(*) FROM patients WHERE id = $1 AND name IS NOT NULL";

    // Planned as PostgreSQL chooses, the first use is a custom plan.
    let mode = write_planned_once(&conn, Planning::Auto, by_name).await;
    assert_eq!(mode, "auto");
    let own = format!("/* \"{schema}\" */ {by_name}");
    assert_eq!(plans_of(&conn, &own).await, (0, 1));

    // Generic: the plan is made for any parameters at once, and kept.
    let mode = write_planned_once(&conn, Planning::Generic, by_key).await;
    assert_eq!(mode, "force_generic_plan");
    let own = format!("/* \"{schema}\" */ {by_key}");
    assert_eq!(plans_of(&conn, &own).await, (1, 0));
    write_planned_once(&conn, Planning::Generic, by_key).await;
    assert_eq!(plans_of(&conn, &own).await, (2, 0));

    // The setting ends with the transaction: the next write and read on
    // the same connection have the session's.
    let mode = write_planned_once(&conn, Planning::Auto, by_name).await;
    assert_eq!(mode, "auto");
    let rows = conn
        .read("SELECT current_setting('plan_cache_mode')", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "auto");
}

#[tokio::test]
async fn a_visit_plans_its_own_reads_once_for_any_patient() {
    let app = one_worker(1, |_| {}).await;
    app.import_release("2026-04", &crate::helpers::sample_release("2026-04"))
        .await;
    let (slug, key) = app.tenant_on_release("genericvisit", "2026-04").await;
    let (tenant, schema) = (app.tenant_id(&slug).await, format!("t_{slug}"));
    for name in ["一 太郎", "二 花子"] {
        let patient = app.insured_patient(&key, name).await;
        app.clinic_post(
            &key,
            "/v1/encounters",
            json!({"patient_id": patient, "date": "2026-07-01", "diagnoses": ["8833421"],
                   "items": [{"code": "112007410", "quantity": 1}]}),
        )
        .await;
    }
    // The one connection is the tenant's home: its own statements of the
    // patient's insurance on the day and of the month so far, each planned
    // once and used by both visits.
    let conn = connection(&app, tenant, &schema).await;
    for own in [
        format!("/* \"{schema}\" */ {}", recept::db::encounters::PATIENT_ON),
        format!(
            "/* \"{schema}\" */ {}",
            recept::db::encounters::MONTH_SO_FAR
        ),
    ] {
        assert_eq!(plans_of(&conn, &own).await, (2, 0), "{own}");
    }
}

#[tokio::test]
async fn a_connection_serving_few_tenants_gives_each_its_own_statements() {
    let (app, tenant, schema) = connections(3, "few").await;
    // Both homes held, the tenant's read goes to the other connection,
    // which has served no other tenant: there too it runs alone.
    let _home = connection(&app, tenant, &schema).await;
    let _second = connection(&app, tenant, &schema).await;
    let away = connection(&app, tenant, &schema).await;
    assert_eq!(how_it_ran(&away).await, (0, "pg_catalog".into()));
    drop(away);
    // Once that connection has served more than a few tenants, no more.
    serve_others(&app, 9).await;
    let away = connection(&app, tenant, &schema).await;
    assert_eq!(how_it_ran(&away).await, (0, format!("\"{schema}\"")));
}

/// The next marked read on `conn` finds the session's settings changed:
/// it fails, and the connection is tainted (discarded when dropped).
async fn caught(conn: &recept::pools::TenantConn) {
    assert!(conn
        .read("SELECT count(*) FROM \"{tenant}\".patients", &[])
        .await
        .is_err());
    assert!(conn.tainted());
}

#[tokio::test]
async fn a_read_running_alone_still_catches_changed_session_settings() {
    let (app, tenant, schema) = connections(1, "alonecheck").await;
    let conn = connection(&app, tenant, &schema).await;
    assert_eq!(how_it_ran(&conn).await, (0, "pg_catalog".into()));
    conn.write(async |tx| -> Result<(), recept::pools::DbError> {
        tx.batch_execute("SET application_name = 'leaked'").await?;
        Ok(())
    })
    .await
    .unwrap();
    caught(&conn).await;
    drop(conn);
    // Its replacement has the pool's settings.
    let fresh = connection(&app, tenant, &schema).await;
    assert_eq!(how_it_ran(&fresh).await, (0, "pg_catalog".into()));
}

#[tokio::test]
async fn a_read_running_alone_checks_the_settings_only_after_other_work() {
    let (app, tenant, schema) = connections(1, "checkonce").await;
    // Checked once, the connection is known unchanged while only marked
    // reads run on it, from one request to the next.
    let conn = connection(&app, tenant, &schema).await;
    how_it_ran(&conn).await;
    assert!(!conn.checks_settings_next());
    drop(conn);
    let conn = connection(&app, tenant, &schema).await;
    assert!(!conn.checks_settings_next());
    assert_eq!(how_it_ran(&conn).await, (0, "pg_catalog".into()));
    assert!(!conn.checks_settings_next());
    // Anything else may change the session: a read in a transaction, a
    // write, a bare use of the connection.
    conn.read("SELECT 1", &[]).await.unwrap();
    assert!(conn.checks_settings_next());
    how_it_ran(&conn).await;
    conn.write(async |_| -> Result<(), recept::pools::DbError> { Ok(()) })
        .await
        .unwrap();
    assert!(conn.checks_settings_next());
    how_it_ran(&conn).await;
    drop(conn);
    let bare = app
        .app_state
        .pools
        .get("main", recept::pools::Role::Clinic)
        .await
        .unwrap();
    drop(bare);
    let conn = connection(&app, tenant, &schema).await;
    assert!(conn.checks_settings_next());
    how_it_ran(&conn).await;

    // A marked read that changes the session is caught by the next.
    let leak = "SELECT set_config('application_name', 'leaked', false), \
                (SELECT count(*) FROM \"{tenant}\".patients)";
    conn.read(leak, &[]).await.unwrap();
    assert!(conn.checks_settings_next());
    caught(&conn).await;
    drop(conn);
    // Its replacement is checked before its first read alone.
    let fresh = connection(&app, tenant, &schema).await;
    assert!(fresh.checks_settings_next());
    assert_eq!(how_it_ran(&fresh).await, (0, "pg_catalog".into()));
}

#[tokio::test]
async fn a_connection_keeps_at_most_its_share_of_prepared_statements() {
    let app = one_worker(1, |s| {
        s.clinic.connection_max_statements = 16;
    })
    .await;
    let (tenant, schema) = new_tenant(&app, "statements").await;
    let conn = connection(&app, tenant, &schema).await;
    for i in 0..40 {
        let rows = conn.read(&format!("SELECT {i}::int"), &[]).await.unwrap();
        assert_eq!(rows[0].get::<_, i32>(0), i);
        let listed = prepared(&conn).await;
        // The bound, plus the statements of the flight under way.
        assert!(
            listed.len() <= 16 + 4,
            "{i}: {} statements: {listed:?}",
            listed.len()
        );
    }
    // The connection is the same one throughout, and still serves.
    let listed = prepared(&conn).await;
    assert!(
        !listed.iter().any(|s| s.ends_with("SELECT 0::int")),
        "{listed:?}"
    );
}

/// When each of `conn`'s prepared statements that names `schema` was
/// prepared, as PostgreSQL lists them.
async fn prepared_at(conn: &recept::pools::TenantConn, schema: &str) -> Vec<String> {
    conn.read(
        "SELECT prepare_time::text FROM pg_prepared_statements \
         WHERE strpos(statement, $1) > 0 ORDER BY prepare_time",
        &[&format!("\"{schema}\"")],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn a_connection_full_of_own_statements_keeps_them_and_gives_the_next_tenants_shared_ones() {
    // One connection, every tenant's home; half of its 16 statements for
    // the tenants' own.
    let app = one_worker(1, |s| {
        s.clinic.connection_max_statements = 16;
    })
    .await;
    let mut tenants = Vec::new();
    for i in 0..12 {
        tenants.push(new_tenant(&app, &format!("full_{i}")).await);
    }
    let mut first_prepared = None;
    for round in 0..3 {
        for (i, (tenant, schema)) in tenants.iter().enumerate() {
            let conn = connection(&app, *tenant, schema).await;
            // The first eight run alone on their own statements, the
            // others in a transaction on the shared one: every round, so
            // the connection never forgot the first eight's to make room.
            let path = if i < 8 {
                "pg_catalog".to_string()
            } else {
                format!("\"{schema}\"")
            };
            assert_eq!(
                how_it_ran(&conn).await,
                (0, path),
                "round {round}, tenant {i}"
            );
        }
        // The first tenant's own statement is the one prepared in the
        // first round.
        let conn = connection(&app, tenants[0].0, &tenants[0].1).await;
        let at = prepared_at(&conn, &tenants[0].1).await;
        assert_eq!(at.len(), 1, "{at:?}");
        assert_eq!(*first_prepared.get_or_insert_with(|| at.clone()), at);
    }
    // Those reads are counted where an operator sizes the bound: four
    // tenants a round, and the listings above.
    let pool = clinic_pool(&app).await;
    let full = pool["affinity"]["own_statements_full"].as_u64().unwrap();
    assert!(full >= 3 * 4, "{pool}");
}
