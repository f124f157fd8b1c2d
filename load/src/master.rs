//! The master-data benchmark (issue: fast diff-based rollouts).
//!
//! 1. Tenant creation with a full-size release copied.
//! 2. A rollout changing `--changed` items across `--tenants` tenants, with
//!    clinic traffic measured before (baseline) and during the rollout.
//! 3. Price lookups per second from the master cache.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use clap::Args;
use futures::StreamExt;
use recept::master::{self, generate_release, Kind, MasterItem, RolloutTarget};
use recept::tenancy::{create_tenant, IssuedKey, Registry, Slug};
use serde_json::json;

use crate::stack::Stack;
use crate::stats::Latencies;

#[derive(Args, Clone)]
pub struct Options {
    /// Tenants the rollout upgrades.
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    /// Items the rollout changes.
    #[arg(long, default_value_t = 2000)]
    changed: usize,
    /// Tenants created with the full-size release (timed one by one).
    #[arg(long, default_value_t = 5)]
    full_size_tenants: usize,
    /// Concurrent clinic clients during the traffic phases.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Length of the baseline traffic phase.
    #[arg(long, default_value_t = 15)]
    baseline_seconds: u64,
    /// Tenants upgraded at once (default: one per core, as `recept master rollout`).
    #[arg(long)]
    concurrency: Option<usize>,
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("a valid date")
}

/// The sample release plus `n` generated drugs (A), and the same with every
/// generated drug's price changed (B).
fn releases(n: usize) -> anyhow::Result<(Vec<MasterItem>, Vec<MasterItem>)> {
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tenants/master/2026-04.csv"
    ))?;
    let mut a = master::parse_release(&sample)?;
    let extra: Vec<MasterItem> = generate_release(42, 0, n, 0, date("2030-01-01"))
        .into_iter()
        .filter(|i| i.valid_to.is_none() && i.kind == Kind::Drug)
        .map(|mut i| {
            i.code = format!("7{}", &i.code[1..]);
            i
        })
        .take(n)
        .collect();
    a.extend(extra.iter().cloned());
    let mut b = a.clone();
    for item in b
        .iter_mut()
        .filter(|i| i.code.starts_with('7') && i.kind == Kind::Drug)
    {
        if let Some(price) = item.unit_price.as_mut() {
            price.0 += 10;
        }
    }
    Ok((a, b))
}

