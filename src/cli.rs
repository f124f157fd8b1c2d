//! The command line (the only module that knows clap): `serve`, `dev`,
//! `check-config`, `tenants` and `migrate`. Each subcommand is a thin call
//! into the library.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use crate::config::{redact_url, Settings};
use crate::dev::{self, DevState};
use crate::master;
use crate::migrate::{self, prepare_control, RunOptions};
use crate::pools::{Pools, Role};
use crate::startup::Application;
use crate::telemetry;
use crate::tenancy::audit::Actor;
use crate::tenancy::{create_tenant, IssuedKey, Registry, Slug};

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
}

#[derive(Debug, Subcommand)]
enum MasterCommand {
    /// Import a release CSV (code,kind,name,points,unit_price_yen,valid_from,valid_to).
    Import {
        file: PathBuf,
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
    /// Issue a clinic API key for a tenant; the key is printed once.
    IssueKey {
        slug: String,
        #[arg(long)]
        label: Option<String>,
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
    let settings = Settings::load(cli.config.as_deref())?;
    telemetry::init(settings.server.log_format);
    match cli.command {
        Command::Serve => runtime()?.block_on(serve(settings)),
        Command::Dev { state_dir, tenants } => run_dev(settings, &state_dir, &tenants),
        Command::CheckConfig => runtime()?.block_on(check_config(&settings)),
        Command::Tenants(command) => runtime()?.block_on(tenants(settings, command)),
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
            runtime()?.block_on(migrate(settings, options, status))
        }
        Command::Master(command) => master(settings, command),
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
    println!("connection budget per cluster:");
    let pools = Pools::build(settings)?;
    let mut problems = Vec::new();
    for (budget, error) in crate::pools::budget::measure(&pools, settings).await {
        let allowed = budget
            .allowed
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        println!(
            "  {}: {} host(s) x (clinic {} + admin {} + migrate {} + 1) = {} needed, {} allowed{}",
            budget.cluster,
            budget.hosts,
            budget.clinic,
            budget.admin,
            budget.migration,
            budget.needed,
            allowed,
            error
                .map(|e| format!(" (not reachable: {e})"))
                .unwrap_or_default()
        );
        problems.extend(budget.problem());
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

fn run_dev(base: Settings, state_dir: &Path, tenants_dir: &Path) -> anyhow::Result<()> {
    let manifests = dev::read_manifests(tenants_dir)?;
    fs::create_dir_all(state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
    let state_file = state_dir.join("state.toml");
    let mut state = DevState::load_or_create(&state_file)?;
    state.save(&state_file)?;

    // Started on this (the main) thread: the kernel stops PostgreSQL if
    // this thread ends without stopping it.
    let pg = dev::start_cluster(state_dir, &state)?;
    let outcome = runtime()?.block_on(async {
        dev::ensure_database(&pg, dev::DATABASE)
            .await
            .with_context(|| {
                format!(
                    "preparing the private PostgreSQL (if {} was deleted while its data was kept, \
                 remove {} and run again)",
                    state_file.display(),
                    state_dir.display()
                )
            })?;
        let settings = dev::dev_settings(base, &pg, &state);
        let app = Application::build(settings.clone()).await?;
        let pools = app.state().pools.clone();
        let options = RunOptions {
            concurrency: settings.migrate.pool_size,
            retries: settings.migrate.retries,
            ..RunOptions::default()
        };
        let summary = migrate_with_progress(&pools, &options).await?;
        if !summary.failed.is_empty() {
            bail!(
                "{} tenant(s) failed to migrate; see above",
                summary.failed.len()
            );
        }
        let imported = dev::ensure_sample_releases(&pools, &tenants_dir.join("master")).await?;
        if !imported.is_empty() {
            tracing::info!(releases = ?imported, "imported sample master releases");
        }
        let keys = dev::ensure_demo_tenants(&pools, &settings, &manifests, &mut state).await?;
        state.save(&state_file)?;
        print_banner(&app, &settings, &pg, &keys, &state);
        app.run_until(shutdown_signal()).await
    });
    let stopped = pg.stop().context("stopping the private PostgreSQL");
    outcome.and(stopped)
}

fn print_banner(
    app: &Application,
    settings: &Settings,
    pg: &dev::PrivatePostgres,
    keys: &[(String, String)],
    state: &DevState,
) {
    let clinic = format!(
        "http://{}",
        with_port(&settings.server.clinic_listen, app.clinic_port())
    );
    let admin = format!(
        "http://{}",
        with_port(&settings.server.admin_listen, app.admin_port())
    );
    println!();
    println!("recept dev is serving");
    println!("  clinic API   {clinic}/v1");
    println!("  admin API    {admin}/admin");
    println!("  admin token  {}", state.admin_token);
    println!(
        "  PostgreSQL   {} (data in {})",
        redact_url(&pg.url(dev::DATABASE)),
        pg.data_dir().display()
    );
    for (slug, key) in keys {
        println!("  demo tenant  {slug}: key {key}");
    }
    println!();
    if let Some((_, key)) = keys.first() {
        println!("Try:");
        println!("  curl -H 'Authorization: Bearer {key}' {clinic}/v1/tenant");
    }
    println!(
        "  curl -H 'Authorization: Bearer {}' {admin}/admin/tenants",
        state.admin_token
    );
    println!();
    println!("Press Ctrl-C to stop.");
}

fn with_port(listen: &str, port: u16) -> String {
    match listen.rsplit_once(':') {
        Some((host, _)) => format!("{host}:{port}"),
        None => listen.to_string(),
    }
}

/// Validates settings and returns pools with the control schema current.
async fn operator_pools(settings: &Settings) -> anyhow::Result<Pools> {
    settings.validate()?;
    let pools = Pools::build(settings)?;
    prepare_control(&pools).await?;
    Ok(pools)
}

async fn tenants(settings: Settings, command: TenantsCommand) -> anyhow::Result<()> {
    let pools = operator_pools(&settings).await?;
    match command {
        TenantsCommand::Create {
            slug,
            name,
            cluster,
            master_release,
        } => {
            let slug = Slug::parse(&slug).map_err(|e| anyhow::anyhow!("slug `{slug}`: {e}"))?;
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                bail!("--name must be 1 to 200 characters");
            }
            let cluster = cluster.unwrap_or_else(|| settings.default_cluster().to_string());
            let tenant = create_tenant(
                &pools,
                &slug,
                name,
                &cluster,
                master_release.as_deref(),
                &Actor::operator(),
            )
            .await?;
            println!(
                "created tenant {} on cluster {} (schema {}, master release {})",
                tenant.slug,
                tenant.cluster,
                tenant.schema,
                tenant.master_release.as_deref().unwrap_or("none")
            );
        }
        TenantsCommand::List => {
            let client = pools.control(Role::Admin).await?;
            let mut after: Option<String> = None;
            println!("{:<40} {:<10} {:<12} name", "slug", "status", "cluster");
            loop {
                let page = Registry::list(&client, after.as_deref(), 500).await?;
                for t in &page {
                    println!(
                        "{:<40} {:<10} {:<12} {}",
                        t.slug,
                        t.status.as_str(),
                        t.cluster,
                        t.name
                    );
                }
                match page.last() {
                    Some(last) if page.len() == 500 => after = Some(last.slug.to_string()),
                    _ => break,
                }
            }
        }
        TenantsCommand::Purge { grace_days } => {
            if grace_days < 0 {
                bail!("--grace-days must be 0 or more");
            }
            let purged =
                crate::tenancy::purge_deleted(&pools, grace_days, &Actor::operator()).await?;
            for slug in &purged {
                println!("purged {slug}");
            }
            println!("{} tenant(s) purged", purged.len());
        }
        TenantsCommand::IssueKey { slug, label } => {
            let parsed = Slug::parse(&slug).map_err(|e| anyhow::anyhow!("slug `{slug}`: {e}"))?;
            let client = pools.control(Role::Admin).await?;
            let tenant = Registry::find(&client, &parsed)
                .await?
                .with_context(|| format!("no tenant `{slug}`"))?;
            let key = IssuedKey::generate();
            Registry::insert_key(&client, tenant.id, &key, label.as_deref()).await?;
            println!("{}", key.secret);
        }
    }
    Ok(())
}

async fn migrate(settings: Settings, options: RunOptions, status_only: bool) -> anyhow::Result<()> {
    settings.validate()?;
    let pools = Pools::build(&settings)?;
    if status_only {
        prepare_control(&pools).await?;
        let client = pools.control(Role::Admin).await?;
        print_status(&migrate::status(&client).await?);
        return Ok(());
    }
    let summary = migrate_with_progress(&pools, &options).await?;
    if !summary.failed.is_empty() {
        let names: Vec<&str> = summary.failed.iter().map(|f| f.slug.as_str()).collect();
        bail!(
            "{} tenant(s) failed and stay at their previous version: {}; fix the cause and run again",
            names.len(),
            names.join(", ")
        );
    }
    Ok(())
}

/// A run with a progress bar on a terminal, one line per tenant otherwise.
pub async fn migrate_with_progress(
    pools: &Pools,
    options: &RunOptions,
) -> anyhow::Result<migrate::RunSummary> {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::hidden();
    let set = migrate::MigrationSet::embedded();
    let summary = migrate::run(pools, &set, options, |event| match event {
        migrate::Event::Planned { pending, current } => {
            let verb = if options.dry_run {
                "would migrate"
            } else {
                "migrating"
            };
            println!(
                "target version {}: {verb} {pending} tenant(s), {current} already current",
                set.target()
            );
            if terminal && !options.dry_run {
                bar.set_length(pending as u64);
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {pos}/{len} tenants  {per_sec}  eta {eta}  {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
            }
        }
        migrate::Event::Tenant(t) => {
            let line = format!(
                "{:<40} {:<8} v{} -> v{}  {:.0} ms{}",
                t.slug,
                t.state,
                t.version_before,
                t.version_after,
                t.duration_ms,
                t.error
                    .as_deref()
                    .map(|e| format!("  {e}"))
                    .unwrap_or_default()
            );
            if terminal && !options.dry_run {
                if t.error.is_some() {
                    bar.println(line);
                }
                bar.inc(1);
            } else {
                println!("{line}");
            }
        }
    })
    .await?;
    bar.finish_and_clear();
    println!(
        "{}: {} migrated, {} already current, {} failed in {:.1} s",
        if options.dry_run { "dry run" } else { "done" },
        summary.migrated,
        summary.current,
        summary.failed.len(),
        summary.elapsed_s
    );
    Ok(summary)
}

fn print_status(status: &migrate::MigrationStatus) {
    println!(
        "this binary's tenant schema version: {}",
        status.binary_version
    );
    match &status.latest_run {
        Some(run) => println!(
            "latest run {} to v{}: started {}, {}; {} tenants, {} migrated, {} current, {} failed",
            run.id,
            run.target_version,
            run.started_at,
            run.finished_at
                .map(|f| format!("finished {f}"))
                .unwrap_or_else(|| "not finished".into()),
            run.tenants,
            run.migrated,
            run.current,
            run.failed
        ),
        None => println!("no run yet"),
    }
    for v in &status.versions {
        println!("  v{:<4} {} tenant(s)", v.version, v.tenants);
    }
    if !status.behind.is_empty() {
        println!("behind this binary: {}", status.behind.join(", "));
    }
    for f in &status.failed {
        println!("  failed: {} (at v{}): {}", f.slug, f.version, f.error);
    }
}

fn master(settings: Settings, command: MasterCommand) -> anyhow::Result<()> {
    if let MasterCommand::Generate {
        out,
        procedures,
        drugs,
        diseases,
        seed,
    } = &command
    {
        let revision = chrono::NaiveDate::from_ymd_opt(2026, 6, 1).expect("a valid date");
        let items = master::generate_release(*seed, *procedures, *drugs, *diseases, revision);
        fs::write(out, master::to_csv(&items))
            .with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {} items to {}", items.len(), out.display());
        return Ok(());
    }
    runtime()?.block_on(async {
        let pools = operator_pools(&settings).await?;
        match command {
            MasterCommand::Import { file, version } => {
                let summary = master::import_file(&pools, &file, &version).await?;
                println!("imported release {} ({} items)", summary.version, summary.items);
            }
            MasterCommand::List => {
                let client = pools.control(Role::Admin).await?;
                println!("{:<20} {:>8}  created", "version", "items");
                for r in master::list_releases(&client).await? {
                    println!("{:<20} {:>8}  {}", r.version, r.items, r.created_at);
                }
            }
            MasterCommand::Rollout {
                version,
                tenants,
                all: _,
                concurrency,
            } => {
                let target = if tenants.is_empty() {
                    master::RolloutTarget::All
                } else {
                    let slugs = tenants
                        .iter()
                        .map(|s| Slug::parse(s).map_err(|e| anyhow::anyhow!("tenant `{s}`: {e}")))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    master::RolloutTarget::Tenants(slugs)
                };
                let concurrency = concurrency.unwrap_or_else(|| master::default_concurrency(settings.admin.pool_size));
                if concurrency == 0 || concurrency > settings.admin.pool_size {
                    bail!(
                        "--concurrency must be 1 to admin.pool_size ({})",
                        settings.admin.pool_size
                    );
                }
                let id = master::start_rollout(&pools, &version, &target).await?;
                let started = std::time::Instant::now();
                let report = master::run_rollout(&pools, id, concurrency, |t| {
                    println!(
                        "{:<40} {:<8} {}",
                        t.slug,
                        t.state,
                        t.error.as_deref().unwrap_or("")
                    );
                })
                .await?;
                let c = &report.counts;
                println!(
                    "rollout {id} to {version}: {} upgraded, {} already current, {} failed in {:.1} s",
                    c.done,
                    c.skipped,
                    c.failed,
                    started.elapsed().as_secs_f64()
                );
                if c.failed > 0 {
                    bail!("{} tenant(s) failed; run the rollout again to resume", c.failed);
                }
            }
            MasterCommand::Generate { .. } => unreachable!("handled above"),
        }
        Ok(())
    })
}
