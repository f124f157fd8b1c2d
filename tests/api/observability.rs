//! `/metrics` under real traffic, the README's list of series, and the
//! dashboard and Prometheus configuration shipped in docker-compose.yml.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use recept::migrate::{run, MigrationSet, RunOptions};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use yaml_rust2::YamlLoader;

use crate::helpers::{sample_release, spawn_app, spawn_app_with, TestApp};

/// One scrape: sample name → (labels as printed, value).
pub(crate) struct Scrape {
    samples: BTreeMap<String, Vec<(String, f64)>>,
    /// Families by `# TYPE` line: name → type.
    families: BTreeMap<String, String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
        let mut families = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("a type line");
                families.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let value: f64 = value.parse().expect("a number");
            samples
                .entry(name.to_string())
                .or_default()
                .push((labels.to_string(), value));
        }
        Scrape { samples, families }
    }

    /// The value of `name` whose labels include every one of `labels`.
    pub(crate) fn value(&self, name: &str, labels: &[&str]) -> f64 {
        let found: Vec<f64> = self
            .samples
            .get(name)
            .unwrap_or_else(|| panic!("no series {name}"))
            .iter()
            .filter(|(l, _)| labels.iter().all(|want| l.contains(want)))
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        found[0]
    }

    /// Whether a series of this name (or a histogram's parts) has samples.
    fn has_samples(&self, name: &str) -> bool {
        ["", "_bucket", "_count", "_sum"]
            .iter()
            .any(|suffix| self.samples.contains_key(&format!("{name}{suffix}")))
    }

    /// The sample names a family's samples carry (counters gain `_total`).
    fn exported_names(&self) -> BTreeSet<String> {
        self.families
            .iter()
            .map(|(name, kind)| match kind.as_str() {
                "counter" => format!("{name}_total"),
                _ => name.clone(),
            })
            .collect()
    }
}

pub(crate) async fn scrape(app: &TestApp) -> Scrape {
    let response = app
        .http
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    Scrape::parse(&response.text().await.unwrap())
}

/// The series the README documents: first column of its metrics table.
fn documented_series() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let names: BTreeSet<String> = readme
        .lines()
        .filter_map(|line| line.strip_prefix("| `recept_"))
        .map(|rest| format!("recept_{}", rest.split('`').next().unwrap()))
        .collect();
    assert!(names.len() > 20, "the README lists the metrics: {names:?}");
    names
}

