//! The admin-isolation benchmark: clinic traffic at a steady rate in
//! alternating windows, alone, beside heavy cross-tenant admin reports read
//! on a streaming replica (each running into its statement timeout), beside
//! a busy loop that takes as much CPU as those reports did and touches no
//! database, and beside the same reports on the primary. On one machine the
//! replica shares the CPUs; the busy loop tells what of the clinics' loss is
//! the machine's and what the database's.

use crate::out;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use recept::audit::Actor;
use recept::names::quote_ident;
use recept::pools::Role;
use recept::tenancy::{create_tenant, Slug};

use crate::stack::Stack;
use crate::stats::Latencies;
use crate::traffic;

#[derive(Args, Clone)]
pub struct Options {
    /// Tenants the reports cover.
    #[arg(long, default_value_t = 200)]
    tenants: usize,
    /// Encounters per tenant in the reported month.
    #[arg(long, default_value_t = 3000)]
    encounters: usize,
    /// Clinic requests per second (open loop).
    #[arg(long, default_value_t = 400)]
    rate: u32,
    /// Length of each window; windows alone and beside reports alternate,
    /// so that drift in the machine's speed falls on both alike.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds of four windows (alone, replica reports, busy loop, primary
    /// reports; each round starts one later).
    #[arg(long, default_value_t = 4)]
    rounds: u32,
    /// The admin statement timeout the reports run into.
    #[arg(long, default_value_t = 200)]
    admin_timeout_ms: u64,
}

/// What runs beside the clinic's traffic in a window.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Beside {
    Nothing,
    /// Reports through recept, read on the replica.
    ReplicaReports,
    /// A busy loop on recept's CPUs, as much CPU as the replica's reports
    /// took, touching no database.
    EqualCpu,
    /// Reports through a recept without the replica: on the primary.
    PrimaryReports,
}

impl Beside {
    const ALL: [Beside; 4] = [
        Beside::Nothing,
        Beside::ReplicaReports,
        Beside::EqualCpu,
        Beside::PrimaryReports,
    ];

