//! recept-load: benchmarks that drive recept over HTTP and print figures
//! for load/RESULTS.md; each run also writes a JSON summary and an HTML
//! report. The front-desk scenarios (`steady`, `morning-rush`, `spike`)
//! run against a running recept or one they start; the others start their
//! own private PostgreSQL and recept.
//!
//! Every run is bounded in time and count, talks only to loopback, and
//! cleans up after itself.

/// The allocator recept ships with (`src/main.rs`), so that the recept
/// these benchmarks run in this process is measured as it runs in its own.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc reads its options from this symbol at start.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = recept::MALLOC_CONF;

mod admin_reports;
mod citus;
mod claims_file;
mod desk;
mod hostile;
mod kernel;
mod lean;
mod many;
mod master;
mod migrate;
mod noisy;
mod overload;
mod pin;
mod report;
mod restart;
mod stack;
mod stats;
mod traffic;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "recept-load", about = "Benchmarks for recept")]
struct Cli {
    /// Run the load generator on the last CPU and recept with its
    /// PostgreSQL on the others, so they do not take each other's time.
    #[arg(long, global = true)]
    pin: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The front-desk mix at a steady rate.
    Steady(desk::Steady),
    /// The front-desk mix ramping from opening to the morning peak.
    MorningRush(desk::Rush),
    /// The front-desk mix at 10x for a minute (the push-notification case).
    Spike(desk::Spike),
    /// Master data: tenant creation with a full-size copy, a diff rollout
    /// across many tenants beside clinic traffic, cached price lookups.
    Master(master::Options),
    /// Migrations: creating tenants, a migration across all of them, a
    /// no-op run, and a migration beside clinic traffic.
    Migrate(migrate::Options),
    /// A tenant migration across 1,000 tenants beside clinic traffic (the
    /// `migrate` scenario's last part on its own).
    MigrateUnderLoad(migrate::Options),
    /// A master rollout across 1,000 tenants beside clinic traffic (the
    /// `master` scenario's rollout part).
    RolloutUnderLoad(master::Options),
    /// Admin isolation: steady clinic traffic alone, then beside heavy
    /// admin reports that run into the admin statement timeout.
    AdminReports(admin_reports::Options),
    /// Overload: capacity, then an open-loop offered load at 3x it.
    Overload(overload::Options),
    /// PostgreSQL restarted under traffic: fast failures, then recovery.
    PgRestart(restart::Options),
    /// 1,000 tenants: recept against pgbench running the same SQL.
    ManyTenants(many::Options),
    /// One tenant at 10x its rate beside others at theirs.
    NoisyTenant(noisy::Options),
    /// The electronic claims file: one clinic's 2,000 claims, and every
    /// tenant of a 1,000-tenant cluster from the command line.
    ClaimsFile(claims_file::Options),
    /// Citus: tenant creation, GET and POST through a coordinator against
    /// plain PostgreSQL, and a tenant moved between workers under load.
    Citus(citus::Options),
    /// Hostile clients beside a clinic: connections holding partial
    /// bodies, then forged keys as fast as they can be sent.
    Hostile(hostile::Options),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.pin {
        // Before the runtime exists, so its threads inherit the mask.
        pin::generator()?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let name = cli.command.name();
    let scenario: std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>>>> =
        match cli.command {
            Command::Steady(options) => Box::pin(desk::steady(options)),
            Command::MorningRush(options) => Box::pin(desk::morning_rush(options)),
            Command::Spike(options) => Box::pin(desk::spike(options)),
            Command::Master(options) => Box::pin(master::run(options)),
            Command::Migrate(options) => Box::pin(migrate::run(options)),
            Command::MigrateUnderLoad(options) => Box::pin(migrate::under_load(options)),
            Command::RolloutUnderLoad(options) => Box::pin(master::rollout_under_load(options)),
            Command::AdminReports(options) => Box::pin(admin_reports::run(options)),
            Command::Overload(options) => Box::pin(overload::run(options)),
            Command::PgRestart(options) => Box::pin(restart::run(options)),
            Command::ManyTenants(options) => Box::pin(many::run(options)),
            Command::NoisyTenant(options) => Box::pin(noisy::run(options)),
            Command::Hostile(options) => Box::pin(hostile::run(options)),
            Command::Citus(options) => Box::pin(citus::run(options)),
            Command::ClaimsFile(options) => Box::pin(claims_file::run(options)),
        };
    let result = runtime.block_on(until_stopped(scenario));
    result?;
    report::finish(name)?;
    Ok(())
}

/// Runs `scenario` until it ends or the process is told to stop (SIGINT or
/// SIGTERM). Told to stop, the scenario is dropped, and with it the stack
/// it started: its private PostgreSQL stops too, rather than outliving
/// the run. A scenario inside a blocking call (a pgbench run) stops when
/// that call returns.
async fn until_stopped(
    scenario: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = scenario => result,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted (SIGINT): the run stopped, and its PostgreSQL with it"),
        _ = terminate.recv() => anyhow::bail!("terminated (SIGTERM): the run stopped, and its PostgreSQL with it"),
    }
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Steady(_) => "steady",
            Command::MorningRush(_) => "morning-rush",
            Command::Spike(_) => "spike",
            Command::Master(_) => "master",
            Command::Migrate(_) => "migrate",
            Command::MigrateUnderLoad(_) => "migrate-under-load",
            Command::RolloutUnderLoad(_) => "rollout-under-load",
            Command::AdminReports(_) => "admin-reports",
            Command::Overload(_) => "overload",
            Command::PgRestart(_) => "pg-restart",
            Command::ManyTenants(_) => "many-tenants",
            Command::NoisyTenant(_) => "noisy-tenant",
            Command::Hostile(_) => "hostile",
            Command::Citus(_) => "citus",
            Command::ClaimsFile(_) => "claims-file",
        }
    }
}
