//! Latency recording and percentiles.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies in microseconds, 1 µs to 60 s at 3 significant digits.
pub struct Latencies {
    histogram: Histogram<u64>,
    errors: u64,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            errors: 0,
        }
    }
}

impl Latencies {
    pub fn record(&mut self, elapsed: Duration) {
        let micros = (elapsed.as_micros() as u64).clamp(1, 60_000_000);
        let _ = self.histogram.record(micros);
    }

    pub fn error(&mut self) {
        self.errors += 1;
    }

    pub fn merge(&mut self, other: &Latencies) {
        let _ = self.histogram.add(&other.histogram);
        self.errors += other.errors;
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The `q`-quantile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn summary(&self) -> String {
        format!(
            "n={} errors={} p50={:.2}ms p95={:.2}ms p99={:.2}ms max={:.2}ms",
            self.count(),
            self.errors,
            self.ms(0.5),
            self.ms(0.95),
            self.ms(0.99),
            self.histogram.max() as f64 / 1000.0
        )
    }
}
