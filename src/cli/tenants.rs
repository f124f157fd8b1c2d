//! `recept tenants`: create, list, purge, issue keys.

use anyhow::{bail, Context};

use crate::audit::Actor;
use crate::config::Settings;
use crate::migrate::prepare_control;
use crate::ops;
use crate::pools::{Pools, Role};
use crate::tenancy::{create_tenant, transfer, Registry, Slug, TenantStatus};

use super::TenantsCommand;

/// Validates settings and returns pools with the control schema current.
pub(super) async fn operator_pools(settings: &Settings) -> anyhow::Result<Pools> {
    settings.validate()?;
    let pools = Pools::build(settings)?;
    prepare_control(&pools).await?;
    Ok(pools)
}

pub(super) async fn tenants(settings: Settings, command: TenantsCommand) -> anyhow::Result<()> {
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
            let cluster = match cluster {
                Some(cluster) => cluster,
                None => crate::tenancy::place(&pools, &settings).await?,
            };
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
            let slug = parse_slug(&slug)?;
            let secrets = crate::tenancy::KeySecrets::from_settings(&settings.clinic);
            let key = ops::issue_key(&pools, &secrets, &slug, label, &Actor::operator()).await?;
            println!("{}", key.key);
        }
        TenantsCommand::RevokeKey { slug, id } => {
            let slug = parse_slug(&slug)?;
            let id = uuid::Uuid::parse_str(&id)
                .map_err(|_| anyhow::anyhow!("key id `{id}` is not a key id (a UUID)"))?;
            ops::revoke_key(&pools, &slug, id, &Actor::operator()).await?;
            println!(
                "revoked key {id} of {slug}; every host refuses it within clinic.key_cache_ttl_ms"
            );
        }
        TenantsCommand::Suspend { slug } => {
            set_status(&pools, &slug, TenantStatus::Suspended).await?;
        }
        TenantsCommand::Resume { slug } => {
            set_status(&pools, &slug, TenantStatus::Active).await?;
        }
        TenantsCommand::Delete { slug } => {
            set_status(&pools, &slug, TenantStatus::Deleted).await?;
        }
        TenantsCommand::Export { slug, out } => {
            let parsed = Slug::parse(&slug).map_err(|e| anyhow::anyhow!("slug `{slug}`: {e}"))?;
            let counts = match &out {
                Some(path) => {
                    let file = std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    let mut writer = std::io::BufWriter::new(file);
                    transfer::export(&pools, &parsed, &mut writer).await?
                }
                None => {
                    let mut writer = std::io::BufWriter::new(std::io::stdout().lock());
                    transfer::export(&pools, &parsed, &mut writer).await?
                }
            };
            let rows: u64 = counts.iter().map(|(_, n)| n).sum();
            eprintln!("exported {slug}: {} tables, {rows} rows", counts.len());
        }
        TenantsCommand::Move { slug, to } => {
            let parsed = Slug::parse(&slug).map_err(|e| anyhow::anyhow!("slug `{slug}`: {e}"))?;
            // Every serving host re-reads the tenant within its key cache's
            // lifetime: wait that long before copying.
            let settle = std::time::Duration::from_millis(settings.clinic.key_cache_ttl_ms + 500);
            let report =
                transfer::move_tenant(&pools, &parsed, &to, settle, &Actor::operator()).await?;
            let rows: u64 = report.tables.iter().map(|(_, n)| n).sum();
            println!(
                "moved {slug} from {} to {}: {} tables, {rows} rows verified; answered 503 for {:.1} s; \
                 the old copy {} stays until `recept tenants purge`",
                report.from,
                report.to,
                report.tables.len(),
                report.paused.as_secs_f64(),
                report.old_copy
            );
        }
        TenantsCommand::Import {
            file,
            as_slug,
            cluster,
        } => {
            let as_slug = as_slug
                .map(|s| Slug::parse(&s).map_err(|e| anyhow::anyhow!("--as `{s}`: {e}")))
                .transpose()?;
            let cluster = match cluster {
                Some(cluster) => cluster,
                None => crate::tenancy::place(&pools, &settings).await?,
            };
            let input = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let mut reader = std::io::BufReader::new(input);
            let (slug, counts) =
                transfer::import(&pools, &mut reader, as_slug, &cluster, &Actor::operator())
                    .await?;
            let rows: u64 = counts.iter().map(|(_, n)| n).sum();
            println!(
                "imported {slug} on {cluster}: {} tables, {rows} rows",
                counts.len()
            );
        }
    }
    Ok(())
}

fn parse_slug(slug: &str) -> anyhow::Result<Slug> {
    Slug::parse(slug).map_err(|e| anyhow::anyhow!("slug `{slug}`: {e}"))
}

/// Suspends, resumes or deletes a tenant, as `POST /admin/tenants/{slug}/…`
/// does.
async fn set_status(pools: &Pools, slug: &str, status: TenantStatus) -> anyhow::Result<()> {
    let slug = parse_slug(slug)?;
    let record = ops::set_status(pools, &slug, status, &Actor::operator()).await?;
    println!(
        "{slug} is {}; every host sees it within clinic.key_cache_ttl_ms",
        record.status.as_str()
    );
    Ok(())
}
