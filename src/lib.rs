//! recept: a multi-tenant application server for clinic billing.
//!
//! See ARCHITECTURE.md for the code map and the invariants.

pub mod audit;
pub mod billing;
pub mod cli;
pub mod clinic;
pub mod config;
pub mod db;
pub mod dev;
pub mod http;
pub mod master;
pub mod memory;
pub mod metrics;
pub mod migrate;
pub mod names;
pub mod ops;
pub mod pools;
pub mod startup;
pub mod telemetry;
pub mod tenancy;
pub mod uke;
pub mod walk;

/// jemalloc's options for every program that serves recept (the `recept`
/// command and the load generator, which runs recept in its own process):
/// a background thread returns memory freed after a burst to the
/// operating system within about a second (`dirty_decay_ms`), whichever
/// thread freed it. Each program exports it as `_rjem_malloc_conf`.
pub const MALLOC_CONF: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";
