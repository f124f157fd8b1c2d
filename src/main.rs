//! The `recept` command: parse the command line and dispatch.

use std::process::ExitCode;

/// jemalloc, with a background thread that returns memory freed after a
/// burst to the operating system within about a second (`dirty_decay_ms`),
/// whichever thread freed it and whether or not it allocates again: glibc's
/// per-thread arenas kept the peak of a flood of request bodies resident
/// for good.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc reads its options from this symbol at start.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = recept::MALLOC_CONF;

fn main() -> ExitCode {
    recept::cli::main()
}
