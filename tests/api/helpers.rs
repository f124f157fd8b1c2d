//! Test helpers: one private PostgreSQL per test run, a fresh database and
//! a real recept server on random ports per test.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use recept::config::{ClusterSettings, Settings};
use recept::dev::{ClusterSpec, PgBinaries, PrivatePostgres};
use recept::startup::Application;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

/// A shared cluster: reachable for the whole run, stopped at exit.
struct SharedCluster {
    port: u16,
    password: String,
}

/// Two shared clusters: most tests use the first; tests of tenants on
/// several clusters use the second as a separate PostgreSQL server.
static CLUSTERS: [OnceLock<SharedCluster>; 2] = [OnceLock::new(), OnceLock::new()];
/// Stopped, and their data removed, at exit by `stop_shared_clusters`.
static RUNNING: Mutex<Vec<(PrivatePostgres, PathBuf)>> = Mutex::new(Vec::new());
static AT_EXIT: std::sync::Once = std::sync::Once::new();

/// A data directory the unprivileged `postgres` user can use when the tests
/// run as root.
pub fn cluster_dir(prefix: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(std::env::temp_dir())
        .expect("temporary directory")
        .keep();
    if nix::unistd::geteuid().is_root() {
        if let Ok(Some(user)) = nix::unistd::User::from_name("postgres") {
            nix::unistd::chown(&dir, Some(user.uid), Some(user.gid)).expect("chown");
        }
    }
    dir
}

pub fn spec(dir: &std::path::Path, password: &str) -> ClusterSpec {
    ClusterSpec {
        data_dir: dir.join("data"),
        password: password.to_string(),
        log_file: dir.join("postgres.log"),
        settings: vec![
            ("max_connections".into(), "300".into()),
            ("fsync".into(), "off".into()),
            ("synchronous_commit".into(), "off".into()),
            ("full_page_writes".into(), "off".into()),
        ],
        port: None,
    }
}

fn shared_cluster(index: usize) -> &'static SharedCluster {
    CLUSTERS[index].get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        // The cluster is started by a thread that lives until the process
        // exits; the kernel stops PostgreSQL when that thread goes.
        std::thread::spawn(move || {
            let dir = cluster_dir("recept-test-");
            let password = Uuid::new_v4().simple().to_string();
            let bins = PgBinaries::find().expect("PostgreSQL server binaries");
            let pg = PrivatePostgres::start(&bins, &spec(&dir, &password)).expect("test cluster");
            tx.send((pg.port(), password)).unwrap();
            keep_until_exit(pg, dir);
            loop {
                std::thread::park();
            }
        });
        let (port, password) = rx.recv().expect("the test cluster started");
        SharedCluster { port, password }
    })
}

/// Keeps a cluster started by a thread that lives until the process exits,
/// and stops it (removing `dir`) at exit.
pub fn keep_until_exit(pg: PrivatePostgres, dir: PathBuf) {
    RUNNING.lock().unwrap().push((pg, dir));
    // SAFETY: registers a plain function to run at process exit.
    AT_EXIT.call_once(|| unsafe {
        nix::libc::atexit(stop_shared_clusters);
    });
}

extern "C" fn stop_shared_clusters() {
    let running = RUNNING
        .lock()
        .map(|mut running| std::mem::take(&mut *running))
        .unwrap_or_default();
    for (pg, dir) in running {
        let _ = pg.stop();
        let _ = std::fs::remove_dir_all(dir);
    }
}

pub fn url(port: u16, password: &str, database: &str) -> String {
    format!("postgres://recept:{password}@127.0.0.1:{port}/{database}")
}

/// A new, empty database in the first shared cluster.
pub async fn fresh_database() -> String {
    fresh_database_in(0).await
}

