//! Hostile clients beside a clinic: recept run as its own process (the
//! `recept` binary beside this one, so its memory is its own), a clinic
//! making ordinary requests over keep-alive connections, and
//!
//! 1. a flood of connections that each send the head of a 256 KiB
//!    `POST /v1/patients`, then 250 KB of it, then nothing; half carry a
//!    real key of another clinic, half none. recept's peak RSS against
//!    `server.memory_mb`, its RSS 30 s after the flood against before, and
//!    the clinic's p99 beside the flood against its baseline;
//! 2. forged keys as fast as the generator can send them, in windows
//!    alternating with baseline windows: the clinic's failures and p99
//!    ratio, and the registry reads during the flood windows against the
//!    baseline windows (the clinic's own background refreshes).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rand::RngCore;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::out;
use crate::stack::Stack;
use crate::stats::Latencies;

#[derive(Args, Clone)]
pub struct Options {
    /// Connections holding partial bodies.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// How long they hold them, seconds.
    #[arg(long, default_value_t = 20)]
    hold: u64,
    /// The clinic's rate, requests per second (open loop).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Length of each forged-key window, seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Pairs of forged-key windows (baseline, then beside the flood).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Concurrent senders of forged keys.
    #[arg(long, default_value_t = 64)]
    forgers: usize,
}

/// recept as a child process, and where it listens.
struct Recept {
    child: Child,
    clinic: String,
    metrics: String,
}

