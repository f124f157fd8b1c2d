//! The `recept` command: parse the command line and dispatch.

use std::process::ExitCode;

/// mimalloc returns freed memory to the operating system within
/// milliseconds of a burst (its purge delay), where glibc's per-thread
/// arenas kept the peak of a flood of request bodies resident for good.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    recept::cli::main()
}
