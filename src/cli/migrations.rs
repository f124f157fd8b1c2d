//! `recept migrate`: runs with progress, and `--status`.

use anyhow::bail;

use crate::config::Settings;
use crate::migrate::{self, prepare_control, RunOptions};
use crate::pools::{Pools, Role};

pub(super) async fn migrate(
    settings: Settings,
    options: RunOptions,
    status_only: bool,
) -> anyhow::Result<()> {
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
