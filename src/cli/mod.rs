//! The command line (the only module that knows clap): `serve`, `dev`,
//! `check-config`, `tenants` and `migrate`. Each subcommand is a thin call
//! into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::migrate::RunOptions;
use crate::pools::Pools;
use crate::startup::Application;
use crate::telemetry;
use crate::tenancy::Slug;

mod claims;
mod dev;
mod master;
mod migrations;
mod tenants;

pub use migrations::migrate_with_progress;

#[derive(Debug, Parser)]
#[command(name = "recept", version, about = "Multi-tenant clinic billing server")]
pub struct Cli {
    /// A TOML configuration file (environment variables RECEPT__SECTION__KEY override it).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the clinic and admin APIs against the configured clusters.
    Serve,
    /// Serve on a private PostgreSQL started from the installed binaries,
    /// with the demo tenants of tenants/*.toml.
    Dev {
        /// Where the private cluster and its secrets are kept.
        #[arg(long, default_value = ".recept/dev")]
        state_dir: PathBuf,
        /// Directory of tenant manifests (*.toml) to create as demo tenants.
        #[arg(long, default_value = "tenants")]
        tenants: PathBuf,
    },
    /// Validate the configuration and print the effective settings.
    CheckConfig,
    /// Manage tenants.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Bring the control schema and tenants' schemas up to date.
    Migrate {
        /// Only these tenants (repeatable); every tenant when absent.
        #[arg(long = "tenant", value_name = "SLUG")]
        tenants: Vec<String>,
        /// Tenants migrated at once (default and maximum: migrate.pool_size).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Show what would be migrated; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Migrate this tenant first and stop if it fails.
        #[arg(long, value_name = "SLUG")]
        canary: Option<String>,
        /// Print the latest run and each tenant version instead of migrating.
        #[arg(long, conflicts_with_all = ["tenants", "dry_run", "canary", "concurrency"])]
        status: bool,
    },
    /// Master data releases and rollouts.
    #[command(subcommand)]
    Master(MasterCommand),
    /// The month's electronic claims files (RECEIPTC.UKE), and checking one.
    #[command(subcommand)]
    Claims(ClaimsCommand),
    /// Print the clinic API's OpenAPI document (as served at
    /// /v1/openapi.json), e.g. to generate a client from it.
    Openapi,
}

