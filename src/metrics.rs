//! Prometheus metrics, one registry per application (no global recorder, so
//! tests run many servers side by side). Request counts and latencies are
//! recorded as requests finish; pools, admission, the cache and the
//! process's memory are read as snapshots on each scrape.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::master::MasterCache;
use crate::pools::Pools;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: &'static str,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    listener: &'static str,
    route: String,
}

/// The application's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new(pools: Arc<Pools>, cache: MasterCache, cache_budget_bytes: u64) -> Metrics {
        let mut registry = Registry::with_prefix("recept");
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "http_requests",
            "Finished HTTP requests by listener, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by listener and route",
            durations.clone(),
        );
        registry.register(
            "clinic_connection_wait_seconds",
            "How long clinic requests waited for a connection",
            pools.wait_histogram(),
        );
        registry.register_collector(Box::new(Snapshot {
            pools,
            cache,
            cache_budget_bytes,
        }));
        Metrics {
            registry,
            requests,
            durations,
        }
    }

    /// Records one finished request. `route` is the matched pattern (never
    /// the raw path, so ids do not multiply series).
    pub fn request(&self, listener: &'static str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                listener,
                route: route.to_string(),
                status: status.to_string(),
            })
            .inc();
        self.durations
            .get_or_create(&RouteLabels {
                listener,
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// What is read on each scrape.
struct Snapshot {
    pools: Arc<Pools>,
    cache: MasterCache,
    cache_budget_bytes: u64,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Snapshot")
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(&[(&str, &str)], i64)],
) -> Result<(), fmt::Error> {
    let mut metric =
        encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
    for (labels, value) in values {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let pools = self.pools.status();
        for (name, help, pick) in [
            ("pool_max_size", "Connections a pool may open", 0usize),
            ("pool_size", "Connections a pool has open", 1),
            ("pool_in_use", "Connections in use", 2),
            ("pool_available", "Idle connections", 3),
            ("pool_waiting", "Requests waiting for a connection", 4),
        ] {
            let values: Vec<([(&str, &str); 2], i64)> = pools
                .iter()
                .map(|p| {
                    let v = [p.max_size, p.size, p.in_use, p.available, p.waiting][pick];
                    (
                        [("cluster", p.cluster.as_str()), ("role", p.role)],
                        v as i64,
                    )
                })
                .collect();
            let borrowed: Vec<(&[(&str, &str)], i64)> =
                values.iter().map(|(l, v)| (&l[..], *v)).collect();
            gauge(&mut encoder, name, help, &borrowed)?;
        }
        let stats = self.pools.admission_stats();
        let mut rejections = encoder.encode_descriptor(
            "admission_rejections",
            "Clinic requests refused by admission, by reason",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (reason, value) in [
            ("queue_full", stats.queue_full),
            ("deadline", stats.deadline),
            ("tenant_share", stats.tenant_share),
        ] {
            ConstCounter::new(value).encode(rejections.encode_family(&[("reason", reason)])?)?;
        }
        let (entries, weight) = self.cache.usage();
        gauge(
            &mut encoder,
            "master_cache_entries",
            "Codes held in the master cache",
            &[(&[], entries as i64)],
        )?;
        gauge(
            &mut encoder,
            "master_cache_bytes",
            "Approximate bytes held in the master cache",
            &[(&[], weight as i64)],
        )?;
        gauge(
            &mut encoder,
            "cache_budget_bytes",
            "The memory budget for caches (server.cache_memory_mb)",
            &[(&[], self.cache_budget_bytes as i64)],
        )?;
        gauge(
            &mut encoder,
            "process_resident_bytes",
            "Resident memory of this process",
            &[(&[], resident_bytes() as i64)],
        )?;
        Ok(())
    }
}

/// This process's resident set size, from /proc (0 where there is none).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}
