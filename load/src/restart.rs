//! PostgreSQL restarted under clinic traffic (only the PostgreSQL this run
//! started): how requests are answered while it is down, and how long after
//! it is ready recept serves again, with no restart of recept.

use crate::out;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;

use crate::stack::Stack;
use crate::stats::Latencies;

#[derive(Args, Clone)]
pub struct Options {
    /// Closed-loop clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// How long PostgreSQL stays down.
    #[arg(long, default_value_t = 3)]
    down_seconds: u64,
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let mut stack = Stack::start(|s| s.server.workers = 2).await?;
    let pools = stack.pools.clone();
    crate::stack::import_sample_release(&pools).await?;
    let slugs: Vec<recept::tenancy::Slug> = (0..4)
        .map(|i| recept::tenancy::Slug::parse(&format!("clinic_{i:05}")).expect("a valid slug"))
        .collect();
    crate::stack::create_tenants(&pools, &slugs, "2026-04", 2).await?;
    let clinics = crate::traffic::clinics(&stack, &slugs).await?;

    // (time since start, succeeded, latency) of every request.
    let log: Arc<Mutex<Vec<(Duration, bool, Duration)>>> = Arc::default();
    let running = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let workers: Vec<_> = (0..o.clients)
        .map(|w| {
            let (log, running, clinics) = (log.clone(), running.clone(), clinics.clone());
            let base = stack.clinic.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut i = w;
                while running.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(120)
                {
                    let (key, patient) = &clinics[i % clinics.len()];
                    let t = Instant::now();
                    let ok = http
                        .get(format!("{base}/v1/patients/{patient}"))
                        .bearer_auth(key)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false);
                    log.lock()
                        .unwrap()
                        .push((started.elapsed(), ok, t.elapsed()));
                    if !ok {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    i += o.clients;
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopping = started.elapsed();
    let down = Duration::from_secs(o.down_seconds);
    tokio::task::block_in_place(|| stack.restart_postgres(down))?;
    let ready = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    running.store(false, Ordering::SeqCst);
    futures::future::join_all(workers).await;

    let log = log.lock().unwrap();
    let mut outage = Latencies::default();
    for (at, ok, latency) in log.iter() {
        if *at >= stopping && *at < ready && !ok {
            outage.record(*latency);
        }
    }
    let first_success = log
        .iter()
        .filter(|(at, ok, _)| *ok && *at >= ready)
        .map(|(at, _, _)| *at)
        .min();
    let recovered = log.iter().filter(|(at, ok, _)| *ok && *at >= ready).count();
    out!(
        "recept-load pg-restart: PostgreSQL stopped at {:.1}s, ready again at {:.1}s",
        stopping.as_secs_f64(),
        ready.as_secs_f64()
    );
    out!(
        "requests while it was down (all failed fast?): {}",
        outage.summary()
    );
    crate::report::latencies("requests while PostgreSQL was down", &outage);
    match first_success {
        Some(at) => out!(
            "first success after PostgreSQL was ready: {:.3}s later ({recovered} successes in the last 5 s)",
            at.saturating_sub(ready).as_secs_f64()
        ),
        None => out!("no success after PostgreSQL came back"),
    }
    Ok(())
}
