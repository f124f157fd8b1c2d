//! Telling an overloaded pool from a busy one (the CoDel idea): the
//! state each pool keeps of its wait queue.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Whether a pool is overloaded, told apart from a busy pool the way CoDel
/// does for packet queues: a queue whose waits are short, or that drains
/// now and then, is doing its job; one in which every request served over
/// an interval (`clinic.standing_queue_ms`) waited at least
/// `clinic.overload_queue_timeout_ms`, or that fills up
/// (`clinic.max_waiting`), is a standing queue: the pool is overloaded.
/// It stays so until no request has been refused for an interval. Both
/// changes are logged, so saturation is never silent.
pub(super) struct QueueState {
    /// The cluster and the shard (worker), for the log.
    pub(super) cluster: String,
    pub(super) shard: usize,
    pub(super) epoch: Instant,
    /// When the current interval began, in milliseconds from `epoch`.
    pub(super) interval_start_ms: AtomicU64,
    /// The shortest wait of a request served in the current interval, in
    /// microseconds (`u64::MAX`: none served yet).
    pub(super) interval_min_wait_us: AtomicU64,
    /// Milliseconds from `epoch` to the last refusal (or to the start of
    /// overload).
    pub(super) last_refusal_ms: AtomicU64,
    pub(super) overloaded: AtomicBool,
    /// Requests refused since the pool became overloaded.
    pub(super) refusals: AtomicU64,
}

impl QueueState {
    pub(super) fn new() -> QueueState {
        QueueState {
            cluster: String::new(),
            shard: 0,
            epoch: Instant::now(),
            interval_start_ms: AtomicU64::new(0),
            interval_min_wait_us: AtomicU64::new(u64::MAX),
            last_refusal_ms: AtomicU64::new(0),
            overloaded: AtomicBool::new(false),
            refusals: AtomicU64::new(0),
        }
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Notes how long a request that got a connection waited for it.
    pub(super) fn served(&self, waited: Duration) {
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.interval_min_wait_us
            .fetch_min(micros, Ordering::Relaxed);
    }

    /// Notes the queue's length now (`full` when it is at its limit) and
    /// says whether the pool is overloaded; `limits` are the interval and
    /// the wait that make a queue standing.
    pub(super) fn observe(&self, waiting: usize, full: bool, limits: &Standing) -> bool {
        let now = self.now_ms();
        let since = |at: &AtomicU64| now.saturating_sub(at.load(Ordering::Relaxed));
        if self.overloaded.load(Ordering::Relaxed) {
            if since(&self.last_refusal_ms) < limits.interval_ms {
                return true;
            }
            // Nobody refused for a while: the load is back within capacity.
            self.restart_interval(now);
            if self.overloaded.swap(false, Ordering::Relaxed) {
                tracing::info!(
                    cluster = %self.cluster,
                    worker = self.shard,
                    refused = self.refusals.swap(0, Ordering::Relaxed),
                    "clinic pool no longer overloaded"
                );
            }
            return false;
        }
        let mut standing = false;
        if since(&self.interval_start_ms) >= limits.interval_ms {
            // The interval is over: did every request served in it wait
            // long (or was none served while some waited)?
            let min_wait = self.interval_min_wait_us.load(Ordering::Relaxed);
            standing = waiting > 0 && min_wait >= limits.wait_us;
            self.restart_interval(now);
        }
        if full || standing {
            self.last_refusal_ms.store(now, Ordering::Relaxed);
            if !self.overloaded.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    cluster = %self.cluster,
                    worker = self.shard,
                    waiting,
                    queue_full = full,
                    "clinic pool overloaded: waits cut short, excess requests refused"
                );
            }
            return true;
        }
        false
    }

    pub(super) fn restart_interval(&self, now: u64) {
        self.interval_start_ms.store(now, Ordering::Relaxed);
        self.interval_min_wait_us.store(u64::MAX, Ordering::Relaxed);
    }

    pub(super) fn refused(&self) {
        self.last_refusal_ms.store(self.now_ms(), Ordering::Relaxed);
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the pool is overloaded, as the next request would find it.
    pub(super) fn is_overloaded(&self, interval_ms: u64) -> bool {
        self.overloaded.load(Ordering::Relaxed)
            && self
                .now_ms()
                .saturating_sub(self.last_refusal_ms.load(Ordering::Relaxed))
                < interval_ms
    }
}

/// What makes a queue standing: over `interval_ms`, no request served
/// waited less than `wait_us`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Standing {
    pub(super) interval_ms: u64,
    pub(super) wait_us: u64,
}