/// A new, empty database in shared cluster `index` (0 or 1).
async fn fresh_database_in(index: usize) -> String {
    let cluster = shared_cluster(index);
    let name = format!("test_{}", Uuid::new_v4().simple());
    let (client, connection) = tokio_postgres::connect(
        &url(cluster.port, &cluster.password, "postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect to the test cluster");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    url(cluster.port, &cluster.password, &name)
}

/// Settings for a test server on random loopback ports against `db_url`.
pub fn test_settings(db_url: &str) -> Settings {
    let mut settings = Settings::default();
    settings.server.clinic_listen = "127.0.0.1:0".into();
    settings.server.admin_listen = "127.0.0.1:0".into();
    settings.server.workers = 2;
    settings.clinic.pool_size = 4;
    // Tests fire bursts of concurrent requests at one tenant on purpose;
    // the budget tests lower these again to exercise admission.
    settings.clinic.tenant_max_in_flight = 256;
    settings.clinic.max_waiting = 256;
    settings.clinic.queue_timeout_ms = 5_000;
    settings.clinic.standing_queue_ms = 5_000;
    settings.admin.pool_size = 2;
    settings.admin.token = format!("admin-{}", Uuid::new_v4().simple());
    settings.clinic.key_secret = format!("keys-{}", Uuid::new_v4().simple());
    settings.clusters.insert(
        "main".into(),
        ClusterSettings {
            url: db_url.to_string(),
            replica_url: None,
        },
    );
    settings
}

/// A running recept server and an HTTP client for it.
pub struct TestApp {
    pub clinic: String,
    pub admin: String,
    pub admin_token: String,
    /// What this server tags clinic keys under.
    pub key_secret: String,
    pub db_url: String,
    pub http: reqwest::Client,
    pub app_state: actix_web::web::Data<recept::http::AppState>,
}

/// A server on its own fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server on its own fresh database, with settings adjusted by `tweak`.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let db_url = fresh_database().await;
    let mut settings = test_settings(&db_url);
    tweak(&mut settings);
    spawn_app_on(settings).await
}

pub async fn spawn_app_on(settings: Settings) -> TestApp {
    // Server logs only when asked for (`RUST_LOG=info cargo test`).
    if std::env::var_os("RUST_LOG").is_some() {
        std::mem::forget(recept::telemetry::init(recept::config::LogFormat::Pretty));
    }
    let admin_token = settings.admin.token.clone();
    let key_secret = settings.clinic.key_secret.clone();
    let db_url = settings.clusters["main"].url.clone();
    let app = Application::build(settings).await.expect("the app starts");
    let clinic = format!("http://127.0.0.1:{}", app.clinic_port());
    let admin = format!("http://127.0.0.1:{}", app.admin_port());
    let app_state = app.state();
    tokio::spawn(app.run_until(std::future::pending()));
    TestApp {
        clinic,
        admin,
        admin_token,
        key_secret,
        db_url,
        http: reqwest::Client::new(),
        app_state,
    }
}

/// A slug no other test uses.
pub fn unique_slug(prefix: &str) -> String {
    format!("{prefix}_{}", &Uuid::new_v4().simple().to_string()[..12])
}

