//! The front desk: a realistic clinic mix driven through recept's public
//! API only, against a recept this run starts or a running one (`recept
//! dev`, or any configured recept: `--clinic`, `--admin`, `--token`).
//!
//! Set-up provisions tenants and keys through the admin API, patients with
//! insurances and months of past encounters through the clinic API, and
//! finds the codes to bill in each clinic's own master copy. Traffic is open
//! loop (requests sent on schedule and timed from it, so overload is
//! measured without coordinated omission) at a rate that may change over
//! the run, or closed loop with `--clients`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};

use crate::out;
use crate::stack::Stack;
use crate::stats::Latencies;

#[derive(Args, Clone, Debug)]
pub struct Target {
    /// A running recept's clinic URL (e.g. what `recept dev` prints); without
    /// it the scenario starts its own PostgreSQL and recept.
    #[arg(long, requires_all = ["admin", "token"])]
    pub clinic: Option<String>,
    /// That recept's admin URL.
    #[arg(long)]
    pub admin: Option<String>,
    /// That recept's admin token.
    #[arg(long)]
    pub token: Option<String>,
    /// That recept's database URL, to sample its backends (optional).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Clinics (tenants) to provision for the run.
    #[arg(long, default_value_t = 10)]
    pub tenants: usize,
    /// Patients per clinic.
    #[arg(long, default_value_t = 20)]
    pub patients: usize,
    /// Months of past encounters per patient (one visit a month).
    #[arg(long, default_value_t = 3)]
    pub months: usize,
    /// Closed loop with this many clients instead of the open-loop rate.
    #[arg(long)]
    pub clients: Option<usize>,
}

/// One clinic's key and what the mix works on.
struct Clinic {
    key: String,
    patients: Vec<(String, String)>,
    codes: Vec<String>,
    diseases: Vec<String>,
    search_terms: Vec<String>,
    /// Encounters with nothing paid yet: (id, charge).
    unpaid: Mutex<Vec<(String, i64)>>,
}

pub struct Desk {
    http: reqwest::Client,
    pub clinic_url: String,
    admin_url: String,
    token: String,
    clinics: Vec<Clinic>,
    slugs: Vec<String>,
    /// The stack this run started, if any (kept alive for the run).
    _stack: Option<Stack>,
}

const SURNAMES: [(&str, &str); 8] = [
    ("佐藤", "サトウ"),
    ("鈴木", "スズキ"),
    ("高橋", "タカハシ"),
    ("田中", "タナカ"),
    ("伊藤", "イトウ"),
    ("渡辺", "ワタナベ"),
    ("山本", "ヤマモト"),
    ("中村", "ナカムラ"),
];
const GIVEN: [(&str, &str); 6] = [
    ("太郎", "タロウ"),
    ("花子", "ハナコ"),
    ("一郎", "イチロウ"),
    ("美咲", "ミサキ"),
    ("健", "ケン"),
    ("由美", "ユミ"),
];

