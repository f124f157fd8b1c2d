//! `recept master`: import, list, rollout, generate.

use std::fs;

use anyhow::{bail, Context};

use crate::audit::Actor;
use crate::config::Settings;
use crate::master;
use crate::pools::Role;
use crate::tenancy::Slug;

use super::tenants::operator_pools;
use super::{runtime, MasterCommand};

pub(super) fn master(settings: Settings, command: MasterCommand) -> anyhow::Result<()> {
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
                let summary = master::import_file(&pools, &file, &version, &Actor::operator()).await?;
                println!("imported release {} ({} items)", summary.version, summary.items);
            }
            MasterCommand::ImportOfficial { dir, version } => {
                let (summary, read) =
                    master::import_official_dir(&pools, &dir, &version, &Actor::operator()).await?;
                for (file, columns) in &read.files {
                    println!("read {file} ({columns} columns)");
                }
                println!(
                    "imported release {} ({} items; {} procedures not priced in points and {} \
                     deleted rows left out)",
                    summary.version, summary.items, read.unpriced, read.deleted
                );
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
                let id = master::start_rollout(&pools, &version, &target, concurrency, &Actor::operator()).await?;
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
