//! Integration tests: a real PostgreSQL, a real server, over HTTP.

mod cli;
mod helpers;
mod master;
mod routing;
mod tenants;
