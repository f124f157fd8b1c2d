//! `recept claims`: the month's electronic claims files written from the
//! command line, for one tenant or every tenant of a cluster, and a file
//! checked by recept's own reader.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::clinic::{export_claims_uke, ClinicError, Month};
use crate::config::Settings;
use crate::pools::Role;
use crate::tenancy::{Registry, Slug, TenantRecord, TenantStatus};
use crate::uke::{self, Payer};

use super::tenants::operator_pools;
use super::{runtime, ClaimsCommand};

pub(super) fn claims(settings: Settings, command: ClaimsCommand) -> anyhow::Result<()> {
    match command {
        ClaimsCommand::Check { file } => check(&file),
        ClaimsCommand::Uke {
            month,
            payer,
            tenant,
            cluster,
            out,
        } => {
            let month = Month::parse(&month)
                .with_context(|| format!("--month `{month}` is not YYYY-MM"))?;
            let payer = Payer::parse(&payer)
                .with_context(|| format!("--payer `{payer}` is not shaho or kokuho"))?;
            runtime()?.block_on(async {
                let pools = operator_pools(&settings).await?;
                let tenants = match (tenant, cluster) {
                    (Some(slug), None) => {
                        let slug = Slug::parse(&slug)
                            .map_err(|e| anyhow::anyhow!("--tenant `{slug}`: {e}"))?;
                        let client = pools.control(Role::Admin).await?;
                        let tenant = Registry::find(&client, &slug)
                            .await?
                            .with_context(|| format!("no tenant `{slug}`"))?;
                        return one(&pools, &tenant, month, payer, &out).await;
                    }
                    (None, Some(cluster)) => {
                        if !pools.has_cluster(&cluster) {
                            bail!("no cluster named `{cluster}` in the configuration");
                        }
                        of_cluster(&pools, &cluster).await?
                    }
                    _ => bail!("name one tenant (--tenant SLUG) or a cluster (--cluster NAME)"),
                };
                every(&pools, &tenants, month, payer, &out).await
            })
        }
    }
}

/// The served tenants of `cluster`, by slug, read a page at a time.
async fn of_cluster(
    pools: &crate::pools::Pools,
    cluster: &str,
) -> anyhow::Result<Vec<TenantRecord>> {
    let client = pools.control(Role::Admin).await?;
    let mut found = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = Registry::list(&client, after.as_deref(), 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.slug.to_string());
        found.extend(
            page.into_iter()
                .filter(|t| t.cluster == cluster && t.status == TenantStatus::Active),
        );
    }
    Ok(found)
}

async fn file_of(
    pools: &crate::pools::Pools,
    tenant: &TenantRecord,
    month: Month,
    payer: Payer,
) -> Result<Vec<u8>, String> {
    let conn = pools
        .schema(&tenant.cluster, &tenant.schema)
        .await
        .map_err(|e| e.to_string())?;
    export_claims_uke(&conn, month, payer)
        .await
        .map_err(|e| match e {
            ClinicError::Invalid(fields) => fields
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        })
}

async fn one(
    pools: &crate::pools::Pools,
    tenant: &TenantRecord,
    month: Month,
    payer: Payer,
    out: &Path,
) -> anyhow::Result<()> {
    let file = file_of(pools, tenant, month, payer)
        .await
        .map_err(|problem| {
            anyhow::anyhow!("tenant {}: {problem}; nothing was written", tenant.slug)
        })?;
    std::fs::write(out, &file).with_context(|| format!("writing {}", out.display()))?;
    let read = uke::read(&file)?;
    println!(
        "wrote {} ({} claims, {} points, {} bytes)",
        out.display(),
        read.claims.len(),
        read.total_points,
        file.len()
    );
    Ok(())
}

/// Every tenant's file under `out/<slug>/RECEIPTC.UKE`, one tenant at a
/// time (one file in memory at once); a tenant that cannot make one is
/// reported and the others go on.
async fn every(
    pools: &crate::pools::Pools,
    tenants: &[TenantRecord],
    month: Month,
    payer: Payer,
    out: &Path,
) -> anyhow::Result<()> {
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(tenants.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} tenants  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (mut written, mut skipped) = (0usize, Vec::new());
    for tenant in tenants {
        match file_of(pools, tenant, month, payer).await {
            Ok(file) => {
                let dir: PathBuf = out.join(tenant.slug.as_str());
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                std::fs::write(dir.join("RECEIPTC.UKE"), &file)
                    .with_context(|| format!("writing into {}", dir.display()))?;
                written += 1;
            }
            Err(problem) => skipped.push(format!("{}: {problem}", tenant.slug)),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    for line in &skipped {
        println!("skipped {line}");
    }
    println!(
        "wrote {written} file(s) under {}; {} tenant(s) had none to write",
        out.display(),
        skipped.len()
    );
    Ok(())
}

/// Reads a file with recept's reader and says what it holds or what is
/// wrong with it.
pub(super) fn check(file: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let read = uke::read(&bytes)
        .with_context(|| format!("{} is not a valid claims file", file.display()))?;
    println!(
        "{}: payer {}, institution {}, billing month {}, {} claims, {} points",
        file.display(),
        read.payer,
        read.institution,
        read.billed,
        read.claims.len(),
        read.total_points
    );
    for (n, claim) in read.claims.iter().enumerate() {
        println!(
            "  {:>4}  {}  {}  insurer {}  {} day(s)  {} points{}",
            n + 1,
            claim.kind,
            claim.month,
            claim.insurer,
            claim.days,
            claim.points,
            claim
                .burden
                .map(|b| format!("  burden {b} yen"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
