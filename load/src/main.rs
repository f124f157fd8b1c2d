//! recept-load: benchmarks that start their own private PostgreSQL and
//! recept, drive recept, and print figures for load/RESULTS.md.
//!
//! Every run is bounded in time and count, talks only to loopback, and
//! cleans up after itself.

mod admin_reports;
mod many;
mod master;
mod migrate;
mod noisy;
mod overload;
mod restart;
mod stack;
mod stats;
mod traffic;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "recept-load", about = "Benchmarks for recept")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Master data: tenant creation with a full-size copy, a diff rollout
    /// across many tenants beside clinic traffic, cached price lookups.
    Master(master::Options),
    /// Migrations: creating tenants, a migration across all of them, a
    /// no-op run, and a migration beside clinic traffic.
    Migrate(migrate::Options),
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Master(options) => runtime.block_on(master::run(options)),
        Command::Migrate(options) => runtime.block_on(migrate::run(options)),
        Command::AdminReports(options) => runtime.block_on(admin_reports::run(options)),
        Command::Overload(options) => runtime.block_on(overload::run(options)),
        Command::PgRestart(options) => runtime.block_on(restart::run(options)),
        Command::ManyTenants(options) => runtime.block_on(many::run(options)),
        Command::NoisyTenant(options) => runtime.block_on(noisy::run(options)),
    }
}
