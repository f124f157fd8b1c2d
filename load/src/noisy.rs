//! One noisy tenant: the other tenants' latency with one clinic at ten
//! times its normal rate, against the same run's baseline, in alternating
//! windows so that the host's drift weighs on both sides.

use crate::out;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::overload::{open, Outcome};
use crate::stack::Stack;

#[derive(Args, Clone)]
pub struct Options {
    /// Quiet tenants, besides the noisy one.
    #[arg(long, default_value_t = 9)]
    tenants: usize,
    /// Each tenant's normal rate, requests per second (open loop).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// The noisy tenant's rate as a multiple of the normal one.
    #[arg(long, default_value_t = 10.0)]
    factor: f64,
    /// Length of each window (baseline, then beside the noise).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Pairs of windows, baseline then beside the noise.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let stack = Stack::start(|s| s.server.workers = 2).await?;
    let pools = stack.pools.clone();
    crate::stack::import_sample_release(&pools).await?;
    let slugs: Vec<recept::tenancy::Slug> = (0..=o.tenants)
        .map(|i| recept::tenancy::Slug::parse(&format!("clinic_{i:05}")).expect("a valid slug"))
        .collect();
    crate::stack::create_tenants(&pools, &slugs, "2026-04", 2).await?;
    let clinics = crate::traffic::clinics(&stack, &slugs).await?;
    let paths: Vec<(String, String)> = clinics
        .iter()
        .map(|(key, patient)| (key.clone(), format!("/v1/patients/{patient}")))
        .collect();
    let noisy = Arc::new(vec![paths[0].clone()]);
    let quiet = Arc::new(paths[1..].to_vec());
    let quiet_rate = o.rate * o.tenants as f64;
    let phase = Duration::from_secs(o.seconds);

    open(&stack.clinic, &quiet, quiet_rate, Duration::from_secs(3), 0).await;
    let mut baseline = Outcome::default();
    let mut beside = Outcome::default();
    let mut noisy_normal = Outcome::default();
    let mut noisy_loud = Outcome::default();
    for _ in 0..o.rounds {
        let (quiet_alone, normal) = tokio::join!(
            open(&stack.clinic, &quiet, quiet_rate, phase, 0),
            open(&stack.clinic, &noisy, o.rate, phase, 0),
        );
        let (quiet_beside, loud) = tokio::join!(
            open(&stack.clinic, &quiet, quiet_rate, phase, 0),
            open(&stack.clinic, &noisy, o.rate * o.factor, phase, 0),
        );
        baseline.merge(&quiet_alone);
        noisy_normal.merge(&normal);
        beside.merge(&quiet_beside);
        noisy_loud.merge(&loud);
    }
    out!(
        "recept-load noisy-tenant: {} quiet tenants at {} req/s each, one tenant at {} then {} req/s, {} rounds of {} s each",
        o.tenants,
        o.rate,
        o.rate,
        o.rate * o.factor,
        o.rounds,
        o.seconds
    );
    out!("quiet tenants, baseline:       {}", baseline.ok.summary());
    out!("quiet tenants, beside noise:   {}", beside.ok.summary());
    crate::report::latencies("quiet tenants, baseline", &baseline.ok);
    crate::report::latencies("quiet tenants, beside noise", &beside.ok);
    crate::report::latencies("noisy tenant, loud", &noisy_loud.ok);
    crate::report::figure(
        "quiet p99 beside noise / baseline",
        beside.ok.ms(0.99) / baseline.ok.ms(0.99).max(0.001),
    );
    out!(
        "quiet p99 beside noise / baseline: {:.2}",
        beside.ok.ms(0.99) / baseline.ok.ms(0.99).max(0.001)
    );
    out!(
        "noisy tenant: normal {} ok; loud {} ok, {} refused (429/503), {} failed",
        noisy_normal.ok.count(),
        noisy_loud.ok.count(),
        noisy_loud.rejected.count(),
        noisy_loud.failed
    );
    out!(
        "quiet tenants refused or failed: baseline {} / {}, beside noise {} / {}",
        baseline.rejected.count(),
        baseline.failed,
        beside.rejected.count(),
        beside.failed
    );
    Ok(())
}
