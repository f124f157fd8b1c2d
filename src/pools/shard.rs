//! A clinic worker's shard of every clinic pool: the claim a worker holds
//! while it runs, and the value its requests carry to reach it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Which shard of every clinic pool a piece of clinic work uses: a clinic
/// worker's own ([`ClinicWorker::shard`]), handed down with the request;
/// [`Shard::FIRST`] for work outside a clinic worker (operators' tools,
/// start-up checks, benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard(pub(super) usize);

impl Shard {
    pub const FIRST: Shard = Shard(0);
}

/// A clinic worker's claim on its shard of every clinic pool, from
/// [`Pools::clinic_worker`]; the shard is free again when it is dropped
/// (the worker stopped).
pub struct ClinicWorker {
    pub(super) shard: usize,
    /// `None` when every shard was taken and this worker shares the first
    /// (its owner keeps the claim).
    pub(super) claimed: Option<Arc<Vec<AtomicBool>>>,
}

impl ClinicWorker {
    /// The shard this worker's requests use.
    pub fn shard(&self) -> Shard {
        Shard(self.shard)
    }
}

impl Drop for ClinicWorker {
    fn drop(&mut self) {
        if let Some(claimed) = &self.claimed {
            claimed[self.shard].store(false, Ordering::SeqCst);
        }
    }
}

/// `total` split into `parts` nearly equal parts; the first ones get the
/// remainder.
pub(super) fn split(total: usize, parts: usize, index: usize) -> usize {
    total / parts + usize::from(index < total % parts)
}
