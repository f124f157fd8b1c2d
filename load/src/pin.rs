//! `--pin`: the load generator on the last CPU, recept and its PostgreSQL
//! on the others, so that on a small machine the generator's own work does
//! not show up as recept's latency (and the reverse).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

static PINNED: AtomicBool = AtomicBool::new(false);
/// The CPUs this process could use before it pinned anything (pinning
/// changes what `available_parallelism` reports).
static CPUS: AtomicUsize = AtomicUsize::new(0);

fn cpus() -> usize {
    match CPUS.load(Ordering::SeqCst) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

fn set(pid: Pid, cpus: impl Iterator<Item = usize>) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    for cpu in cpus {
        set.set(cpu)?;
    }
    sched_setaffinity(pid, &set)?;
    Ok(())
}

/// Pins the calling thread (and the threads it will start) to the last CPU.
pub fn generator() -> anyhow::Result<()> {
    let n = cpus();
    anyhow::ensure!(n >= 2, "--pin needs at least two CPUs");
    CPUS.store(n, Ordering::SeqCst);
    set(Pid::from_raw(0), std::iter::once(n - 1))?;
    PINNED.store(true, Ordering::SeqCst);
    Ok(())
}

/// With `--pin`, pins the calling thread (recept's, before it starts its
/// runtime and workers) to every CPU but the generator's.
pub fn recept_thread() -> anyhow::Result<()> {
    if PINNED.load(Ordering::SeqCst) {
        set(Pid::from_raw(0), 0..cpus() - 1)?;
    }
    Ok(())
}

/// With `--pin`, pins PostgreSQL's postmaster (and so every backend it
/// starts from now on) to every CPU but the generator's.
pub fn postgres(data_dir: &std::path::Path) -> anyhow::Result<()> {
    if !PINNED.load(Ordering::SeqCst) {
        return Ok(());
    }
    let pid_file = std::fs::read_to_string(data_dir.join("postmaster.pid"))?;
    let pid: i32 = pid_file
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no pid in postmaster.pid"))?;
    let list = (0..cpus() - 1)
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &list, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "taskset could not pin PostgreSQL ({pid})");
    Ok(())
}

/// With `--pin`, pins a child process (a recept of its own) to every CPU
/// but the generator's.
pub fn child(pid: u32) -> anyhow::Result<()> {
    if PINNED.load(Ordering::SeqCst) {
        set(Pid::from_raw(pid as i32), 0..cpus() - 1)?;
    }
    Ok(())
}
