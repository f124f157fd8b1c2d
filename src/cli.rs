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
use crate::migrate::{migrate_all_tenants, prepare_control};
use crate::pools::{Pools, Role};
use crate::startup::Application;
use crate::telemetry;
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
    /// Apply control and tenant migrations to every tenant.
    Migrate,
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
    },
    /// List tenants.
    List,
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
        Command::CheckConfig => check_config(&settings),
        Command::Tenants(command) => runtime()?.block_on(tenants(settings, command)),
        Command::Migrate => runtime()?.block_on(migrate(settings)),
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

fn check_config(settings: &Settings) -> anyhow::Result<()> {
    settings.validate()?;
    println!("configuration is valid; effective settings:\n");
    println!("{}", toml::to_string_pretty(&settings.redacted())?);
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
        let summary = migrate_all_tenants(&pools).await?;
        if !summary.failed.is_empty() {
            bail!("tenant migrations failed: {:?}", summary.failed);
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
        } => {
            let slug = Slug::parse(&slug).map_err(|e| anyhow::anyhow!("slug `{slug}`: {e}"))?;
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                bail!("--name must be 1 to 200 characters");
            }
            let cluster = cluster.unwrap_or_else(|| settings.default_cluster().to_string());
            let tenant = create_tenant(&pools, &slug, name, &cluster).await?;
            println!(
                "created tenant {} on cluster {} (schema {})",
                tenant.slug, tenant.cluster, tenant.schema
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

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let pools = operator_pools(&settings).await?;
    let summary = migrate_all_tenants(&pools).await?;
    println!(
        "tenants migrated: {}, already current: {}, failed: {}",
        summary.migrated,
        summary.current,
        summary.failed.len()
    );
    for (slug, error) in &summary.failed {
        println!("  {slug}: {error}");
    }
    if !summary.failed.is_empty() {
        bail!("{} tenant(s) failed to migrate", summary.failed.len());
    }
    Ok(())
}
