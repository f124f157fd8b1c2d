//! `recept dev`: the private PostgreSQL, demo data and the banner.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context};

use crate::config::{redact_url, Settings};
use crate::dev::{self, DevState};
use crate::migrate::RunOptions;
use crate::startup::Application;

use super::{migrate_with_progress, runtime, shutdown_signal};

pub(super) fn run_dev(base: Settings, state_dir: &Path, tenants_dir: &Path) -> anyhow::Result<()> {
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