impl TestApp {
    pub fn admin_request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(&self.admin_token)
    }

    pub fn clinic_request(&self, method: Method, path: &str, key: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.clinic))
            .bearer_auth(key)
    }

    /// Creates a tenant through the admin API and returns its JSON.
    pub async fn create_tenant(&self, slug: &str, name: &str) -> Value {
        let response = self
            .admin_request(Method::POST, "/admin/tenants")
            .json(&json!({"slug": slug, "name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "creating {slug}");
        response.json().await.unwrap()
    }

    /// Issues a clinic key for `slug` and returns (id, key).
    pub async fn issue_key(&self, slug: &str) -> (String, String) {
        let response = self
            .admin_request(Method::POST, &format!("/admin/tenants/{slug}/api-keys"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        (
            body["id"].as_str().unwrap().to_string(),
            body["key"].as_str().unwrap().to_string(),
        )
    }

    /// A tenant with a key: (slug, key).
    pub async fn tenant_with_key(&self, prefix: &str) -> (String, String) {
        let slug = unique_slug(prefix);
        self.create_tenant(&slug, &format!("Clinic {slug}")).await;
        let (_, key) = self.issue_key(&slug).await;
        (slug, key)
    }

    /// The registry id of tenant `slug`.
    pub async fn tenant_id(&self, slug: &str) -> Uuid {
        self.db()
            .await
            .query_one("SELECT id FROM recept.tenants WHERE slug = $1", &[&slug])
            .await
            .unwrap()
            .get(0)
    }

    /// A direct connection to the app's database, for inspecting it.
    pub async fn db(&self) -> tokio_postgres::Client {
        connect(&self.db_url).await
    }
}

/// A direct connection to a test database, for inspecting it.
pub async fn connect(db_url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(db_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Asserts a problem+json answer with `status` and returns its body.
pub async fn assert_problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(body["type"]
        .as_str()
        .unwrap()
        .starts_with("urn:recept:problem:"));
    body
}

/// A sample release shipped in `tenants/master/`.
pub fn sample_release(version: &str) -> String {
    let path = format!(
        "{}/tenants/master/{version}.csv",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).expect("sample release")
}

impl TestApp {
    /// Imports a release CSV through the admin API.
    pub async fn import_release(&self, version: &str, csv: &str) -> reqwest::Response {
        self.admin_request(
            Method::POST,
            &format!("/admin/master/releases?version={version}"),
        )
        .header("content-type", "text/csv")
        .body(csv.to_string())
        .send()
        .await
        .unwrap()
    }

    /// A tenant on master release `release`, with a key: (slug, key).
    pub async fn tenant_on_release(&self, prefix: &str, release: &str) -> (String, String) {
        let slug = unique_slug(prefix);
        let response = self
            .admin_request(Method::POST, "/admin/tenants")
            .json(
                &json!({"slug": slug, "name": format!("Clinic {slug}"), "master_release": release}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let (_, key) = self.issue_key(&slug).await;
        (slug, key)
    }

    /// POSTs `body` to a clinic path and returns the answer's JSON,
    /// asserting a success (naming the answer otherwise).
    pub async fn clinic_post(&self, key: &str, path: &str, body: Value) -> Value {
        let response = self
            .clinic_request(Method::POST, path, key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "POST {path}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// GET a clinic path and return its JSON, asserting 200.
    pub async fn clinic_json(&self, key: &str, path: &str) -> Value {
        let response = self
            .clinic_request(Method::GET, path, key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }
}

impl TestApp {
    /// A patient of the clinic of `key`, insured at 30% since 2020: its id.
    pub async fn insured_patient(&self, key: &str, name: &str) -> String {
        let response = self
            .clinic_request(Method::POST, "/v1/patients", key)
            .json(
                &json!({"name": name, "birth_date": "1970-01-01", "sex": "male",
                          "insurances": [{"insurer_number": "06132013", "copay_rate": 30,
                                          "valid_from": "2020-01-01"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_string()
    }

    /// GET an admin path and return its JSON, asserting 200.
    pub async fn admin_json(&self, path: &str) -> Value {
        let response = self.admin_request(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }

    /// Locks `table` of tenant `slug` against everything until the returned
    /// connection commits (`COMMIT`) or is dropped: requests touching it
    /// wait, as behind a slow transaction.
    pub async fn lock_table(&self, slug: &str, table: &str) -> tokio_postgres::Client {
        let db = self.db().await;
        db.batch_execute(&format!(
            "BEGIN; LOCK TABLE \"t_{slug}\".\"{table}\" IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .unwrap();
        db
    }
}

/// A server whose tenants may live on two clusters, `main` (which holds
/// the control schema) and `second`: the server and both databases' URLs.
pub async fn spawn_app_on_two_clusters(
    tweak: impl FnOnce(&mut Settings),
) -> (TestApp, String, String) {
    let main = fresh_database().await;
    let second = fresh_database().await;
    let mut settings = test_settings(&main);
    settings.clusters.insert(
        "second".into(),
        ClusterSettings {
            url: second.clone(),
            replica_url: None,
        },
    );
    tweak(&mut settings);
    (spawn_app_on(settings).await, main, second)
}

/// Rolls every tenant out to `version`, `concurrency` at a time, as an
/// operator would.
pub async fn rollout_everyone(
    pools: &recept::pools::Pools,
    version: &str,
    concurrency: usize,
) -> recept::master::RolloutReport {
    let operator = recept::audit::Actor::operator();
    let everyone = recept::master::RolloutTarget::All;
    recept::master::rollout(pools, version, &everyone, concurrency, &operator, |_| {})
        .await
        .unwrap()
}
