//! The migration benchmark: creating 1,000 tenants, a new migration (a
//! column with a default plus an index) across all of them, a no-op run,
//! and the same kind of migration beside clinic traffic.

use crate::out;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use recept::migrate::{self, MigrationSet, RunOptions};
use recept::tenancy::Slug;

use crate::stack::Stack;
use crate::traffic::{self, Phase};

#[derive(Args, Clone)]
pub struct Options {
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    /// Concurrent clinic clients during the traffic phases.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    #[arg(long, default_value_t = 15)]
    baseline_seconds: u64,
    /// Tenants migrated at once (the migration pool's size).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

const ROOM: (&str, &str) = (
    "V100__encounter_room",
    "ALTER TABLE encounters ADD COLUMN room text NOT NULL DEFAULT 'main'; \
     CREATE INDEX encounters_room ON encounters (room);",
);
const CONTACT: (&str, &str) = (
    "V101__patient_contact",
    "ALTER TABLE patients ADD COLUMN contact text NOT NULL DEFAULT 'phone'; \
     CREATE INDEX patients_contact ON patients (contact);",
);

pub async fn run(o: Options) -> anyhow::Result<()> {
    migrations(o, true).await
}

/// Only the migration beside clinic traffic (both migrations in one run).
pub async fn under_load(o: Options) -> anyhow::Result<()> {
    migrations(o, false).await
}

async fn migrations(o: Options, everything: bool) -> anyhow::Result<()> {
    let stack = Stack::start(|s| {
        s.clinic.pool_size = 16;
        s.admin.pool_size = 4;
        s.migrate.pool_size = o.concurrency;
        s.server.workers = 2;
    })
    .await?;
    let pools = stack.pools.clone();
    out!(
        "recept-load migrate: {} tenants, migration concurrency {}, {} clients",
        o.tenants,
        o.concurrency,
        o.clients
    );
    crate::stack::import_sample_release(&pools).await?;

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let slugs: Vec<Slug> = (0..o.tenants)
        .map(|i| Slug::parse(&format!("clinic_{i:05}")).expect("a valid slug"))
        .collect();
    let started = Instant::now();
    crate::stack::create_tenants(&pools, &slugs, "2026-04", cores).await?;
    out!(
        "create {} tenants (schema, its migrations, master copy), {} at a time: {:.1}s",
        o.tenants,
        cores,
        started.elapsed().as_secs_f64()
    );

    let options = RunOptions {
        concurrency: o.concurrency,
        retries: 5,
        ..RunOptions::default()
    };
    if everything {
        let room = MigrationSet::with_extra(&[ROOM])?;
        let summary = migrate::run(&pools, &room, &options, |_| {}).await?;
        out!(
            "apply {} to {} tenants: {:.2}s ({} migrated, {} failed)",
            ROOM.0,
            o.tenants,
            summary.elapsed_s,
            summary.migrated,
            summary.failed.len()
        );
        let noop = migrate::run(&pools, &room, &options, |_| {}).await?;
        out!(
            "no-op run over {} current tenants: {:.3}s ({} current)",
            o.tenants,
            noop.elapsed_s,
            noop.current
        );
        crate::report::figure("migration seconds", summary.elapsed_s);
        crate::report::figure("no-op run seconds", noop.elapsed_s);
    }

    let clinics = traffic::clinics(&stack, &slugs[..20]).await?;
    traffic::run(
        &stack.clinic,
        &clinics,
        o.clients,
        Phase::For(Duration::from_secs(3)),
    )
    .await;
    let baseline = traffic::run(
        &stack.clinic,
        &clinics,
        o.clients,
        Phase::For(Duration::from_secs(o.baseline_seconds)),
    )
    .await;
    out!("clinic traffic, baseline: {}", baseline.summary());
    crate::report::latencies("clinic traffic, baseline", &baseline);
    let done = Arc::new(AtomicBool::new(false));
    let during = {
        let done = done.clone();
        let clinic = stack.clinic.clone();
        let clinics = clinics.clone();
        let clients = o.clients;
        tokio::spawn(
            async move { traffic::run(&clinic, &clinics, clients, Phase::Until(done)).await },
        )
    };
    let contact = MigrationSet::with_extra(&[ROOM, CONTACT])?;
    let under_load = migrate::run(&pools, &contact, &options, |_| {}).await?;
    done.store(true, Ordering::SeqCst);
    let during = during.await?;
    out!(
        "apply {} to {} tenants under clinic load: {:.2}s ({} migrated, {} failed)",
        CONTACT.0,
        o.tenants,
        under_load.elapsed_s,
        under_load.migrated,
        under_load.failed.len()
    );
    out!("clinic traffic, during the migration: {}", during.summary());
    crate::report::latencies("clinic traffic, during the migration", &during);
    crate::report::figure("migration under load seconds", under_load.elapsed_s);
    crate::report::figure(
        "p99 during / baseline",
        during.ms(0.99) / baseline.ms(0.99).max(0.001),
    );
    out!(
        "p99 during / baseline: {:.2}",
        during.ms(0.99) / baseline.ms(0.99).max(0.001)
    );
    Ok(())
}
