//! The admin-isolation benchmark: clinic traffic at a steady rate, alone and
//! then beside heavy cross-tenant admin reports that each run into the admin
//! statement timeout.

use crate::out;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use recept::audit::Actor;
use recept::names::quote_ident;
use recept::pools::Role;
use recept::tenancy::{create_tenant, Slug};

use crate::stack::Stack;
use crate::stats::Latencies;
use crate::traffic;

#[derive(Args, Clone)]
pub struct Options {
    /// Tenants the reports cover.
    #[arg(long, default_value_t = 200)]
    tenants: usize,
    /// Encounters per tenant in the reported month.
    #[arg(long, default_value_t = 3000)]
    encounters: usize,
    /// Clinic requests per second (open loop).
    #[arg(long, default_value_t = 400)]
    rate: u32,
    /// Length of each window; windows alone and beside reports alternate,
    /// so that drift in the machine's speed falls on both alike.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Pairs of windows (alone, then beside reports).
    #[arg(long, default_value_t = 6)]
    rounds: u32,
    /// The admin statement timeout the reports run into.
    #[arg(long, default_value_t = 200)]
    admin_timeout_ms: u64,
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let stack = Stack::start(|s| {
        s.clinic.pool_size = 16;
        s.admin.pool_size = 2;
        s.admin.statement_timeout_ms = o.admin_timeout_ms;
        s.server.workers = 2;
    })
    .await?;
    let pools = stack.pools.clone();
    out!(
        "recept-load admin-reports: {} tenants x {} encounters, clinic {} req/s, admin timeout {} ms",
        o.tenants, o.encounters, o.rate, o.admin_timeout_ms
    );
    crate::stack::import_sample_release(&pools).await?;
    let slugs: Vec<Slug> = (0..o.tenants)
        .map(|i| Slug::parse(&format!("clinic_{i:05}")).expect("a valid slug"))
        .collect();
    let started = Instant::now();
    let encounters = o.encounters as i32;
    let made: Vec<anyhow::Result<()>> = futures::stream::iter(slugs.iter().cloned())
        .map(|slug| {
            let pools = pools.clone();
            async move {
                create_tenant(&pools, &slug, "Busy clinic", "main", Some("2026-04"), &Actor::operator())
                    .await?;
                // Months of visits, written straight into the tenant's schema.
                let s = quote_ident(&slug.schema_name());
                let client = pools.get("main", Role::Migration).await?;
                client
                    .execute(
                        &format!(
                            "WITH p AS (INSERT INTO {s}.patients (id, name, birth_date, sex) \
                               VALUES (gen_random_uuid(), '負荷 花子', '1960-01-01', 'female') RETURNING id) \
                             INSERT INTO {s}.encounters (id, patient_id, date, insurer_number, copay_rate, \
                               total_points, charge_yen) \
                             SELECT gen_random_uuid(), p.id, date '2026-05-01' + (g % 31), '06132013', 30, \
                               100 + g % 50, 300 FROM p, generate_series(1, $1) g"
                        ),
                        &[&encounters],
                    )
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(2)
        .collect()
        .await;
    for result in made {
        result?;
    }
    pools
        .get("main", Role::Migration)
        .await?
        .batch_execute("ANALYZE")
        .await?;
    out!("set-up: {:.1}s", started.elapsed().as_secs_f64());

    let clinics = traffic::clinics(&stack, &slugs[..20]).await?;
    let window = Duration::from_secs(o.seconds);
    traffic::open_loop(&stack.clinic, &clinics, o.rate, Duration::from_secs(3)).await;
    let mut alone = Latencies::default();
    let mut beside = Latencies::default();
    let mut timings = Vec::new();
    let mut other = 0;
    for _ in 0..o.rounds {
        alone.merge(&traffic::open_loop(&stack.clinic, &clinics, o.rate, window).await);
        let stop = Arc::new(AtomicBool::new(false));
        let reports = tokio::spawn(reports_until(
            stack.admin.clone(),
            stack.admin_token.clone(),
            stop.clone(),
        ));
        beside.merge(&traffic::open_loop(&stack.clinic, &clinics, o.rate, window).await);
        stop.store(true, Ordering::SeqCst);
        let (more, others) = reports.await?;
        timings.extend(more);
        other += others;
    }
    out!(
        "clinic alone ({} windows of {} s): {}",
        o.rounds,
        o.seconds,
        alone.summary()
    );
    out!("clinic beside reports: {}", beside.summary());
    crate::report::latencies("clinic alone", &alone);
    crate::report::latencies("clinic beside reports", &beside);
    crate::report::figure(
        "p99 beside reports / alone",
        beside.ms(0.99) / alone.ms(0.99).max(0.001),
    );
    out!(
        "p99 beside reports / alone: {:.2}",
        beside.ms(0.99) / alone.ms(0.99).max(0.001)
    );
    timings.sort_by(f64::total_cmp);
    if timings.is_empty() {
        out!("admin reports: none timed out ({other} other answers): make the data set larger");
    } else {
        let limit = o.admin_timeout_ms as f64;
        let within = timings.iter().filter(|t| **t <= limit * 1.1).count();
        out!(
            "admin reports: {} answered 504 after median {:.0} ms, max {:.0} ms (timeout {limit:.0} ms; {} of {} within 10%); {other} other answers",
            timings.len(),
            timings[timings.len() / 2],
            timings[timings.len() - 1],
            within,
            timings.len()
        );
    }
    Ok(())
}

/// Runs `GET /admin/reports/monthly` back to back until `stop`; returns the
/// times of those answered `504` (ms) and how many were answered otherwise.
async fn reports_until(admin: String, token: String, stop: Arc<AtomicBool>) -> (Vec<f64>, u32) {
    let http = reqwest::Client::new();
    let mut timings = Vec::new();
    let mut other = 0;
    while !stop.load(Ordering::SeqCst) {
        let t = Instant::now();
        let status = http
            .get(format!(
                "{admin}/admin/reports/monthly?month=2026-05&limit=500"
            ))
            .bearer_auth(&token)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status == 504 {
            timings.push(t.elapsed().as_secs_f64() * 1000.0);
        } else {
            other += 1;
        }
    }
    (timings, other)
}