#[derive(Debug, Subcommand)]
enum ClaimsCommand {
    /// Write the month's claims file for one payer: one tenant's into OUT,
    /// or every served tenant of a cluster's as OUT/<slug>/RECEIPTC.UKE.
    Uke {
        /// The month of care, YYYY-MM.
        #[arg(long)]
        month: String,
        /// `shaho` (社会保険診療報酬支払基金) or `kokuho` (国民健康保険団体連合会).
        #[arg(long)]
        payer: String,
        #[arg(long, conflicts_with = "cluster")]
        tenant: Option<String>,
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Read a claims file and check it: bytes, record order, fields, totals.
    Check { file: PathBuf },
}

#[derive(Debug, Subcommand)]
enum MasterCommand {
    /// Import a release CSV (code,kind,name,points,unit_price_yen,valid_from,valid_to).
    Import {
        file: PathBuf,
        #[arg(long)]
        version: String,
    },
    /// Import the national basic master files of DIR (s_*.csv procedures,
    /// y_*.csv drugs, b_*.csv diseases; Shift_JIS) as one release.
    ImportOfficial {
        dir: PathBuf,
        #[arg(long)]
        version: String,
    },
    /// List releases, newest first.
    List,
    /// Upgrade tenants' copies to a release, applying only the difference.
    Rollout {
        version: String,
        /// Only these tenants (repeatable); every tenant when absent.
        #[arg(long = "tenant", value_name = "SLUG", conflicts_with = "all")]
        tenants: Vec<String>,
        /// Every tenant that is not deleted (the default).
        #[arg(long)]
        all: bool,
        /// Tenants upgraded at once (default: one per core, at most admin.pool_size).
        #[arg(long)]
        concurrency: Option<usize>,
    },
    /// Write a deterministic full-size release CSV for load tests.
    Generate {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        procedures: usize,
        #[arg(long, default_value_t = 20_000)]
        drugs: usize,
        #[arg(long, default_value_t = 25_000)]
        diseases: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Debug, Subcommand)]
enum TenantsCommand {
    /// Create a tenant: registry row, schema and migrations, all or nothing.
    Create {
        slug: String,
        #[arg(long)]
        name: String,
        /// The cluster to place it on (default: control.default_cluster).
        #[arg(long)]
        cluster: Option<String>,
        /// The master release to copy (default: the newest).
        #[arg(long)]
        master_release: Option<String>,
    },
    /// List tenants.
    List,
    /// Drop the schemas of tenants deleted longer ago than the grace period.
    Purge {
        #[arg(long, default_value_t = 30)]
        grace_days: i32,
    },
    /// Suspend a tenant: its keys get 403 until it is resumed.
    Suspend { slug: String },
    /// Resume a suspended tenant.
    Resume { slug: String },
    /// Delete a tenant (a soft delete: its keys stop working, `purge` drops
    /// its schema after the grace period).
    Delete { slug: String },
    /// Revoke one of a tenant's API keys, by its id.
    RevokeKey { slug: String, id: String },
    /// Issue a clinic API key for a tenant; the key is printed once.
    IssueKey {
        slug: String,
        #[arg(long)]
        label: Option<String>,
    },
    /// Write a consistent snapshot of one tenant's data (to standard output,
    /// or --out FILE).
    Export {
        slug: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Move a tenant to another cluster: its requests get 503 while its
    /// data is copied and verified; the old copy is kept until purge.
    Move {
        slug: String,
        #[arg(long)]
        to: String,
    },
    /// Create a tenant from an export, with exactly its rows.
    Import {
        file: PathBuf,
        /// Another slug for it (default: the exported one).
        #[arg(long = "as", value_name = "SLUG")]
        as_slug: Option<String>,
        /// The cluster to place it on (default: control.default_cluster).
        #[arg(long)]
        cluster: Option<String>,
    },
}

/// Runs the command line; errors are printed as one message, never a panic.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("recept: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Openapi = cli.command {
        // Needs no configuration: the document is the same for every host.
        println!("{}", crate::http::openapi::document_json());
        return Ok(());
    }
    if let Command::Claims(ClaimsCommand::Check { file }) = &cli.command {
        // Reads a file only: no configuration needed.
        return claims::check(file);
    }
    let settings = Settings::load(cli.config.as_deref())?;
    let _telemetry = telemetry::init(settings.server.log_format);
    match cli.command {
        Command::Serve => runtime()?.block_on(serve(settings)),
        Command::Dev { state_dir, tenants } => dev::run_dev(settings, &state_dir, &tenants),
        Command::CheckConfig => runtime()?.block_on(check_config(&settings)),
        Command::Openapi => unreachable!("answered before the settings are read"),
        Command::Tenants(command) => runtime()?.block_on(tenants::tenants(settings, command)),
        Command::Migrate {
            tenants,
            concurrency,
            dry_run,
            canary,
            status,
        } => {
            let parse =
                |s: &String| Slug::parse(s).map_err(|e| anyhow::anyhow!("tenant `{s}`: {e}"));
            let tenants = tenants
                .iter()
                .map(parse)
                .collect::<anyhow::Result<Vec<_>>>()?;
            let canary = canary.as_ref().map(parse).transpose()?;
            let concurrency = concurrency.unwrap_or(settings.migrate.pool_size);
            if concurrency == 0 || concurrency > settings.migrate.pool_size {
                bail!(
                    "--concurrency must be 1 to migrate.pool_size ({})",
                    settings.migrate.pool_size
                );
            }
            let options = RunOptions {
                tenants,
                concurrency,
                dry_run,
                canary,
                retries: settings.migrate.retries,
            };
            runtime()?.block_on(migrations::migrate(settings, options, status))
        }
        Command::Master(command) => master::master(settings, command),
        Command::Claims(command) => claims::claims(settings, command),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    tracing::info!(settings = ?settings.redacted(), "starting");
    let app = Application::build(settings).await?;
    tracing::info!(
        clinic_port = app.clinic_port(),
        admin_port = app.admin_port(),
        "serving"
    );
    app.run_until(shutdown_signal()).await
}

async fn check_config(settings: &Settings) -> anyhow::Result<()> {
    settings.validate()?;
    println!("configuration is valid; effective settings:\n");
    println!("{}", toml::to_string_pretty(&settings.redacted())?);
    if let Some(memory) = settings.memory_budget() {
        println!("{}\n", memory.describe());
    }
    println!("connection budget per cluster:");
    let pools = Pools::build(settings)?;
    let mut problems = Vec::new();
    for (budget, error) in crate::pools::budget::measure(&pools, settings).await {
        let allowed = budget
            .allowed
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        println!(
            "  {}: {} host(s) x (clinic {} + admin {} + migrate {} + keys {} + 1) = {} needed, {} allowed{}",
            budget.cluster,
            budget.hosts,
            budget.clinic,
            budget.admin,
            budget.migration,
            budget.keys,
            budget.needed,
            allowed,
            error
                .map(|e| format!(" (not reachable: {e})"))
                .unwrap_or_default()
        );
        if let Some(replica) = &budget.replica {
            println!(
                "  {} replica: {} host(s) x report {} = {} needed, {} allowed{}",
                budget.cluster,
                budget.hosts,
                replica.report,
                replica.needed,
                replica
                    .allowed
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "unknown".into()),
                replica
                    .error
                    .as_ref()
                    .map(|e| format!(" (not reachable: {e})"))
                    .unwrap_or_default()
            );
        }
        problems.extend(budget.problem());
    }
    for pool in pools
        .status()
        .iter()
        .filter(|p| p.role == crate::pools::Role::Clinic.application_name())
    {
        let shares: Vec<String> = pool
            .by_worker
            .iter()
            .map(|s| s.max_size.to_string())
            .collect();
        let active: Vec<String> = pool
            .by_worker
            .iter()
            .map(|s| s.max_active.to_string())
            .collect();
        println!(
            "  {}: clinic connections by worker (server.workers {}): {}, of which in use at once: {}",
            pool.cluster,
            pool.shards,
            shares.join(" + "),
            active.join(" + ")
        );
    }
    pools.close();
    if let Some(problem) = problems.first() {
        bail!("the connection budget does not fit: {problem}");
    }
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