/// A small deterministic generator, so runs are repeatable.
fn mix(n: u64) -> u64 {
    let mut x = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Desk {
    /// Provisions the clinics of a run on `target` (or on a stack of its own).
    pub async fn set_up(target: &Target) -> anyhow::Result<Desk> {
        let (stack, clinic_url, admin_url, token, database_url) = match &target.clinic {
            Some(clinic) => (
                None,
                clinic.trim_end_matches('/').to_string(),
                target
                    .admin
                    .clone()
                    .unwrap_or_default()
                    .trim_end_matches('/')
                    .to_string(),
                target.token.clone().unwrap_or_default(),
                target.database_url.clone(),
            ),
            None => {
                let stack = Stack::start(|s| s.server.workers = 2).await?;
                let urls = (
                    stack.clinic.clone(),
                    stack.admin.clone(),
                    stack.admin_token.clone(),
                    Some(stack.database_url.clone()),
                );
                (Some(stack), urls.0, urls.1, urls.2, urls.3)
            }
        };
        // A stack of this run's own samples its backends itself.
        if let (None, Some(url)) = (&stack, &database_url) {
            crate::report::sample_backends(url);
        }
        let http = reqwest::Client::new();
        let admin = |method: reqwest::Method, path: &str| {
            http.request(method, format!("{admin_url}{path}"))
                .bearer_auth(&token)
                .header("x-admin-actor", "recept-load")
        };
        let releases: Value = admin(reqwest::Method::GET, "/admin/master/releases")
            .send()
            .await?
            .error_for_status()
            .context("listing master releases (is the admin token right?)")?
            .json()
            .await?;
        if releases["releases"].as_array().is_none_or(|r| r.is_empty()) {
            let csv = std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tenants/master/2026-04.csv"
            ))?;
            admin(
                reqwest::Method::POST,
                "/admin/master/releases?version=2026-04",
            )
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await?
            .error_for_status()?;
        }
        let run = format!(
            "{:06x}",
            mix(std::process::id() as u64 ^ chrono::Utc::now().timestamp() as u64) & 0xff_ffff
        );
        let mut clinics = Vec::new();
        let mut slugs = Vec::new();
        for t in 0..target.tenants {
            let slug = format!("load_{run}_{t:04}");
            admin(reqwest::Method::POST, "/admin/tenants")
                .json(&json!({"slug": slug, "name": format!("Load clinic {t}")}))
                .send()
                .await?
                .error_for_status()
                .with_context(|| format!("creating tenant {slug}"))?;
            let issued: Value = admin(
                reqwest::Method::POST,
                &format!("/admin/tenants/{slug}/api-keys"),
            )
            .json(&json!({"label": "recept-load"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
            let key = issued["key"].as_str().context("no key issued")?.to_string();
            slugs.push(slug);
            clinics.push(provision_clinic(&http, &clinic_url, key, t, target).await?);
        }
        Ok(Desk {
            http,
            clinic_url,
            admin_url,
            token,
            clinics,
            slugs,
            _stack: stack,
        })
    }

    /// Soft-deletes the run's tenants on a recept this run did not start.
    pub async fn tear_down(self) {
        if self._stack.is_some() {
            return;
        }
        for slug in &self.slugs {
            let _ = self
                .http
                .delete(format!("{}/admin/tenants/{slug}", self.admin_url))
                .bearer_auth(&self.token)
                .header("x-admin-actor", "recept-load")
                .send()
                .await;
        }
    }

    /// The `n`th request of the mix: its route label and the request.
    fn request(&self, n: u64) -> (&'static str, reqwest::RequestBuilder) {
        let r = mix(n);
        let clinic = &self.clinics[(r % self.clinics.len() as u64) as usize];
        let pick =
            |list: &[String], salt: u64| list[(mix(n ^ salt) % list.len() as u64) as usize].clone();
        let (patient, _) = &clinic.patients[((r >> 8) % clinic.patients.len() as u64) as usize];
        let base = &self.clinic_url;
        let get = |url: String| self.http.get(url).bearer_auth(&clinic.key);
        let post = |url: String| self.http.post(url).bearer_auth(&clinic.key);
        let weight = (r >> 20) % 1000;
        match weight {
            0..195 => (
                "GET /v1/patients?q",
                get(format!("{base}/v1/patients")).query(&[("q", pick(&clinic.search_terms, 1))]),
            ),
            195..395 => (
                "GET /v1/patients/{id}",
                get(format!("{base}/v1/patients/{patient}")),
            ),
            395..495 => (
                "GET /v1/patients/{id}/balance",
                get(format!("{base}/v1/patients/{patient}/balance")),
            ),
            495..595 => (
                "GET /v1/encounters?patient_id",
                get(format!("{base}/v1/encounters")).query(&[("patient_id", patient)]),
            ),
            595..795 => {
                let lines = 3 + (mix(n ^ 2) % 18) as usize;
                let items: Vec<Value> = (0..lines)
                    .map(|i| json!({"code": pick(&clinic.codes, 10 + i as u64), "quantity": 1 + mix(n ^ (30 + i as u64)) % 3}))
                    .collect();
                let day = 1 + mix(n ^ 3) % 28;
                (
                    "POST /v1/encounters",
                    post(format!("{base}/v1/encounters"))
                        .header("idempotency-key", format!("load-{n}"))
                        .json(
                            &json!({"patient_id": patient, "date": format!("2026-09-{day:02}"),
                                      "diagnoses": [pick(&clinic.diseases, 4)], "items": items}),
                        ),
                )
            }
            795..895 => {
                let unpaid = clinic
                    .unpaid
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pop();
                match unpaid {
                    Some((encounter, charge)) => (
                        "POST /v1/payments",
                        post(format!("{base}/v1/payments"))
                            .header("idempotency-key", format!("load-pay-{n}"))
                            .json(&json!({"encounter_id": encounter, "amount_yen": charge.max(1), "method": "cash"})),
                    ),
                    None => ("GET /v1/patients/{id}", get(format!("{base}/v1/patients/{patient}"))),
                }
            }
            895..995 => {
                let term = pick(&clinic.codes, 5);
                (
                    "GET /v1/master/items",
                    get(format!("{base}/v1/master/items"))
                        .query(&[("code", term.as_str()), ("on", "2026-09-01")]),
                )
            }
            _ => (
                "POST /v1/claims/generate",
                post(format!("{base}/v1/claims/generate")).json(&json!({"month": "2026-08"})),
            ),
        }
    }

    /// Sends the `n`th request and reads its answer: the route and the
    /// status (none when no answer came).
    async fn send(&self, n: u64) -> (&'static str, Option<u16>) {
        let (route, request) = self.request(n);
        let Ok(answer) = request.timeout(Duration::from_secs(30)).send().await else {
            return (route, None);
        };
        let status = answer.status().as_u16();
        if route == "POST /v1/encounters" && status == 201 {
            if let Ok(body) = answer.json::<Value>().await {
                self.entered(n, &body);
            }
        } else {
            let _ = answer.bytes().await;
        }
        (route, Some(status))
    }

    /// Remembers encounters the mix entered so later requests pay them.
    fn entered(&self, n: u64, body: &Value) {
        let clinic = &self.clinics[(mix(n) % self.clinics.len() as u64) as usize];
        if let (Some(id), Some(charge)) = (body["id"].as_str(), body["charge_yen"].as_i64()) {
            if charge > 0 {
                let mut unpaid = clinic.unpaid.lock().unwrap_or_else(|e| e.into_inner());
                if unpaid.len() < 1000 {
                    unpaid.push((id.to_string(), charge));
                }
            }
        }
    }
}

async fn provision_clinic(
    http: &reqwest::Client,
    base: &str,
    key: String,
    t: usize,
    target: &Target,
) -> anyhow::Result<Clinic> {
    let items = |kind: &'static str| {
        let http = http.clone();
        let key = key.clone();
        let base = base.to_string();
        async move {
            let page: Value = http
                .get(format!("{base}/v1/master/items"))
                .bearer_auth(&key)
                .query(&[("kind", kind), ("on", "2026-06-01"), ("limit", "200")])
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let on_september: Vec<String> = page["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter(|i| i["valid_to"].is_null())
                        .filter_map(|i| i["code"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            anyhow::Ok(on_september)
        }
    };
    let mut codes = items("procedure").await?;
    codes.extend(items("drug").await?);
    let diseases = items("disease").await?;
    anyhow::ensure!(
        !codes.is_empty() && !diseases.is_empty(),
        "the clinic's master copy has no open-ended codes"
    );
    let mut patients = Vec::new();
    let mut unpaid = Vec::new();
    for p in 0..target.patients {
        let (surname, surname_kana) = SURNAMES[(t + p) % SURNAMES.len()];
        let (given, given_kana) = GIVEN[(p / SURNAMES.len() + t) % GIVEN.len()];
        let elderly = p % 5 == 0;
        let created: Value = http
            .post(format!("{base}/v1/patients"))
            .bearer_auth(&key)
            .json(&json!({"name": format!("{surname} {given}"), "name_kana": format!("{surname_kana} {given_kana}"),
                          "birth_date": if elderly { "1945-04-01" } else { "1985-10-10" }, "sex": if p % 2 == 0 { "male" } else { "female" },
                          "insurances": [{"insurer_number": if elderly { "39131015" } else { "06132013" },
                                          "copay_rate": if elderly { 10 } else { 30 }, "valid_from": "2020-01-01"}]}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = created["id"].as_str().context("no patient id")?.to_string();
        for m in 0..target.months {
            let lines = 3 + (mix((t * 1000 + p * 10 + m) as u64) % 18) as usize;
            let items: Vec<Value> = (0..lines)
                .map(|i| json!({"code": codes[(p + m + i) % codes.len()], "quantity": 1}))
                .collect();
            let visit: Value = http
                .post(format!("{base}/v1/encounters"))
                .bearer_auth(&key)
                .json(
                    &json!({"patient_id": id, "date": format!("2026-{:02}-15", 8 - (m % 3)),
                              "diagnoses": [diseases[p % diseases.len()]], "items": items}),
                )
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            if let (Some(e), Some(charge)) = (visit["id"].as_str(), visit["charge_yen"].as_i64()) {
                if m % 2 == 0 && charge > 0 {
                    unpaid.push((e.to_string(), charge));
                }
            }
        }
        patients.push((id, surname_kana.to_string()));
    }
    let mut search_terms: Vec<String> = SURNAMES
        .iter()
        .flat_map(|(s, k)| [s.to_string(), k.chars().take(2).collect()])
        .collect();
    search_terms.sort();
    search_terms.dedup();
    Ok(Clinic {
        key,
        patients,
        codes,
        diseases,
        search_terms,
        unpaid: Mutex::new(unpaid),
    })
}

/// The number of the next request of the run: unique across its phases, so
/// that no two requests share an Idempotency-Key.
fn next_request() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// What a run saw, by route.
#[derive(Default)]
pub struct Outcome {
    pub all: Latencies,
    pub by_route: BTreeMap<&'static str, Latencies>,
    pub statuses: BTreeMap<u16, u64>,
    /// `429`/`503` answers, timed from their schedule.
    pub rejected: Latencies,
    /// Requests that got no answer at all (connection errors).
    pub failed: u64,
    /// Requests the generator could not send in time (over its in-flight cap).
    pub dropped: u64,
    pub lag: Latencies,
}

impl Outcome {
    fn add(&mut self, route: &'static str, status: Option<u16>, elapsed: Duration) {
        match status {
            Some(s) if (200..300).contains(&s) => {
                self.all.record(elapsed);
                self.by_route.entry(route).or_default().record(elapsed);
            }
            Some(s) => {
                if s == 429 || s == 503 {
                    self.rejected.record(elapsed);
                }
                self.all.error();
                self.by_route.entry(route).or_default().error();
            }
            None => {
                self.failed += 1;
                self.all.error();
                self.by_route.entry(route).or_default().error();
            }
        }
        if let Some(s) = status {
            *self.statuses.entry(s).or_default() += 1;
        }
    }

    /// Prints the run and records it for the report.
    pub fn report(&self, label: &str, seconds: f64) {
        out!(
            "{label}: {:.0} ok/s; all {}",
            self.all.count() as f64 / seconds.max(0.001),
            self.all.summary()
        );
        for (route, l) in &self.by_route {
            out!("  {route:<32} {}", l.summary());
            crate::report::latencies(&format!("{label} {route}"), l);
        }
        out!(
            "  statuses {:?}; rejections (429/503) {}; no answer {}; dropped by the generator {}",
            self.statuses,
            self.rejected.summary(),
            self.failed,
            self.dropped
        );
        out!("  generator lag {}", self.lag.summary());
        crate::report::latencies(&format!("{label} (all)"), &self.all);
        crate::report::latencies(&format!("{label} rejections"), &self.rejected);
        crate::report::figure(
            &format!("{label} ok/s"),
            self.all.count() as f64 / seconds.max(0.001),
        );
        crate::report::figure(
            &format!("{label} statuses"),
            serde_json::to_value(
                self.statuses
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect::<BTreeMap<_, _>>(),
            )
            .unwrap_or_default(),
        );
    }
}

/// Open loop: request `n` is sent at the time where the integral of
/// `rate(t)` reaches `n`, for `seconds`; at most 1,024 in flight.
pub async fn open_loop(desk: &Arc<Desk>, seconds: f64, rate: impl Fn(f64) -> f64) -> Outcome {
    let started = tokio::time::Instant::now();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(1024));
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let mut tasks = Vec::new();
    let mut t = 0.0_f64;
    let mut n;
    let step = 0.001;
    let mut due = 0.0_f64;
    while t < seconds {
        due += rate(t).max(0.0) * step;
        t += step;
        while due >= 1.0 {
            due -= 1.0;
            let scheduled = started + Duration::from_secs_f64(t);
            tokio::time::sleep_until(scheduled).await;
            n = next_request();
            let lag = scheduled.elapsed();
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                let mut o = outcome.lock().unwrap_or_else(|e| e.into_inner());
                o.dropped += 1;
                o.all.error();
                continue;
            };
            let desk = desk.clone();
            let outcome = outcome.clone();
            tasks.push(tokio::spawn(async move {
                let (route, status) = desk.send(n).await;
                let elapsed = scheduled.elapsed();
                drop(permit);
                let mut o = outcome.lock().unwrap_or_else(|e| e.into_inner());
                o.lag.record(lag);
                o.add(route, status, elapsed);
            }));
        }
    }
    futures::future::join_all(tasks).await;
    Arc::try_unwrap(outcome)
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or_default()
}

/// Closed loop: `clients` front desks, each sending its next request when
/// the last was answered, for `seconds`.
pub async fn closed_loop(desk: &Arc<Desk>, clients: usize, seconds: f64) -> Outcome {
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let desk = desk.clone();
            let outcome = outcome.clone();
            tokio::spawn(async move {
                while tokio::time::Instant::now() < deadline {
                    let n = next_request();
                    let started = tokio::time::Instant::now();
                    let (route, status) = desk.send(n).await;
                    outcome.lock().unwrap_or_else(|e| e.into_inner()).add(
                        route,
                        status,
                        started.elapsed(),
                    );
                }
            })
        })
        .collect();
    futures::future::join_all(tasks).await;
    Arc::try_unwrap(outcome)
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or_default()
}

/// Runs one phase: closed loop when `--clients` was given, else open loop.
pub async fn phase(
    desk: &Arc<Desk>,
    target: &Target,
    seconds: f64,
    rate: impl Fn(f64) -> f64,
) -> Outcome {
    match target.clients {
        Some(clients) => closed_loop(desk, clients, seconds).await,
        None => open_loop(desk, seconds, rate).await,
    }
}

#[derive(Args, Clone, Debug)]
pub struct Steady {
    #[command(flatten)]
    pub target: Target,
    /// Requests per second (open loop).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
}

#[derive(Args, Clone, Debug)]
pub struct Rush {
    #[command(flatten)]
    pub target: Target,
    /// The rate the ramp reaches, requests per second.
    #[arg(long, default_value_t = 200.0)]
    pub peak: f64,
    /// From opening (a tenth of the peak) to the peak.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
}

#[derive(Args, Clone, Debug)]
pub struct Spike {
    #[command(flatten)]
    pub target: Target,
    /// The normal rate, requests per second.
    #[arg(long, default_value_t = 40.0)]
    pub rate: f64,
    /// The spike, as a multiple of the normal rate.
    #[arg(long, default_value_t = 10.0)]
    pub factor: f64,
    /// How long the spike lasts; the normal rate runs 20 s before and after.
    #[arg(long, default_value_t = 60)]
    pub spike_seconds: u64,
}

pub async fn steady(o: Steady) -> anyhow::Result<()> {
    let desk = Arc::new(Desk::set_up(&o.target).await?);
    out!(
        "recept-load steady: {} clinics on {}, {} req/s for {} s",
        o.target.tenants,
        desk.clinic_url,
        o.rate,
        o.seconds
    );
    phase(&desk, &o.target, 3.0, |_| o.rate).await;
    let outcome = phase(&desk, &o.target, o.seconds as f64, |_| o.rate).await;
    outcome.report("steady", o.seconds as f64);
    finish(desk).await;
    Ok(())
}

pub async fn morning_rush(o: Rush) -> anyhow::Result<()> {
    let desk = Arc::new(Desk::set_up(&o.target).await?);
    let seconds = o.seconds as f64;
    out!(
        "recept-load morning-rush: {} clinics, ramp from {:.0} to {:.0} req/s over {} s",
        o.target.tenants,
        o.peak / 10.0,
        o.peak,
        o.seconds
    );
    let outcome = phase(&desk, &o.target, seconds, |t| {
        o.peak * (0.1 + 0.9 * t / seconds)
    })
    .await;
    outcome.report("morning-rush", seconds);
    finish(desk).await;
    Ok(())
}

pub async fn spike(o: Spike) -> anyhow::Result<()> {
    let desk = Arc::new(Desk::set_up(&o.target).await?);
    let (before, during) = (20.0, o.spike_seconds as f64);
    out!(
        "recept-load spike: {} clinics, {} req/s, then {}x for {} s, then {} req/s",
        o.target.tenants,
        o.rate,
        o.factor,
        o.spike_seconds,
        o.rate
    );
    let baseline = phase(&desk, &o.target, before, |_| o.rate).await;
    baseline.report("before the spike", before);
    let spike = phase(&desk, &o.target, during, |_| o.rate * o.factor).await;
    spike.report("the spike", during);
    let after = phase(&desk, &o.target, before, |_| o.rate).await;
    after.report("after the spike", before);
    let ratio = |a: &Latencies, b: &Latencies| a.ms(0.99) / b.ms(0.99).max(0.001);
    out!(
        "p99 during / before: {:.2}; after / before: {:.2}",
        ratio(&spike.all, &baseline.all),
        ratio(&after.all, &baseline.all)
    );
    crate::report::figure(
        "p99 during spike / before",
        ratio(&spike.all, &baseline.all),
    );
    crate::report::figure("p99 after spike / before", ratio(&after.all, &baseline.all));
    finish(desk).await;
    Ok(())
}

async fn finish(desk: Arc<Desk>) {
    if let Ok(desk) = Arc::try_unwrap(desk) {
        desk.tear_down().await;
    }
}