impl Drop for Recept {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Recept {
    async fn start(stack: &Stack) -> anyhow::Result<Recept> {
        let binary = std::env::current_exe()?.with_file_name("recept");
        anyhow::ensure!(
            binary.is_file(),
            "{} is missing: build it first (cargo build --release --workspace)",
            binary.display()
        );
        let (clinic_port, admin_port) = (free_port()?, free_port()?);
        let mut command = Command::new(&binary);
        command
            .arg("serve")
            .env("RECEPT__CLUSTERS__MAIN__URL", &stack.database_url)
            .env("RECEPT__ADMIN__TOKEN", &stack.admin_token)
            .env("RECEPT__CLINIC__KEY_SECRET", &stack.key_secret)
            .env(
                "RECEPT__SERVER__CLINIC_LISTEN",
                format!("127.0.0.1:{clinic_port}"),
            )
            .env(
                "RECEPT__SERVER__ADMIN_LISTEN",
                format!("127.0.0.1:{admin_port}"),
            )
            .env("RECEPT__SERVER__LOG_FORMAT", "json")
            .env("RUST_LOG", "warn");
        // With HOSTILE_DEBUG, recept's requests over 30 ms are logged to a
        // file beside the reports: slow inside recept, or before it.
        let log = match std::env::var_os("HOSTILE_DEBUG") {
            Some(_) => {
                let path = crate::report::dir()?.join("hostile-recept.log");
                eprintln!("recept's log: {}", path.display());
                command.env("RECEPT__SERVER__SLOW_REQUEST_MS", "30");
                Stdio::from(std::fs::File::create(path)?)
            }
            None => Stdio::null(),
        };
        let child = command.stdout(Stdio::null()).stderr(log).spawn()?;
        crate::pin::child(child.id())?;
        let recept = Recept {
            child,
            clinic: format!("http://127.0.0.1:{clinic_port}"),
            metrics: format!("http://127.0.0.1:{admin_port}/metrics"),
        };
        let http = reqwest::Client::new();
        for _ in 0..200 {
            let ready = http.get(format!("{}/readyz", recept.clinic)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(recept);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("recept did not become ready")
    }

    /// CPU time recept has used (user and system), from /proc.
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // The fields after the command's closing parenthesis; utime and
        // stime are the 12th and 13th of them, in clock ticks (100 a second).
        let ticks: u64 = stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|v| v.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        Duration::from_millis(ticks * 10)
    }

    /// (resident, peak resident) bytes, from /proc.
    fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// One counter or gauge from /metrics (the sum of its series).
    async fn metric(&self, http: &reqwest::Client, token: &str, name: &str) -> f64 {
        let Ok(response) = http.get(&self.metrics).bearer_auth(token).send().await else {
            return f64::NAN;
        };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// The clinic's requests at `rate` for `duration`, open loop, on the
/// client's keep-alive connections.
async fn clinic(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    rate: f64,
    duration: Duration,
) -> (Latencies, u64) {
    let total = (duration.as_secs_f64() * rate) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let scheduled = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled).await;
        let request = http
            .get(url)
            .bearer_auth(key)
            .timeout(Duration::from_secs(10));
        tasks.push(tokio::spawn(async move {
            let answer = request.send().await;
            if std::env::var_os("HOSTILE_DEBUG").is_some() {
                match &answer {
                    Ok(r) if !r.status().is_success() => eprintln!("clinic: {}", r.status()),
                    Err(e) => eprintln!("clinic: {e:?}"),
                    _ => {}
                }
            }
            let ok = answer.is_ok_and(|r| r.status().is_success());
            let elapsed = scheduled.elapsed();
            if std::env::var_os("HOSTILE_DEBUG").is_some() && elapsed > Duration::from_millis(50) {
                eprintln!(
                    "clinic: {:.0} ms at {:.2} s",
                    elapsed.as_secs_f64() * 1e3,
                    (scheduled - started).as_secs_f64()
                );
            }
            (ok, elapsed)
        }));
    }
    let mut latencies = Latencies::default();
    let mut failed = 0;
    for (ok, elapsed) in futures::future::join_all(tasks).await.into_iter().flatten() {
        if ok {
            latencies.record(elapsed);
        } else {
            failed += 1;
        }
    }
    (latencies, failed)
}

/// What the body flood achieved.
#[derive(Default)]
struct Flood {
    connected: AtomicU64,
    sent_whole: AtomicU64,
    answered: AtomicU64,
}

/// Connections of the body flood that connect and send at once. Without a
/// bound, 10,000 senders overflow the generator's own CPU's loopback queue
/// (`net.core.netdev_max_backlog`, 1,000 packets): the kernel drops
/// packets, the clinic's among them, and TCP resends them only after its
/// 200 ms minimum timeout, a stall that is the generator's, not recept's.
/// The flood still holds all its connections; it takes about a second
/// longer to open them.
const BODY_SENDERS: usize = 64;

/// Opens `n` connections that each send a head declaring 262,144 bytes and
/// 250,000 of them, [`BODY_SENDERS`] at a time, then hold until `until`.
async fn body_flood(address: String, keys: Vec<String>, n: usize, until: Instant) -> Arc<Flood> {
    let flood = Arc::new(Flood::default());
    let body: Arc<[u8]> = vec![b' '; 250_000].into();
    let senders = Arc::new(tokio::sync::Semaphore::new(BODY_SENDERS));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (address, flood, body) = (address.clone(), flood.clone(), body.clone());
        let senders = senders.clone();
        let auth = match &keys[i % keys.len()] {
            key if key.is_empty() => String::new(),
            key => format!("Authorization: Bearer {key}\r\n"),
        };
        tasks.push(tokio::spawn(async move {
            let deadline = tokio::time::Instant::from_std(until);
            let work = async {
                let sending = senders.acquire().await.ok()?;
                let mut stream = TcpStream::connect(&address).await.ok()?;
                flood.connected.fetch_add(1, Ordering::Relaxed);
                let head = format!(
                    "POST /v1/patients HTTP/1.1\r\nHost: recept\r\n{auth}Content-Type: application/json\r\nContent-Length: 262144\r\n\r\n"
                );
                stream.write_all(head.as_bytes()).await.ok()?;
                if stream.write_all(&body).await.is_ok() {
                    flood.sent_whole.fetch_add(1, Ordering::Relaxed);
                }
                drop(sending);
                let mut buf = [0u8; 512];
                if tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await.ok()? > 0 {
                    flood.answered.fetch_add(1, Ordering::Relaxed);
                }
                // Hold the connection (closed by recept or not) till the end.
                std::future::pending::<()>().await;
                Some(stream)
            };
            let _ = tokio::time::timeout_at(deadline, work).await;
        }));
    }
    futures::future::join_all(tasks).await;
    flood
}

/// `rk_` + 43 + `.` + 22 random base64url characters: the shape of a key,
/// a tag no secret gives.
fn forged_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut random = [0u8; 65];
    rand::thread_rng().fill_bytes(&mut random);
    let chars: String = random
        .iter()
        .map(|b| ALPHABET[(*b & 63) as usize] as char)
        .collect();
    format!("rk_{}.{}", &chars[..43], &chars[43..])
}

