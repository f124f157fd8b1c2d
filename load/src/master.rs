//! The master-data benchmark (issue: fast diff-based rollouts).
//!
//! 1. Tenant creation with a full-size release copied.
//! 2. A rollout changing `--changed` items across `--tenants` tenants, with
//!    clinic traffic measured before (baseline) and during the rollout.
//! 3. Price lookups per second from the master cache.

use crate::out;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use clap::Args;
use recept::audit::Actor;
use recept::master::{self, generate_release, Kind, MasterItem, RolloutTarget};
use recept::tenancy::{create_tenant, Registry, Slug};

use crate::stack::Stack;

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

pub async fn run(o: Options) -> anyhow::Result<()> {
    benchmark(o, true).await
}

/// Only the rollout beside clinic traffic.
pub async fn rollout_under_load(o: Options) -> anyhow::Result<()> {
    benchmark(o, false).await
}

async fn benchmark(mut o: Options, everything: bool) -> anyhow::Result<()> {
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
    out!(
        "recept-load master: {} tenants, {} changed items, {} clients",
        o.tenants,
        o.changed,
        o.clients
    );

    // 1. Tenant creation with the full-size release.
    if everything {
        let full = generate_release(1, 10_000, 20_000, 25_000, date("2026-06-01"));
        let started = Instant::now();
        master::import_release(&pools, "full", &full, &recept::audit::Actor::operator()).await?;
        out!(
            "import full-size release ({} rows): {:.2}s",
            full.len(),
            started.elapsed().as_secs_f64()
        );
        let mut creations = Vec::new();
        for i in 0..o.full_size_tenants {
            let slug = Slug::parse(&format!("full_{i:03}"))?;
            let started = Instant::now();
            create_tenant(
                &pools,
                &slug,
                "Full-size clinic",
                "main",
                Some("full"),
                &Actor::operator(),
            )
            .await?;
            creations.push(started.elapsed().as_secs_f64());
        }
        creations.sort_by(f64::total_cmp);
        out!(
            "create tenant with full-size copy: median {:.3}s, max {:.3}s over {}",
            creations[creations.len() / 2],
            creations[creations.len() - 1],
            creations.len()
        );
        crate::report::figure(
            "create tenant with full-size copy, median s",
            creations[creations.len() / 2],
        );
    }

    // 2. Many tenants on A; B changes `changed` items.
    let (a, b) = releases(o.changed)?;
    master::import_release(&pools, "bench-a", &a, &recept::audit::Actor::operator()).await?;
    master::import_release(&pools, "bench-b", &b, &recept::audit::Actor::operator()).await?;
    let started = Instant::now();
    let slugs: Vec<Slug> = (0..o.tenants)
        .map(|i| Slug::parse(&format!("clinic_{i:05}")).expect("a valid slug"))
        .collect();
    crate::stack::create_tenants(&pools, &slugs, "bench-a", concurrency).await?;
    out!(
        "create {} tenants on the sample-size release: {:.1}s",
        o.tenants,
        started.elapsed().as_secs_f64()
    );

    let clinics = crate::traffic::clinics(&stack, &slugs[..20]).await?;

    // Warm-up (prepared statements, caches), not counted; then the baseline.
    crate::traffic::run(
        &stack.clinic,
        &clinics,
        o.clients,
        crate::traffic::Phase::For(Duration::from_secs(3)),
    )
    .await;
    let baseline = crate::traffic::run(
        &stack.clinic,
        &clinics,
        o.clients,
        crate::traffic::Phase::For(Duration::from_secs(o.baseline_seconds)),
    )
    .await;
    out!("clinic traffic, baseline: {}", baseline.summary());
    crate::report::latencies("clinic traffic, baseline", &baseline);

    // Rollout with traffic beside it.
    let done = Arc::new(AtomicBool::new(false));
    let during = {
        let done = done.clone();
        let clinic = stack.clinic.clone();
        let clinics = clinics.clone();
        let clients = o.clients;
        tokio::spawn(async move {
            crate::traffic::run(
                &clinic,
                &clinics,
                clients,
                crate::traffic::Phase::Until(done),
            )
            .await
        })
    };
    let started = Instant::now();
    let target = RolloutTarget::Tenants(slugs.clone());
    let report = master::rollout(
        &pools,
        "bench-b",
        &target,
        concurrency,
        &recept::audit::Actor::operator(),
        |_| {},
    )
    .await?;
    let rollout_secs = started.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    let during = during.await?;
    out!(
        "rollout of {} changed items to {} tenants: {:.1}s (done {}, skipped {}, failed {})",
        o.changed,
        report.tenants.len(),
        rollout_secs,
        report.counts.done,
        report.counts.skipped,
        report.counts.failed
    );
    out!("clinic traffic, during rollout: {}", during.summary());
    crate::report::latencies("clinic traffic, during rollout", &during);
    crate::report::figure("rollout seconds", rollout_secs);
    crate::report::figure(
        "p99 during / baseline",
        during.ms(0.99) / baseline.ms(0.99).max(0.001),
    );

    out!(
        "p99 during / baseline: {:.2}",
        during.ms(0.99) / baseline.ms(0.99).max(0.001)
    );
    if !everything {
        return Ok(());
    }

    // 3. Cached price lookups.
    let conn = pools.schema("main", "t_clinic_00000").await?;
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
    out!(
        "cached price lookups: {:.0} codes/s ({} encounters of 20 lines in {:.1}s, one task)",
        lookups as f64 / seconds,
        lookups / 20,
        seconds
    );
    Ok(())
}