async fn post(app: &TestApp, key: &str, path: &str, body: Value) -> Value {
    let response = app
        .clinic_request(Method::POST, path, key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "POST {path}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn every_documented_series_is_exported_with_plausible_values_under_traffic() {
    let app = spawn_app_with(|s| {
        s.clinic.pool_size = 2;
        s.server.workers = 1;
        s.clinic.max_waiting = 1;
        s.clinic.queue_timeout_ms = 300;
        s.clinic.tenant_max_in_flight = 2;
        s.clinic.lock_timeout_ms = 30_000;
        s.clinic.statement_timeout_ms = 30_000;
    })
    .await;
    for version in ["2026-04", "2026-06"] {
        app.import_release(version, &sample_release(version)).await;
    }
    let (slow, slow_key) = app.tenant_on_release("slow", "2026-04").await;
    let (other, other_key) = app.tenant_on_release("other", "2026-04").await;

    // Two visits pricing the same code: the second is priced from the cache.
    let patient = post(&app, &slow_key, "/v1/patients", json!({"name": "中村 明", "birth_date": "1980-08-08", "sex": "male",
        "insurances": [{"insurer_number": "06132013", "copay_rate": 30, "valid_from": "2020-01-01"}]})).await;
    for day in ["2026-05-01", "2026-05-02"] {
        post(
            &app,
            &slow_key,
            "/v1/encounters",
            json!({"patient_id": patient["id"], "date": day,
            "items": [{"code": "112007410", "quantity": 1}]}),
        )
        .await;
    }

    // Its key is cached before the pool fills (key lookups use it too).
    app.clinic_json(&other_key, "/v1/tenant").await;

    // Two slow requests: the tenant's patients are locked, so both hold a
    // connection (the whole clinic pool) until the lock goes.
    let lock = app.lock_table(&slow, "patients").await;
    let slow_requests: Vec<_> = (0..2)
        .map(|_| {
            let request = app.clinic_request(
                Method::GET,
                &format!("/v1/patients/{}", patient["id"].as_str().unwrap()),
                &slow_key,
            );
            tokio::spawn(request.send())
        })
        .collect();
    let mut during = scrape(&app).await;
    for _ in 0..100 {
        if during.value("recept_pool_in_use", &[r#"role="recept-clinic""#]) == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        during = scrape(&app).await;
    }
    assert_eq!(
        during.value("recept_pool_in_use", &[r#"role="recept-clinic""#]),
        2.0
    );
    assert_eq!(
        during.value("recept_pool_available", &[r#"role="recept-clinic""#]),
        0.0
    );

    // Forced overload: the slow tenant is over its share (429), the other
    // finds no connection (503, at once or after the deadline).
    let over_share = app
        .clinic_request(Method::GET, "/v1/tenant", &slow_key)
        .send()
        .await
        .unwrap();
    assert_eq!(over_share.status(), StatusCode::TOO_MANY_REQUESTS);
    let refused = futures::future::join_all((0..3).map(|_| {
        app.clinic_request(Method::GET, "/v1/tenant", &other_key)
            .send()
    }))
    .await;
    for response in refused {
        assert_eq!(response.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    lock.batch_execute("COMMIT").await.unwrap();
    for request in slow_requests {
        assert_eq!(request.await.unwrap().unwrap().status(), StatusCode::OK);
    }

    // A migration run and a rollout, so their progress is on record.
    let pools = app.app_state.pools.clone();
    let set =
        MigrationSet::with_extra(&[("V100__observed", "CREATE TABLE observed (x int)")]).unwrap();
    let options = RunOptions {
        concurrency: 1,
        ..RunOptions::default()
    };
    assert_eq!(
        run(&pools, &set, &options, |_| {}).await.unwrap().migrated,
        2
    );
    crate::helpers::rollout_everyone(&pools, "2026-06", 1).await;

    let after = scrape(&app).await;
    for name in documented_series() {
        assert!(
            after.has_samples(&name),
            "documented {name} is not exported"
        );
    }
    for name in after.exported_names() {
        assert!(
            documented_series().contains(&name),
            "{name} is exported but not documented in the README"
        );
    }
    let clinic = r#"role="recept-clinic""#;
    let value = |name: &str, labels: &[&str]| after.value(name, labels);
    assert_eq!(
        value(
            "recept_http_requests_total",
            &[r#"route="/v1/patients/{id}""#, r#"status="200""#]
        ),
        2.0
    );
    assert_eq!(value("recept_pool_max_size", &[clinic]), 2.0);
    assert_eq!(value("recept_pool_in_use", &[clinic]), 0.0);
    assert!(value("recept_pool_connections_opened_total", &[clinic]) >= 2.0);
    assert_eq!(
        value("recept_pool_connections_broken_total", &[clinic]),
        0.0
    );
    let deadline = value(
        "recept_admission_rejections_total",
        &[r#"reason="deadline""#],
    );
    let queue_full = value(
        "recept_admission_rejections_total",
        &[r#"reason="queue_full""#],
    );
    // Every 503 the server answered was an admission refusal, by the route
    // or before routing once the full queue made the pool overloaded (the
    // HTTP client may have sent a request again on a fresh connection).
    let unavailable = value(
        "recept_http_requests_total",
        &[r#"route="/v1/tenant""#, r#"status="503""#],
    ) + value(
        "recept_http_requests_total",
        &[r#"route="(refused: overloaded)""#, r#"status="503""#],
    );
    assert!(unavailable >= 3.0);
    assert_eq!(deadline + queue_full, unavailable);
    assert!(deadline >= 1.0, "one request waited for the deadline");
    assert!(value("recept_pool_timeouts_total", &[clinic]) >= deadline);
    assert_eq!(
        value(
            "recept_admission_rejections_total",
            &[r#"reason="tenant_share""#]
        ),
        1.0
    );
    // Six requests got a connection, at least one waited out the deadline.
    assert!(value("recept_clinic_connection_wait_seconds_count", &[]) >= 7.0);
    assert!(value("recept_master_cache_misses_total", &[]) >= 1.0);
    assert!(value("recept_master_cache_hits_total", &[]) >= 1.0);
    assert!(value("recept_master_cache_entries", &[]) >= 1.0);
    assert!(value("recept_master_cache_bytes", &[]) > 0.0);
    assert_eq!(
        value("recept_cache_budget_bytes", &[]),
        64.0 * 1024.0 * 1024.0
    );
    // Ten clinic requests, less those refused before their key was read.
    let shed = value(
        "recept_http_requests_total",
        &[r#"route="(refused: overloaded)""#],
    );
    assert!(value("recept_key_lookups_total", &[]) >= 10.0 - shed);
    assert_eq!(value("recept_key_cache_entries", &[]), 2.0);
    // Each key is read once per `clinic.key_cache_ttl_ms`.
    assert!(value("recept_key_cache_misses_total", &[]) >= 2.0);
    assert!(value("recept_process_resident_bytes", &[]) > 4.0 * 1024.0 * 1024.0);
    assert_eq!(
        value(
            "recept_tenant_requests_total",
            &[&format!(r#"tenant="{slow}""#)]
        ),
        6.0
    );
    // Requests refused before their key was read belong to no tenant.
    assert_eq!(
        value(
            "recept_tenant_refused_total",
            &[&format!(r#"tenant="{other}""#)]
        ),
        3.0 - shed
    );
    assert!(
        value(
            "recept_tenant_request_seconds_total",
            &[&format!(r#"tenant="{slow}""#)]
        ) > 0.0
    );
    assert_eq!(value("recept_control_reachable", &[]), 1.0);
    assert_eq!(
        value("recept_tenant_schema_target", &[]),
        f64::from(recept::migrate::latest_tenant_version())
    );
    assert_eq!(
        value(
            "recept_tenants_by_schema_version",
            &[r#"schema_version="100""#]
        ),
        2.0
    );
    assert_eq!(
        value("recept_migration_run_tenants", &[r#"state="migrated""#]),
        2.0
    );
    assert_eq!(
        value("recept_migration_run_tenants", &[r#"state="pending""#]),
        0.0
    );
    assert_eq!(value("recept_migration_run_active", &[]), 0.0);
    assert_eq!(
        value(
            "recept_rollout_tenants",
            &[r#"release="2026-06""#, r#"state="done""#]
        ),
        2.0
    );
    assert_eq!(value("recept_rollout_active", &[]), 0.0);
}

#[tokio::test]
async fn per_tenant_series_are_kept_for_the_busiest_tenants_only() {
    let app = spawn_app_with(|s| s.server.tenant_metrics_top = 2).await;
    let mut slugs = Vec::new();
    for (prefix, requests) in [("quiet", 1), ("busy", 5), ("busier", 9)] {
        let (slug, key) = app.tenant_with_key(prefix).await;
        for _ in 0..requests {
            app.clinic_json(&key, "/v1/tenant").await;
        }
        slugs.push(slug);
    }

    let scrape = scrape(&app).await;

    let tenants: BTreeMap<String, f64> = scrape.samples["recept_tenant_requests_total"]
        .iter()
        .map(|(labels, v)| (labels.clone(), *v))
        .collect();
    assert_eq!(
        tenants,
        BTreeMap::from([
            (format!(r#"tenant="{}""#, slugs[1]), 5.0),
            (format!(r#"tenant="{}""#, slugs[2]), 9.0),
        ])
    );
}

/// The configuration inside docker-compose.yml, by `configs` name.
fn compose_config(compose: &yaml_rust2::Yaml, name: &str) -> String {
    compose["configs"][name]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("docker-compose.yml has configs.{name}.content"))
        .to_string()
}

/// Every `recept_…` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("recept_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

fn expressions(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => found.push(expr.clone()),
                    _ => expressions(value, found),
                }
            }
        }
        Value::Array(values) => values.iter().for_each(|v| expressions(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn the_dashboard_and_prometheus_configuration_use_only_what_recept_exports() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
        .unwrap();
    let compose = &YamlLoader::load_from_str(&text).expect("docker-compose.yml parses")[0];
    for service in ["postgres", "recept", "prometheus", "grafana"] {
        assert!(
            !compose["services"][service].is_badvalue(),
            "service {service}"
        );
    }
    assert!(
        compose["services"]["recept"]["build"]["dockerfile_inline"]
            .as_str()
            .is_some_and(|d| d.contains("cargo build --release")),
        "recept is built from the repository"
    );
    let prometheus = compose_config(compose, "prometheus");
    let prometheus_yaml =
        &YamlLoader::load_from_str(&prometheus).expect("prometheus.yml parses")[0];
    let targets: Vec<&str> = prometheus_yaml["scrape_configs"]
        .as_vec()
        .unwrap()
        .iter()
        .flat_map(|job| job["static_configs"][0]["targets"].as_vec().unwrap())
        .filter_map(|t| t.as_str())
        .collect();
    assert!(targets.contains(&"recept:8081"), "{targets:?}");
    let dashboard: Value = serde_json::from_str(&compose_config(compose, "grafana-dashboard"))
        .expect("dashboard JSON");
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    assert!(exprs.len() >= 8, "{exprs:?}");

    // A server that has served a request exports every family.
    let app = spawn_app().await;
    let (_, key) = app.tenant_with_key("dash").await;
    app.clinic_json(&key, "/v1/tenant").await;
    let exported = scrape(&app).await;
    let names: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(names.len() >= 6, "{names:?}");
    for name in &names {
        assert!(
            exported.has_samples(name),
            "the dashboard queries {name}, which recept does not export"
        );
    }

    // promtool, where installed (Debian package `prometheus`).
    if let Ok(promtool) = which("promtool") {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, &prometheus).unwrap();
        let checked = std::process::Command::new(promtool)
            .args(["check", "config", "--syntax-only"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            checked.status.success(),
            "promtool: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .ok_or(())
}
