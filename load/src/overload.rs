//! The overload benchmark: recept's capacity for a single-patient read,
//! its unloaded latency, and an open-loop offered load at three times that
//! capacity, in alternating rounds, with recept's PostgreSQL backends
//! sampled throughout.

use crate::out;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use crate::stack::Stack;
use crate::stats::{self, Latencies};
use crate::traffic::{self, Phase};

#[derive(Args, Clone)]
pub struct Options {
    /// Tenants the traffic is spread over.
    #[arg(long, default_value_t = 20)]
    tenants: usize,
    /// Closed-loop clients measuring capacity (default: twice the pool, so
    /// the pool is always busy without a standing queue).
    #[arg(long)]
    clients: Option<usize>,
    /// Offered load as a multiple of the measured capacity.
    #[arg(long, default_value_t = 3.0)]
    factor: f64,
    /// Length of each round's offered load.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Length of each round's capacity and unloaded windows.
    #[arg(long, default_value_t = 3)]
    window_seconds: u64,
    /// Rounds of capacity, unloaded and offered load, one after another.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// `clinic.max_waiting` (default: recept's).
    #[arg(long)]
    max_waiting: Option<usize>,
    /// `clinic.queue_timeout_ms` (default: recept's).
    #[arg(long)]
    queue_timeout_ms: Option<u64>,
    /// `server.workers`: one, for the one core recept and PostgreSQL share
    /// under `--pin` on a two-core machine.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// `clinic.pool_size` (and so `clinic.max_active`): four connections
    /// keep one core's PostgreSQL busy without queueing inside it
    /// (recept's default, 16 at once of 64, is for a host of its own in
    /// front of a larger database).
    #[arg(long, default_value_t = 4)]
    pool_size: usize,
    /// Connections the offered load is sent on, as a proxy or a clinic's
    /// fleet of clients keeps them: opened before each offered load, with
    /// at most one request in flight on each (a request past that is not
    /// sent, and counted). Below recept's connection budget for one worker
    /// (`recept check-config`), so that the phase measures excess requests,
    /// not a storm of new connections (`hostile` measures those). 0: a
    /// connection opened for each request that finds none idle, up to 4,096
    /// (the generator before 2026-12-07).
    #[arg(long, default_value_t = 256)]
    connections: usize,
}

/// What an open-loop phase saw.
#[derive(Default)]
pub(crate) struct Outcome {
    pub ok: Latencies,
    pub rejected: Latencies,
    /// Anything but 2xx, 429 and 503: should stay zero.
    pub failed: u64,
    pub dropped: u64,
    /// How late the generator sent each request against its schedule: when
    /// this is large, the generator, not recept, is the limit.
    pub lag: Latencies,
    /// Rejections timed from when they were actually sent.
    pub rejected_after_send: Latencies,
}

impl Outcome {
    pub(crate) fn merge(&mut self, other: &Outcome) {
        self.ok.merge(&other.ok);
        self.rejected.merge(&other.rejected);
        self.failed += other.failed;
        self.dropped += other.dropped;
        self.lag.merge(&other.lag);
        self.rejected_after_send.merge(&other.rejected_after_send);
    }
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let clients = o.clients.unwrap_or(2 * o.pool_size);
    let stack = Stack::start(|s| {
        s.server.workers = o.workers;
        if let Some(n) = o.max_waiting {
            s.clinic.max_waiting = n;
        }
        if let Some(ms) = o.queue_timeout_ms {
            s.clinic.queue_timeout_ms = ms;
        }
        s.clinic.pool_size = o.pool_size;
    })
    .await?;
    let settings_budget = o.pool_size + 4 + 2;
    let pools = stack.pools.clone();
    crate::stack::import_sample_release(&pools).await?;
    let slugs: Vec<recept::tenancy::Slug> = (0..o.tenants)
        .map(|i| recept::tenancy::Slug::parse(&format!("clinic_{i:05}")).expect("a valid slug"))
        .collect();
    crate::stack::create_tenants(&pools, &slugs, "2026-04", 2).await?;
    let clinics = traffic::clinics(&stack, &slugs).await?;
    let paths: Arc<Vec<(String, String)>> = Arc::new(
        clinics
            .iter()
            .map(|(key, patient)| (key.clone(), format!("/v1/patients/{patient}")))
            .collect(),
    );
    traffic::run(
        &stack.clinic,
        &clinics,
        clients,
        Phase::For(Duration::from_secs(3)),
    )
    .await;
    out!(
        "recept-load overload: {} tenants, {} rounds of capacity (closed loop, {clients} clients, {} s), unloaded (open loop at 0.3x, {} s) and offered load ({}x, {} s), GET /v1/patients/{{id}}",
        o.tenants,
        o.rounds,
        o.window_seconds,
        o.window_seconds,
        o.factor,
        o.seconds
    );

