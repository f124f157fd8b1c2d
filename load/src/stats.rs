//! Latency recording and percentiles, overall and per second of the run.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// When this process started measuring: the origin of every time series.
pub fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Coarse latency buckets for one second of a run: bucket `i` holds
/// latencies below `10 µs × 1.25^i` (enough for p50/p99 per second).
const SECOND_BUCKETS: usize = 64;

fn second_bucket(micros: u64) -> usize {
    let mut bound = 10.0_f64;
    for i in 0..SECOND_BUCKETS - 1 {
        if (micros as f64) < bound {
            return i;
        }
        bound *= 1.25;
    }
    SECOND_BUCKETS - 1
}

fn bucket_upper_ms(i: usize) -> f64 {
    10.0 * 1.25_f64.powi(i as i32 + 1) / 1000.0
}

/// One second of a run.
#[derive(Clone)]
struct Second {
    count: u64,
    errors: u64,
    buckets: [u32; SECOND_BUCKETS],
}

impl Default for Second {
    fn default() -> Self {
        Second {
            count: 0,
            errors: 0,
            buckets: [0; SECOND_BUCKETS],
        }
    }
}

impl Second {
    fn quantile_ms(&self, q: f64) -> f64 {
        let target = (self.count as f64 * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= target {
                return bucket_upper_ms(i);
            }
        }
        0.0
    }
}

/// Latencies in microseconds, 1 µs to 60 s at 3 significant digits, and a
/// coarse series per second since [`origin`].
pub struct Latencies {
    histogram: Histogram<u64>,
    errors: u64,
    seconds: Vec<Second>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            errors: 0,
            seconds: Vec::new(),
        }
    }
}

/// The latencies of `workers` once all have finished, merged (a worker
/// that panicked adds nothing).
pub async fn gather(
    workers: impl IntoIterator<Item = tokio::task::JoinHandle<Latencies>>,
) -> Latencies {
    let mut all = Latencies::default();
    for l in futures::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
    {
        all.merge(&l);
    }
    all
}

impl Latencies {
    fn second(&mut self) -> &mut Second {
        self.second_of(Instant::now())
    }

    fn second_of(&mut self, at: Instant) -> &mut Second {
        let now = at.saturating_duration_since(origin()).as_secs() as usize;
        if self.seconds.len() <= now {
            self.seconds.resize(now + 1, Second::default());
        }
        &mut self.seconds[now]
    }

    pub fn record(&mut self, elapsed: Duration) {
        self.record_at(elapsed, Instant::now());
    }

    /// Records a latency in the second of `at` (for requests recorded
    /// after the run, at the time they were sent).
    pub fn record_at(&mut self, elapsed: Duration, at: Instant) {
        let micros = (elapsed.as_micros() as u64).clamp(1, 60_000_000);
        let _ = self.histogram.record(micros);
        let second = self.second_of(at);
        second.count += 1;
        second.buckets[second_bucket(micros)] += 1;
    }

    pub fn error(&mut self) {
        self.errors += 1;
        self.second().errors += 1;
    }

    pub fn merge(&mut self, other: &Latencies) {
        let _ = self.histogram.add(&other.histogram);
        self.errors += other.errors;
        if self.seconds.len() < other.seconds.len() {
            self.seconds.resize(other.seconds.len(), Second::default());
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            mine.count += theirs.count;
            mine.errors += theirs.errors;
            for (a, b) in mine.buckets.iter_mut().zip(theirs.buckets.iter()) {
                *a += b;
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// The `q`-quantile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }

    /// How many recorded latencies exceed `ms`.
    pub fn above_ms(&self, ms: f64) -> u64 {
        let micros = (ms * 1000.0) as u64;
        self.histogram
            .iter_recorded()
            .filter(|v| v.value_iterated_to() > micros)
            .map(|v| v.count_at_value())
            .sum()
    }

    pub fn max_ms(&self) -> f64 {
        self.histogram.max() as f64 / 1000.0
    }

    pub fn summary(&self) -> String {
        format!(
            "n={} errors={} p50={:.2}ms p95={:.2}ms p99={:.2}ms max={:.2}ms",
            self.count(),
            self.errors,
            self.ms(0.5),
            self.ms(0.95),
            self.ms(0.99),
            self.max_ms()
        )
    }

    /// The figures and the per-second series, for reports.
    pub fn to_json(&self) -> Value {
        let series: Vec<Value> = self
            .seconds
            .iter()
            .enumerate()
            .filter(|(_, s)| s.count + s.errors > 0)
            .map(|(t, s)| {
                json!({"t": t, "ok": s.count, "errors": s.errors,
                       "p50_ms": crate::report::rounded(s.quantile_ms(0.5)),
                       "p99_ms": crate::report::rounded(s.quantile_ms(0.99))})
            })
            .collect();
        json!({
            "count": self.count(),
            "errors": self.errors,
            "p50_ms": crate::report::rounded(self.ms(0.5)),
            "p95_ms": crate::report::rounded(self.ms(0.95)),
            "p99_ms": crate::report::rounded(self.ms(0.99)),
            "max_ms": crate::report::rounded(self.max_ms()),
            "series": series,
        })
    }
}

/// The machine's CPU time so far, from `/proc/stat`: (all, stolen by the
/// hypervisor), in clock ticks, over every CPU. `None` where there is no
/// `/proc/stat`.
pub fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // already counted in user).
    let all = fields.iter().take(8).sum();
    Some((all, *fields.get(7)?))
}

/// The share of CPU time the hypervisor took between two readings of
/// [`cpu_ticks`], in percent.
pub fn steal_percent(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((all0, steal0), (all1, steal1)) = (before?, after?);
    let all = all1.checked_sub(all0)?;
    (all > 0).then(|| 100.0 * steal1.saturating_sub(steal0) as f64 / all as f64)
}