    fn name(self) -> &'static str {
        match self {
            Beside::Nothing => "clinic alone",
            Beside::ReplicaReports => "beside reports on the replica",
            Beside::EqualCpu => "beside a busy loop of the reports' CPU",
            Beside::PrimaryReports => "beside reports on the primary",
        }
    }
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let stack = Stack::start_with_replica(|s| {
        s.clinic.pool_size = 16;
        s.admin.pool_size = 2;
        s.admin.statement_timeout_ms = o.admin_timeout_ms;
        s.admin.replica_statement_timeout_ms = o.admin_timeout_ms;
        s.server.workers = 2;
    })
    .await?;
    let replica = stack.replica.as_ref().expect("the replica");
    crate::pin::postgres(replica.data_dir())?;
    let replica_pid = postmaster_pid(replica.data_dir())?;
    // The same recept without the replica, for reports on the primary.
    let primary_admin = stack
        .another_server(|s| {
            s.clusters
                .get_mut("main")
                .expect("cluster main")
                .replica_url = None;
        })
        .await?;
    let pools = stack.pools.clone();
    out!(
        "recept-load admin-reports: {} tenants x {} encounters, clinic {} req/s, report timeout {} ms, \
         reports on a streaming replica of the same machine",
        o.tenants, o.encounters, o.rate, o.admin_timeout_ms
    );
    crate::stack::import_sample_release(&pools).await?;
    let slugs: Vec<Slug> = (0..o.tenants)
        .map(|i| Slug::parse(&format!("clinic_{i:05}")).expect("a valid slug"))
        .collect();
    let started = Instant::now();
    let encounters = o.encounters as i32;
    let made: Vec<anyhow::Result<()>> = futures::stream::iter(slugs.iter().cloned())
        .map(|slug| {
            let pools = pools.clone();
            async move {
                create_tenant(&pools, &slug, "Busy clinic", "main", Some("2026-04"), &Actor::operator())
                    .await?;
                // Months of visits, written straight into the tenant's schema.
                let s = quote_ident(&slug.schema_name());
                let client = pools.get("main", Role::Migration).await?;
                client
                    .execute(
                        &format!(
                            "WITH p AS (INSERT INTO {s}.patients (id, name, birth_date, sex) \
                               VALUES (gen_random_uuid(), '負荷 花子', '1960-01-01', 'female') RETURNING id) \
                             INSERT INTO {s}.encounters (id, patient_id, date, insurer_number, copay_rate, \
                               total_points, charge_yen) \
                             SELECT gen_random_uuid(), p.id, date '2026-05-01' + (g % 31), '06132013', 30, \
                               100 + g % 50, 300 FROM p, generate_series(1, $1) g"
                        ),
                        &[&encounters],
                    )
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(2)
        .collect()
        .await;
    for result in made {
        result?;
    }
    pools
        .get("main", Role::Migration)
        .await?
        .batch_execute("ANALYZE")
        .await?;
    let clinics = traffic::clinics(&stack, &slugs[..slugs.len().min(20)]).await?;
    wait_replayed(
        &stack.database_url,
        stack.replica_url.as_deref().unwrap_or_default(),
    )
    .await?;
    out!("set-up: {:.1}s", started.elapsed().as_secs_f64());

    let window = Duration::from_secs(o.seconds);
    traffic::open_loop(&stack.clinic, &clinics, o.rate, Duration::from_secs(3)).await;
    // How much CPU the replica's reports take: one window of them alone
    // first, then every window of them, averaged.
    let calibration = with_reports(&stack.admin, &stack.admin_token, || async {
        let before = server_cpu_seconds(replica_pid);
        tokio::time::sleep(window).await;
        server_cpu_seconds(replica_pid) - before
    })
    .await;
    let mut replica_cpu = vec![calibration.0 / window.as_secs_f64()];
    let mut latencies: Vec<Latencies> = Beside::ALL.iter().map(|_| Latencies::default()).collect();
    let mut answers: Vec<(Vec<f64>, u32)> = Beside::ALL.iter().map(|_| (Vec::new(), 0)).collect();
    let steal = crate::stats::cpu_ticks();
    for round in 0..o.rounds as usize {
        // Each round starts one kind later, so that no kind always
        // follows the same other one.
        for step in 0..Beside::ALL.len() {
            let i = (round + step) % Beside::ALL.len();
            let run = || traffic::open_loop(&stack.clinic, &clinics, o.rate, window);
            let measured = match Beside::ALL[i] {
                Beside::Nothing => run().await,
                Beside::ReplicaReports => {
                    let before = server_cpu_seconds(replica_pid);
                    let (measured, (timings, other)) =
                        with_reports(&stack.admin, &stack.admin_token, run).await;
                    replica_cpu
                        .push((server_cpu_seconds(replica_pid) - before) / window.as_secs_f64());
                    answers[i].0.extend(timings);
                    answers[i].1 += other;
                    measured
                }
                Beside::EqualCpu => {
                    let duty = replica_cpu.iter().sum::<f64>() / replica_cpu.len() as f64;
                    let stop = Arc::new(AtomicBool::new(false));
                    let burners = burn(duty, stop.clone())?;
                    let measured = run().await;
                    stop.store(true, Ordering::SeqCst);
                    for burner in burners {
                        let _ = burner.join();
                    }
                    measured
                }
                Beside::PrimaryReports => {
                    let (measured, (timings, other)) =
                        with_reports(&primary_admin, &stack.admin_token, run).await;
                    answers[i].0.extend(timings);
                    answers[i].1 += other;
                    measured
                }
            };
            latencies[i].merge(&measured);
        }
    }
    let steal = crate::stats::steal_percent(steal, crate::stats::cpu_ticks());
    let duty = replica_cpu.iter().sum::<f64>() / replica_cpu.len() as f64;
    out!(
        "{} rounds of {} windows of {} s; the replica's reports took {:.2} CPUs on average (the busy loop ran at that duty); CPU steal {}",
        o.rounds,
        Beside::ALL.len(),
        o.seconds,
        duty,
        steal.map_or("unknown".into(), |s| format!("{s:.1} %"))
    );
    crate::report::figure("replica reports' CPUs", duty);
    for (i, kind) in Beside::ALL.iter().enumerate() {
        out!("{}: {}", kind.name(), latencies[i].summary());
        crate::report::latencies(kind.name(), &latencies[i]);
        let (timings, other) = &mut answers[i];
        if *kind == Beside::ReplicaReports || *kind == Beside::PrimaryReports {
            timings.sort_by(f64::total_cmp);
            let limit = o.admin_timeout_ms as f64;
            let within = timings.iter().filter(|t| **t <= limit * 1.1).count();
            out!(
                "  reports: {} answered 504 (median {:.0} ms, {} within 10% of {limit:.0} ms), {other} other answers",
                timings.len(),
                timings.get(timings.len() / 2).copied().unwrap_or(0.0),
                within
            );
        }
    }
    let p99 =
        |kind: Beside| latencies[Beside::ALL.iter().position(|k| *k == kind).unwrap_or(0)].ms(0.99);
    for (name, over, under) in [
        (
            "p99 beside replica reports / beside the busy loop (target <= 1.1)",
            Beside::ReplicaReports,
            Beside::EqualCpu,
        ),
        (
            "p99 beside primary reports / beside the busy loop",
            Beside::PrimaryReports,
            Beside::EqualCpu,
        ),
        (
            "p99 beside replica reports / alone",
            Beside::ReplicaReports,
            Beside::Nothing,
        ),
        (
            "p99 beside primary reports / alone",
            Beside::PrimaryReports,
            Beside::Nothing,
        ),
        (
            "p99 beside the busy loop / alone",
            Beside::EqualCpu,
            Beside::Nothing,
        ),
    ] {
        let ratio = p99(over) / p99(under).max(0.001);
        out!("{name}: {ratio:.2}");
        crate::report::figure(name, (ratio * 100.0).round() / 100.0);
    }
    Ok(())
}

/// Runs `during` while one admin client runs reports back to back on
/// `admin`: what `during` returned, and the reports' answers.
async fn with_reports<F, T>(
    admin: &str,
    token: &str,
    during: impl FnOnce() -> F,
) -> (T, (Vec<f64>, u32))
where
    F: std::future::Future<Output = T>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let reports = tokio::spawn(reports_until(
        admin.to_string(),
        token.to_string(),
        stop.clone(),
    ));
    let value = during().await;
    stop.store(true, Ordering::SeqCst);
    let answers = reports.await.unwrap_or_default();
    (value, answers)
}

/// Busy loops on recept's CPUs (with `--pin`; anywhere without) at `cpus`
/// CPUs' worth of duty in all, until `stop`: one thread per whole CPU, each
/// spinning its share of every 10 ms and sleeping the rest.
fn burn(cpus: f64, stop: Arc<AtomicBool>) -> anyhow::Result<Vec<std::thread::JoinHandle<()>>> {
    let threads = cpus.ceil().max(1.0) as usize;
    let share = (cpus / threads as f64).clamp(0.0, 1.0);
    (0..threads)
        .map(|_| {
            let stop = stop.clone();
            Ok(std::thread::Builder::new()
                .name("busy-loop".into())
                .spawn(move || {
                    let _ = crate::pin::recept_thread();
                    let period = Duration::from_millis(10);
                    let spin = period.mul_f64(share);
                    while !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        while start.elapsed() < spin {
                            std::hint::spin_loop();
                        }
                        if let Some(rest) = period.checked_sub(start.elapsed()) {
                            std::thread::sleep(rest);
                        }
                    }
                })?)
        })
        .collect()
}