    // The host's speed drifts by tens of percent over a minute: each round
    // measures capacity and the unloaded latency just before its offered
    // load, and the figures compare sums over the rounds, so a slow spell
    // weighs on both sides of each ratio.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_backends(
        stack.database_url.clone(),
        sampling.clone(),
    ));
    let route = [r#"route="/v1/patients/{id}""#];
    let durations = "recept_http_request_duration_seconds_bucket{";
    let waits = "recept_clinic_connection_wait_seconds_bucket{";
    let window = Duration::from_secs(o.window_seconds);
    let (mut capacity_sum, mut successes_sum) = (0.0, 0.0);
    let mut unloaded = Latencies::default();
    let mut loaded = Outcome::default();
    let mut inside = (Vec::new(), Vec::new());
    let mut stolen = Vec::new();
    for round in 1..=o.rounds {
        let ticks = stats::cpu_ticks();
        let capacity = closed(&stack.clinic, &paths, clients, window).await;
        let quiet = open(&stack.clinic, &paths, capacity.0 * 0.3, window, 0).await;
        let rate = capacity.0 * o.factor;
        let before = (
            scrape_buckets(&stack, durations, &route).await?,
            scrape_buckets(&stack, waits, &[]).await?,
        );
        let busy = open(
            &stack.clinic,
            &paths,
            rate,
            Duration::from_secs(o.seconds),
            o.connections,
        )
        .await;
        add_between(
            &mut inside.0,
            &before.0,
            &scrape_buckets(&stack, durations, &route).await?,
        );
        add_between(
            &mut inside.1,
            &before.1,
            &scrape_buckets(&stack, waits, &[]).await?,
        );
        let successes = busy.ok.count() as f64 / o.seconds as f64;
        let steal = stats::steal_percent(ticks, stats::cpu_ticks());
        stolen.extend(steal);
        out!(
            "round {round}: {}capacity {:.0} req/s (p99 {:.2} ms), unloaded p99 {:.2} ms; offered {rate:.0} req/s: successes {successes:.0} req/s = {:.2} of capacity, p99 {:.2} ms = {:.2}x unloaded, rejections {} (max {:.2} ms), other failures {}",
            steal.map_or(String::new(), |s| format!("CPU time stolen by the host {s:.0}%; ")),
            capacity.0,
            capacity.1.ms(0.99),
            quiet.ok.ms(0.99),
            successes / capacity.0,
            busy.ok.ms(0.99),
            busy.ok.ms(0.99) / quiet.ok.ms(0.99).max(0.001),
            busy.rejected.count(),
            busy.rejected.max_ms(),
            busy.failed
        );
        capacity_sum += capacity.0;
        successes_sum += successes;
        unloaded.merge(&quiet.ok);
        loaded.merge(&busy);
    }
    sampling.store(false, Ordering::SeqCst);
    let peaks = sampler.await??;
    let rounds = o.rounds as f64;
    out!("over all rounds:");
    if !stolen.is_empty() {
        out!(
            "  CPU time stolen by the host: {:.0}% to {:.0}% per round",
            stolen.iter().copied().fold(f64::INFINITY, f64::min),
            stolen.iter().copied().fold(0.0, f64::max)
        );
    }
    out!(
        "  capacity: {:.0} req/s on average; unloaded: {}",
        capacity_sum / rounds,
        unloaded.summary()
    );
    out!(
        "  successes: {:.0} req/s = {:.2} of capacity; {}",
        successes_sum / rounds,
        successes_sum / capacity_sum,
        loaded.ok.summary()
    );
    let p99_ratio = loaded.ok.ms(0.99) / unloaded.ms(0.99).max(0.001);
    out!("  p99 of successes / unloaded p99: {p99_ratio:.2}");
    out!("  rejections (429/503): {}", loaded.rejected.summary());
    out!(
        "  inside recept (its own histograms, bucket bounds): request p50 <= {:.1} ms, p99 <= {:.1} ms; connection wait p50 <= {:.1} ms, p99 <= {:.1} ms",
        quantile(&inside.0, 0.5),
        quantile(&inside.0, 0.99),
        quantile(&inside.1, 0.5),
        quantile(&inside.1, 0.99),
    );
    out!(
        "  requests recept itself took longer than 256 ms over: {}, of which waited that long for a connection: {} (of those the client saw: successes {}, rejections {})",
        above(&inside.0, 0.256),
        above(&inside.1, 0.2048),
        loaded.ok.above_ms(256.0),
        loaded.rejected.above_ms(256.0),
    );
    crate::report::latencies("unloaded", &unloaded);
    crate::report::latencies("offered load: successes", &loaded.ok);
    crate::report::latencies("offered load: rejections", &loaded.rejected);
    crate::report::latencies("offered load: generator lag", &loaded.lag);
    crate::report::figure("successes / capacity", successes_sum / capacity_sum);
    crate::report::figure("p99 loaded / unloaded", p99_ratio);
    out!(
        "  other failures: {}, not sent (generator limit): {}",
        loaded.failed,
        loaded.dropped
    );
    out!(
        "  generator lag (send after schedule): {}",
        loaded.lag.summary()
    );
    out!(
        "  rejections timed from their actual send: {}",
        loaded.rejected_after_send.summary()
    );
    let mut peaks: Vec<(String, i64)> = peaks.into_iter().collect();
    peaks.sort();
    out!(
        "  most PostgreSQL backends seen: {} (budget for this host: {settings_budget})",
        peaks
            .iter()
            .map(|(app, n)| format!("{app} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Closed loop over `paths`; returns (requests per second, latencies).
pub(crate) async fn closed(
    base: &str,
    paths: &Arc<Vec<(String, String)>>,
    clients: usize,
    duration: Duration,
) -> (f64, Latencies) {
    let started = Instant::now();
    let workers = (0..clients).map(|w| {
        let http = reqwest::Client::new();
        let paths = paths.clone();
        let base = base.to_string();
        tokio::spawn(async move {
            let mut latencies = Latencies::default();
            let mut i = w;
            while started.elapsed() < duration {
                let (key, path) = &paths[i % paths.len()];
                let t = Instant::now();
                match http
                    .get(format!("{base}{path}"))
                    .bearer_auth(key)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => latencies.record(t.elapsed()),
                    other => {
                        if std::env::var_os("LOAD_DEBUG").is_some() {
                            match other {
                                Ok(r) => eprintln!(
                                    "{path}: {} {}",
                                    r.status(),
                                    r.text().await.unwrap_or_default()
                                ),
                                Err(e) => eprintln!("{path}: {e}"),
                            }
                        }
                        latencies.error()
                    }
                }
                i += clients;
            }
            latencies
        })
    });
    let all = crate::stats::gather(workers).await;
    (all.count() as f64 / started.elapsed().as_secs_f64(), all)
}

/// Open loop at `rate` per second, each request timed from its schedule,
/// on `connections` connections opened before it starts (0: opened as
/// requests find none idle, up to 4,096).
pub(crate) async fn open(
    base: &str,
    paths: &Arc<Vec<(String, String)>>,
    rate: f64,
    duration: Duration,
    connections: usize,
) -> Outcome {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(connections.max(1024))
        .build()
        .expect("an HTTP client");
    warm(&http, base, connections).await;
    let total = (duration.as_secs_f64() * rate) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let limit = if connections == 0 { 4096 } else { connections };
    let in_flight = Arc::new(tokio::sync::Semaphore::new(limit));
    let started = tokio::time::Instant::now();
    let mut outcome = Outcome::default();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let scheduled = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            outcome.dropped += 1;
            continue;
        };
        let (key, path) = paths[n as usize % paths.len()].clone();
        let http = http.clone();
        let url = format!("{base}{path}");
        tasks.push(tokio::spawn(async move {
            let lag = scheduled.elapsed();
            let status = http
                .get(url)
                .bearer_auth(key)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            drop(permit);
            (status, scheduled.elapsed(), lag, scheduled.into_std())
        }));
    }
    for (status, elapsed, lag, at) in futures::future::join_all(tasks).await.into_iter().flatten() {
        outcome.lag.record_at(lag, at);
        match status {
            200..=299 => outcome.ok.record_at(elapsed, at),
            429 | 503 => {
                outcome.rejected.record_at(elapsed, at);
                outcome
                    .rejected_after_send
                    .record_at(elapsed.saturating_sub(lag), at);
            }
            _ => outcome.failed += 1,
        }
    }
    outcome
}

/// Opens `n` connections of `http` to `base` and leaves them idle in its
/// pool: `n` health probes at once, each on a connection of its own.
async fn warm(http: &reqwest::Client, base: &str, n: usize) {
    let probes = (0..n).map(|_| {
        http.get(format!("{base}/healthz"))
            .timeout(Duration::from_secs(10))
            .send()
    });
    for probe in futures::future::join_all(probes).await {
        if let Err(e) = probe {
            eprintln!("recept-load: warming the generator's connections: {e}");
        }
    }
}

/// The most backends per `application_name` seen while `running`, sampled
/// every 100 ms on a connection of its own.
async fn sample_backends(
    url: String,
    running: Arc<AtomicBool>,
) -> anyhow::Result<HashMap<String, i64>> {
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let mut peaks: HashMap<String, i64> = HashMap::new();
    while running.load(Ordering::SeqCst) {
        for row in client
            .query(
                "SELECT application_name, count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND application_name LIKE 'recept-%' GROUP BY 1",
                &[],
            )
            .await?
        {
            let peak = peaks.entry(row.get(0)).or_insert(0);
            *peak = (*peak).max(row.get(1));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(peaks)
}

/// Cumulative bucket counts of one histogram in recept's `/metrics`, by
/// upper bound in seconds: `series` names it with its labels, e.g.
/// `recept_clinic_connection_wait_seconds_bucket{`.
pub(crate) async fn scrape_buckets(
    stack: &Stack,
    series: &str,
    labels: &[&str],
) -> anyhow::Result<Vec<(f64, f64)>> {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", stack.admin))
        .bearer_auth(&stack.admin_token)
        .send()
        .await?
        .text()
        .await?;
    let mut buckets = Vec::new();
    for line in text.lines() {
        if !line.starts_with(series) || !labels.iter().all(|l| line.contains(l)) {
            continue;
        }
        let (Some(le), Some(count)) = (
            line.split("le=\"").nth(1).and_then(|r| r.split('"').next()),
            line.rsplit(' ').next(),
        ) else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse()?
        };
        buckets.push((bound, count.parse()?));
    }
    Ok(buckets)
}

/// Adds to `sum` the observations made between two scrapes, bucket by
/// bucket (cumulative counts, as scraped).
fn add_between(sum: &mut Vec<(f64, f64)>, before: &[(f64, f64)], after: &[(f64, f64)]) {
    for (bound, n) in after {
        let earlier = before
            .iter()
            .find(|(b, _)| b == bound)
            .map_or(0.0, |(_, n)| *n);
        match sum.iter_mut().find(|(b, _)| b == bound) {
            Some((_, total)) => *total += n - earlier,
            None => sum.push((*bound, n - earlier)),
        }
    }
}

/// The bucket bound (in milliseconds) below which `q` of the observations
/// in `counts` (cumulative, by bound in seconds) fall.
fn quantile(counts: &[(f64, f64)], q: f64) -> f64 {
    let total = counts.last().map_or(0.0, |(_, n)| *n);
    counts
        .iter()
        .find(|(_, n)| *n >= total * q)
        .map_or(f64::NAN, |(bound, _)| bound * 1000.0)
}

/// How many observations in `counts` (cumulative, by bound in seconds)
/// fell above `seconds` (a bucket bound).
fn above(counts: &[(f64, f64)], seconds: f64) -> f64 {
    let at = |bound: f64| {
        counts
            .iter()
            .find(|(b, _)| (*b - bound).abs() < 1e-9 || b.is_infinite() && bound.is_infinite())
            .map_or(0.0, |(_, n)| *n)
    };
    at(f64::INFINITY) - at(seconds)
}
