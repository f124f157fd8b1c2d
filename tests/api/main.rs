//! Integration tests: a real PostgreSQL, a real server, over HTTP.

mod admin;
mod billing;
mod billing_rules;
mod bodies;
mod budget;
mod citus;
mod citus_cluster;
mod claims_file;
mod cli;
mod clinic_guards;
mod diseases;
mod faults;
mod helpers;
mod isolation;
mod keys;
mod master;
mod migrations;
mod observability;
mod official_master;
mod process;
mod reliability;
mod routing;
mod tenants;
mod tidy;
mod transfer;