/// Forged keys from `forgers` senders for `duration`; returns how many
/// were answered, and with what.
async fn forged_flood(url: String, forgers: usize, duration: Duration) -> (u64, u64) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(forgers)
        .build()
        .expect("an HTTP client");
    let until = tokio::time::Instant::now() + duration;
    let unauthorized = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..forgers)
        .map(|_| {
            let (http, url) = (http.clone(), url.to_string());
            let (unauthorized, other) = (unauthorized.clone(), other.clone());
            tokio::spawn(async move {
                while tokio::time::Instant::now() < until {
                    match http.get(&url).bearer_auth(forged_key()).send().await {
                        Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => {
                            unauthorized.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => other.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    futures::future::join_all(tasks).await;
    (
        unauthorized.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    )
}

/// Runs a flood on a thread of its own, with its own runtime, at the
/// lowest priority (nice 19). On the generator's one CPU the flood's tasks
/// then never stand in front of the clinic's in a run queue: the clinic's
/// latency is recept's, not its generator's. (An attacker does not share a
/// clinic's computer; the flood still takes every cycle the clinic leaves.)
async fn at_low_priority<F>(flood: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        // On Linux the nice value belongs to the thread: `0` is this one.
        // SAFETY: a plain system call on the calling thread.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0 {
            eprintln!(
                "recept-load hostile: the flood runs at normal priority (setpriority failed)"
            );
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the flood");
        let _ = done.send(runtime.block_on(flood));
    });
    result.await.expect("the flood's thread finished")
}

const MIB: f64 = 1024.0 * 1024.0;

pub async fn run(o: Options) -> anyhow::Result<()> {
    let stack = Stack::start(|_| {}).await?;
    let slugs: Vec<recept::tenancy::Slug> = ["clinic_00000", "attacker_0"]
        .iter()
        .map(|s| recept::tenancy::Slug::parse(s).expect("a valid slug"))
        .collect();
    crate::stack::import_sample_release(&stack.pools).await?;
    crate::stack::create_tenants(&stack.pools, &slugs, "2026-04", 1).await?;
    let clinics = crate::traffic::clinics(&stack, &slugs).await?;
    let (key, patient) = clinics[0].clone();
    let attacker = clinics[1].0.clone();
    let recept = Recept::start(&stack).await?;
    let url = format!("{}/v1/patients/{patient}", recept.clinic);
    let address = recept.clinic.trim_start_matches("http://").to_string();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let token = stack.admin_token.clone();
    let budget = recept
        .metric(&http, &token, "recept_memory_budget_bytes")
        .await;

    // Part 1: partial bodies.
    clinic(&http, &url, &key, o.rate, Duration::from_secs(3)).await;
    let (baseline, baseline_failed) =
        clinic(&http, &url, &key, o.rate, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (before, _) = recept.rss();
    let cpu_before = recept.cpu();
    let hold = Duration::from_secs(o.hold);
    let until = Instant::now() + hold;
    let keys = vec![attacker.clone(), String::new()];
    let drops_before = crate::kernel::softnet_drops();
    let started = Instant::now();
    let (flood, (beside, beside_failed)) = tokio::join!(
        at_low_priority(body_flood(address.clone(), keys, o.connections, until)),
        clinic(&http, &url, &key, o.rate, hold),
    );
    let flood_ended = started.elapsed();
    let drops = crate::kernel::softnet_drops().saturating_sub(drops_before);
    let (during, peak) = recept.rss();
    let flood_cpu = recept.cpu().saturating_sub(cpu_before);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (after, _) = recept.rss();
    let refused = recept
        .metric(&http, &token, "recept_request_bodies_refused_total")
        .await;
    out!(
        "recept-load hostile: part 1, {} connections holding partial 256 KiB bodies (half with another clinic's key, half with none) for {} s beside one clinic at {} req/s",
        o.connections,
        o.hold,
        o.rate
    );
    out!(
        "flood: {} connected, {} sent their 250 KB, {} answered by recept; {} bodies refused or cut by recept; ended after {:.1} s",
        flood.connected.load(Ordering::Relaxed),
        flood.sent_whole.load(Ordering::Relaxed),
        flood.answered.load(Ordering::Relaxed),
        refused,
        flood_ended.as_secs_f64()
    );
    out!("packets the kernel dropped from its input queues meanwhile (loopback included): {drops}");
    crate::report::figure(
        "kernel input-queue drops during the body flood",
        drops as f64,
    );
    out!(
        "recept CPU during the flood: {:.2} s ({:.0} µs per flood connection, the clinic's requests included)",
        flood_cpu.as_secs_f64(),
        flood_cpu.as_secs_f64() * 1e6 / o.connections.max(1) as f64
    );
    out!(
        "recept RSS: before {:.1} MiB, peak {:.1} MiB (budget {:.0} MiB), at flood end {:.1} MiB, 30 s later {:.1} MiB",
        before as f64 / MIB,
        peak as f64 / MIB,
        budget / MIB,
        during as f64 / MIB,
        after as f64 / MIB
    );
    crate::report::figure("peak rss / memory budget", peak as f64 / budget);
    crate::report::figure("rss 30 s after / before", after as f64 / before as f64);
    out!(
        "peak RSS / budget: {:.2}; RSS 30 s after / before: {:.2}",
        peak as f64 / budget,
        after as f64 / before as f64
    );
    out!(
        "clinic, baseline:      {} ({} failed)",
        baseline.summary(),
        baseline_failed
    );
    out!(
        "clinic, beside flood:  {} ({} failed)",
        beside.summary(),
        beside_failed
    );
    crate::report::latencies("clinic, baseline (bodies)", &baseline);
    crate::report::latencies("clinic, beside partial bodies", &beside);
    let ratio = beside.ms(0.99) / baseline.ms(0.99).max(0.001);
    crate::report::figure("clinic p99 beside bodies / baseline", ratio);
    out!("clinic p99 beside bodies / baseline: {ratio:.2}");

    // Part 2: forged keys, windows alternating.
    let window = Duration::from_secs(o.seconds);
    let mut alone = Latencies::default();
    let mut flooded = Latencies::default();
    let (mut alone_failed, mut flooded_failed) = (0, 0);
    let (mut reads_alone, mut reads_flooded) = (0.0, 0.0);
    let (mut forged_sent, mut forged_other) = (0, 0);
    let misses = "recept_key_cache_misses_total";
    let forged_before = recept
        .metric(&http, &token, "recept_forged_keys_refused_total")
        .await;
    let forged_url = format!("{}/v1/patients", recept.clinic);
    let mut forged_drops = 0;
    for _ in 0..o.rounds {
        let m0 = recept.metric(&http, &token, misses).await;
        let (l, f) = clinic(&http, &url, &key, o.rate, window).await;
        let m1 = recept.metric(&http, &token, misses).await;
        let d0 = crate::kernel::softnet_drops();
        let ((l2, f2), (sent, other)) = tokio::join!(
            clinic(&http, &url, &key, o.rate, window),
            at_low_priority(forged_flood(forged_url.clone(), o.forgers, window)),
        );
        let m2 = recept.metric(&http, &token, misses).await;
        forged_drops += crate::kernel::softnet_drops().saturating_sub(d0);
        alone.merge(&l);
        flooded.merge(&l2);
        alone_failed += f;
        flooded_failed += f2;
        reads_alone += m1 - m0;
        reads_flooded += m2 - m1;
        forged_sent += sent;
        forged_other += other;
    }
    let forged_refused = recept
        .metric(&http, &token, "recept_forged_keys_refused_total")
        .await
        - forged_before;
    let seconds = (o.rounds * o.seconds) as f64;
    out!(
        "recept-load hostile: part 2, forged keys from {} senders beside one clinic at {} req/s, {} rounds of {} s alone then {} s beside",
        o.forgers,
        o.rate,
        o.rounds,
        o.seconds,
        o.seconds
    );
    out!(
        "forged keys: {} answered 401 ({:.0}/s), {} otherwise; recept counted {} refused in memory",
        forged_sent,
        forged_sent as f64 / seconds,
        forged_other,
        forged_refused
    );
    out!("packets the kernel dropped from its input queues in the flood windows: {forged_drops}");
    out!(
        "registry reads: {} in the baseline windows, {} in the flood windows (the clinic's own key refreshes)",
        reads_alone,
        reads_flooded
    );
    out!(
        "clinic, alone:         {} ({} failed)",
        alone.summary(),
        alone_failed
    );
    out!(
        "clinic, beside forged: {} ({} failed)",
        flooded.summary(),
        flooded_failed
    );
    crate::report::latencies("clinic, alone (forged)", &alone);
    crate::report::latencies("clinic, beside forged keys", &flooded);
    let ratio = flooded.ms(0.99) / alone.ms(0.99).max(0.001);
    crate::report::figure("clinic p99 beside forged keys / alone", ratio);
    crate::report::figure("forged keys per second", forged_sent as f64 / seconds);
    out!("clinic p99 beside forged keys / alone: {ratio:.2}");
    if std::env::var_os("HOSTILE_DEBUG").is_some() {
        // recept's own view (waits for a connection, request durations).
        let text = http
            .get(&recept.metrics)
            .bearer_auth(&token)
            .send()
            .await?
            .text()
            .await?;
        std::fs::write(crate::report::dir()?.join("hostile-metrics.txt"), text)?;
    }
    drop(recept);
    Ok(())
}