/// The postmaster's pid from its data directory.
fn postmaster_pid(data_dir: &std::path::Path) -> anyhow::Result<i32> {
    std::fs::read_to_string(data_dir.join("postmaster.pid"))?
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no pid in postmaster.pid"))
}

/// CPU seconds (user and system) used so far by a PostgreSQL server: its
/// postmaster and its live children (each backend leads a session of its
/// own, so they are found by parent, not by process group).
fn server_cpu_seconds(postmaster: i32) -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut ticks = 0u64;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command's closing parenthesis: state, ppid, …; utime
        // and stime are the 12th and 13th fields from there.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let parent = fields.get(1).and_then(|g| g.parse::<i32>().ok());
        if pid != postmaster && parent != Some(postmaster) {
            continue;
        }
        for i in [11, 12] {
            ticks += fields
                .get(i)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    ticks as f64 / ticks_per_second
}

/// Waits until the replica has replayed everything the primary wrote.
async fn wait_replayed(primary: &str, replica: &str) -> anyhow::Result<()> {
    let connect = |url: &str| {
        let url = url.to_string();
        async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            Ok::<_, anyhow::Error>(client)
        }
    };
    let lsn: String = connect(primary)
        .await?
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    let replica = connect(replica).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        let done: bool = replica
            .query_one(
                "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                &[&lsn],
            )
            .await?
            .get(0);
        if done {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the replica did not replay up to {lsn} within 5 minutes")
}

/// Runs `GET /admin/reports/monthly` back to back until `stop`; returns the
/// times of those answered `504` (ms) and how many were answered otherwise.
async fn reports_until(admin: String, token: String, stop: Arc<AtomicBool>) -> (Vec<f64>, u32) {
    let http = reqwest::Client::new();
    let mut timings = Vec::new();
    let mut other = 0;
    while !stop.load(Ordering::SeqCst) {
        let t = Instant::now();
        let status = http
            .get(format!(
                "{admin}/admin/reports/monthly?month=2026-05&limit=500"
            ))
            .bearer_auth(&token)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status == 504 {
            timings.push(t.elapsed().as_secs_f64() * 1000.0);
        } else {
            other += 1;
        }
    }
    (timings, other)
}
