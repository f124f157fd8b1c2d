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