pub async fn run(mut o: Options) -> anyhow::Result<()> {
    let concurrency = o
        .concurrency
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    o.concurrency = Some(concurrency);
    let admin_pool = concurrency.max(2) + 2;
    let stack = Stack::start(|s| {
        s.clinic.pool_size = 16;
        s.admin.pool_size = admin_pool;
        s.server.workers = 2;
    })
    .await?;
    let pools = stack.pools.clone();
    println!(
        "recept-load master: {} tenants, {} changed items, {} clients",
        o.tenants, o.changed, o.clients
    );

    // 1. Tenant creation with the full-size release.
    let full = generate_release(1, 10_000, 20_000, 25_000, date("2026-06-01"));
    let started = Instant::now();
    master::import_release(&pools, "full", &full).await?;
    println!(
        "import full-size release ({} rows): {:.2}s",
        full.len(),
        started.elapsed().as_secs_f64()
    );
    let mut creations = Vec::new();
    for i in 0..o.full_size_tenants {
        let slug = Slug::parse(&format!("full_{i:03}"))?;
        let started = Instant::now();
        create_tenant(&pools, &slug, "Full-size clinic", "main", Some("full")).await?;
        creations.push(started.elapsed().as_secs_f64());
    }
    creations.sort_by(f64::total_cmp);
    println!(
        "create tenant with full-size copy: median {:.3}s, max {:.3}s over {}",
        creations[creations.len() / 2],
        creations[creations.len() - 1],
        creations.len()
    );

    // 2. Many tenants on A; B changes `changed` items.
    let (a, b) = releases(o.changed)?;
    master::import_release(&pools, "bench-a", &a).await?;
    master::import_release(&pools, "bench-b", &b).await?;
    let started = Instant::now();
    let slugs: Vec<Slug> = (0..o.tenants)
        .map(|i| Slug::parse(&format!("clinic_{i:05}")).expect("a valid slug"))
        .collect();
    let created: Vec<anyhow::Result<()>> = futures::stream::iter(slugs.iter().cloned())
        .map(|slug| {
            let pools = pools.clone();
            async move {
                create_tenant(&pools, &slug, "Bench clinic", "main", Some("bench-a")).await?;
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for result in created {
        result?;
    }
    println!(
        "create {} tenants on the sample-size release: {:.1}s",
        o.tenants,
        started.elapsed().as_secs_f64()
    );

    // Keys for the tenants that get clinic traffic, and a patient each.
    let http = reqwest::Client::new();
    let mut clinics = Vec::new();
    for slug in slugs.iter().take(20) {
        let client = pools.control(recept::pools::Role::Admin).await?;
        let tenant = Registry::find(&client, slug).await?.expect("created");
        let key = IssuedKey::generate();
        Registry::insert_key(&client, tenant.id, &key, Some("load")).await?;
        let patient: serde_json::Value = http
            .post(format!("{}/v1/patients", stack.clinic))
            .bearer_auth(&key.secret)
            .json(&json!({"name": "負荷 太郎", "birth_date": "1970-01-01", "sex": "male",
                          "insurances": [{"insurer_number": "06132013", "copay_rate": 30, "valid_from": "2020-01-01"}]}))
            .send()
            .await?
            .json()
            .await?;
        clinics.push((
            key.secret,
            patient["id"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let clinics = Arc::new(clinics);

    // Warm-up (prepared statements, caches), not counted; then the baseline.
    traffic(
        &stack.clinic,
        &clinics,
        o.clients,
        Phase::For(Duration::from_secs(3)),
    )
    .await;
    let baseline = traffic(
        &stack.clinic,
        &clinics,
        o.clients,
        Phase::For(Duration::from_secs(o.baseline_seconds)),
    )
    .await;
    println!("clinic traffic, baseline: {}", baseline.summary());

    // Rollout with traffic beside it.
    let done = Arc::new(AtomicBool::new(false));
    let during = {
        let done = done.clone();
        let clinic = stack.clinic.clone();
        let clinics = clinics.clone();
        let clients = o.clients;
        tokio::spawn(async move { traffic(&clinic, &clinics, clients, Phase::Until(done)).await })
    };
    let started = Instant::now();
    let target = RolloutTarget::Tenants(slugs.clone());
    let report = master::rollout(&pools, "bench-b", &target, concurrency, |_| {}).await?;
    let rollout_secs = started.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    let during = during.await?;
    println!(
        "rollout of {} changed items to {} tenants: {:.1}s (done {}, skipped {}, failed {})",
        o.changed,
        report.tenants.len(),
        rollout_secs,
        report.counts.done,
        report.counts.skipped,
        report.counts.failed
    );
    println!("clinic traffic, during rollout: {}", during.summary());
    println!(
        "p99 during / baseline: {:.2}",
        during.ms(0.99) / baseline.ms(0.99).max(0.001)
    );

    // 3. Cached price lookups.
    let conn = pools.tenant("main", "t_clinic_00000").await?;
    let codes: Vec<String> = a.iter().take(20).map(|i| i.code.clone()).collect();
    let code_refs: Vec<&str> = codes.iter().map(String::as_str).collect();
    let tenant_id = {
        let client = pools.control(recept::pools::Role::Admin).await?;
        Registry::find(&client, &slugs[0])
            .await?
            .expect("created")
            .id
    };
    let cache = stack.cache.clone();
    let (lookups, seconds) = conn
        .write(async |tx| -> Result<(u64, f64), recept::pools::DbError> {
            cache.lookup(tx, tenant_id, "bench-b", &code_refs).await?;
            let started = Instant::now();
            let mut n = 0u64;
            while started.elapsed() < Duration::from_secs(3) {
                cache.lookup(tx, tenant_id, "bench-b", &code_refs).await?;
                n += code_refs.len() as u64;
            }
            Ok((n, started.elapsed().as_secs_f64()))
        })
        .await?;
    println!(
        "cached price lookups: {:.0} codes/s ({} encounters of 20 lines in {:.1}s, one task)",
        lookups as f64 / seconds,
        lookups / 20,
        seconds
    );
    Ok(())
}

enum Phase {
    For(Duration),
    Until(Arc<AtomicBool>),
}

impl Phase {
    fn over(&self, started: Instant) -> bool {
        match self {
            Phase::For(d) => started.elapsed() >= *d,
            Phase::Until(flag) => flag.load(Ordering::SeqCst),
        }
    }
}

/// Closed-loop clinic traffic: each client alternates a master lookup and
/// an encounter with five lines, on one of the clinics, until the phase ends
/// (and never longer than ten minutes).
async fn traffic(
    base: &str,
    clinics: &Arc<Vec<(String, String)>>,
    clients: usize,
    phase: Phase,
) -> Latencies {
    let phase = Arc::new(phase);
    let started = Instant::now();
    let workers = (0..clients).map(|w| {
        let http = reqwest::Client::new();
        let clinics = clinics.clone();
        let phase = phase.clone();
        let base = base.to_string();
        tokio::spawn(async move {
            let mut latencies = Latencies::default();
            let mut i = w;
            while !phase.over(started) && started.elapsed() < Duration::from_secs(600) {
                let (key, patient) = &clinics[i % clinics.len()];
                let t = Instant::now();
                let ok = if i % 2 == 0 {
                    http.get(format!("{base}/v1/master/items?code=620098801&on=2026-07-01"))
                        .bearer_auth(key)
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false)
                } else {
                    http.post(format!("{base}/v1/encounters"))
                        .bearer_auth(key)
                        .json(&json!({"patient_id": patient, "date": "2026-07-01", "diagnoses": ["8833421"],
                            "items": [{"code": "112007410", "quantity": 1}, {"code": "120000710", "quantity": 1},
                                      {"code": "620098801", "quantity": 14}, {"code": "620004856", "quantity": 28},
                                      {"code": "160000310", "quantity": 1}]}))
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false)
                };
                if ok {
                    latencies.record(t.elapsed());
                } else {
                    latencies.error();
                }
                i += clients;
            }
            latencies
        })
    });
    let mut all = Latencies::default();
    for latencies in futures::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
    {
        all.merge(&latencies);
    }
    all
}
