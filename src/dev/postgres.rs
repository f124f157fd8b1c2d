//! A private PostgreSQL cluster started from the installed server binaries:
//! the embedded default behind `recept dev` and the test suite.
//!
//! PostgreSQL refuses to run as root, so when recept runs as root the
//! cluster runs as the unprivileged `postgres` user, with its data directory
//! in a place that user can reach.
//!
//! Just past 400 lines: starting, waiting for and stopping the server as
//! another user belong together.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{chown, Pid, User};

/// The superuser of a private cluster.
pub const SUPERUSER: &str = "recept";

/// The directory holding `initdb`, `postgres` and `pg_ctl`.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub bin_dir: PathBuf,
}

impl PgBinaries {
    /// Looks in `PATH`, then in `/usr/lib/postgresql/*/bin` (newest first).
    pub fn find() -> anyhow::Result<PgBinaries> {
        Self::find_in(
            std::env::var_os("PATH").as_deref(),
            Path::new("/usr/lib/postgresql"),
        )
    }

    /// Looks in the directories of `path`, then in `<versions>/*/bin`.
    pub fn find_in(
        path: Option<&std::ffi::OsStr>,
        versions_dir: &Path,
    ) -> anyhow::Result<PgBinaries> {
        let has_all = |dir: &Path| ["initdb", "postgres"].iter().all(|b| dir.join(b).is_file());
        if let Some(path) = path {
            for dir in std::env::split_paths(path) {
                if has_all(&dir) {
                    // Prefer the real directory: initdb looks for its
                    // siblings next to its own resolved path.
                    let real = fs::canonicalize(dir.join("initdb"))
                        .ok()
                        .and_then(|p| p.parent().map(Path::to_path_buf))
                        .filter(|d| has_all(d))
                        .unwrap_or(dir);
                    return Ok(PgBinaries { bin_dir: real });
                }
            }
        }
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(versions_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = entry.path().join("bin");
                has_all(&bin).then_some((version, bin))
            })
            .collect();
        versions.sort();
        match versions.pop() {
            Some((_, bin_dir)) => Ok(PgBinaries { bin_dir }),
            None => bail!(
                "no PostgreSQL server binaries (initdb, postgres) were found in PATH or \
                 /usr/lib/postgresql/*/bin; install them, e.g. `apt-get install -y postgresql` \
                 on Debian or Ubuntu, then run this again"
            ),
        }
    }

    fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

/// The user the cluster's processes run as, when that is not us.
#[derive(Debug, Clone)]
struct RunAs {
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
}

fn run_as() -> anyhow::Result<Option<RunAs>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match User::from_name("postgres")? {
        Some(user) => Ok(Some(RunAs {
            uid: user.uid,
            gid: user.gid,
        })),
        None => bail!(
            "PostgreSQL refuses to run as root and there is no `postgres` user to run it as; \
             create one (`useradd --system postgres`) or run recept as an unprivileged user"
        ),
    }
}

/// Where a cluster lives and how to reach it.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Where the data directory is wanted. When running as root and the
    /// `postgres` user cannot reach it, the data lives under `/var/tmp`
    /// instead and this path becomes a symbolic link to it.
    pub data_dir: PathBuf,
    /// The superuser's password, set at `initdb`.
    pub password: String,
    /// Where the server's log goes.
    pub log_file: PathBuf,
    /// Extra `-c name=value` settings.
    pub settings: Vec<(String, String)>,
    /// The port to listen on; a free one when `None`.
    pub port: Option<u16>,
}

/// A running private cluster. Stopped (fast shutdown) by [`PrivatePostgres::stop`];
/// if recept dies, the cluster receives SIGINT from the kernel and stops too.
pub struct PrivatePostgres {
    child: Child,
    port: u16,
    password: String,
    data_dir: PathBuf,
}

impl PrivatePostgres {
    /// Initialises the cluster on first use, then starts it on a free
    /// loopback port and waits until it accepts connections.
    pub fn start(bins: &PgBinaries, spec: &ClusterSpec) -> anyhow::Result<PrivatePostgres> {
        let run_as = run_as()?;
        // PostgreSQL works inside its data directory: relative paths would
        // point elsewhere once it has changed into it.
        let wanted = std::path::absolute(&spec.data_dir)?;
        let data_dir = reachable_data_dir(&wanted, run_as.as_ref())?;
        if !data_dir.join("PG_VERSION").is_file() {
            initdb(bins, &data_dir, &spec.password, run_as.as_ref())?;
        }
        let port = match spec.port {
            Some(port) => port,
            None => free_port()?,
        };
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_file)
            .with_context(|| format!("opening {}", spec.log_file.display()))?;
        let mut command = Command::new(bins.tool("postgres"));
        command
            .arg("-D")
            .arg(&data_dir)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", data_dir.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (name, value) in &spec.settings {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        // Its own process group, so a Ctrl-C in the terminal reaches recept
        // (which then stops PostgreSQL after the last request) and not
        // PostgreSQL directly.
        command.process_group(0);
        if let Some(user) = &run_as {
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        // SAFETY: prctl is async-signal-safe and touches no memory.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGINT).map_err(std::io::Error::from)
            });
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", bins.tool("postgres").display()))?;
        wait_ready(&mut child, &data_dir, &spec.log_file)?;
        Ok(PrivatePostgres {
            child,
            port,
            password: spec.password.clone(),
            data_dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory actually used.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// Takes a base backup of this server into `data_dir` with
    /// `pg_basebackup -R` (a fast checkpoint, the WAL streamed alongside),
    /// as the user the server runs as: a data directory that
    /// [`PrivatePostgres::start`] then starts as its streaming replica.
    pub fn base_backup(&self, bins: &PgBinaries, data_dir: &Path) -> anyhow::Result<()> {
        let run_as = run_as()?;
        let wanted = std::path::absolute(data_dir)?;
        let target = reachable_data_dir(&wanted, run_as.as_ref())?;
        let mut command = Command::new(bins.tool("pg_basebackup"));
        command
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
            ])
            .arg("-D")
            .arg(&target)
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
            .env("PGPASSWORD", &self.password)
            .stdin(Stdio::null());
        if let Some(user) = &run_as {
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        let output = command
            .output()
            .with_context(|| format!("running {}", bins.tool("pg_basebackup").display()))?;
        if !output.status.success() {
            bail!(
                "pg_basebackup into {} failed:\n{}",
                target.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Stops the server with a fast shutdown and waits for it.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = kill(pid, Signal::SIGQUIT);
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The data directory to use: `wanted` itself, or, when running as another
/// user who cannot reach it, a directory under `/var/tmp` linked from it.
fn reachable_data_dir(wanted: &Path, run_as: Option<&RunAs>) -> anyhow::Result<PathBuf> {
    let Some(user) = run_as else {
        fs::create_dir_all(wanted)?;
        fs::set_permissions(wanted, fs::Permissions::from_mode(0o700))?;
        return Ok(wanted.to_path_buf());
    };
    if let Ok(target) = fs::read_link(wanted) {
        return Ok(target);
    }
    if let Some(parent) = wanted.parent() {
        fs::create_dir_all(parent)?;
    }
    if reachable_by(wanted, user) {
        fs::create_dir_all(wanted)?;
        chown(wanted, Some(user.uid), Some(user.gid))?;
        fs::set_permissions(wanted, fs::Permissions::from_mode(0o700))?;
        return Ok(wanted.to_path_buf());
    }
    let parent = fs::canonicalize(wanted.parent().unwrap_or(Path::new(".")))?;
    let digest = sha2::Sha256::digest(parent.to_string_lossy().as_bytes());
    let name = format!(
        "recept-{}",
        digest
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let home = PathBuf::from("/var/tmp").join(name);
    fs::create_dir_all(&home)?;
    chown(&home, Some(user.uid), Some(user.gid))?;
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700))?;
    let data = home.join("data");
    if wanted.exists() {
        bail!(
            "{} exists but is not a link to a data directory the postgres user can reach; \
             move it away and run again",
            wanted.display()
        );
    }
    std::os::unix::fs::symlink(&data, wanted)?;
    Ok(data)
}

/// Whether `user` can reach `path`: every existing ancestor must be
/// searchable by it (as owner or as anyone; groups are not counted).
fn reachable_by(path: &Path, user: &RunAs) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(absolute) = std::path::absolute(path) else {
        return false;
    };
    absolute
        .ancestors()
        .skip(1)
        .all(|ancestor| match fs::metadata(ancestor) {
            Ok(meta) if meta.uid() == user.uid.as_raw() => meta.mode() & 0o100 != 0,
            Ok(meta) => meta.mode() & 0o001 != 0,
            Err(_) => true,
        })
}

use sha2::Digest;

fn initdb(
    bins: &PgBinaries,
    data_dir: &Path,
    password: &str,
    run_as: Option<&RunAs>,
) -> anyhow::Result<()> {
    let home = data_dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(home)?;
    let pwfile = home.join(".pwfile");
    fs::write(&pwfile, password)?;
    fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600))?;
    if let Some(user) = run_as {
        chown(&pwfile, Some(user.uid), Some(user.gid))?;
    }
    let mut command = Command::new(bins.tool("initdb"));
    command
        .arg("-D")
        .arg(data_dir)
        .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync"])
        .args(["--auth-local=scram-sha-256", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .stdin(Stdio::null());
    if let Some(user) = run_as {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    let output = command
        .output()
        .with_context(|| format!("running {}", bins.tool("initdb").display()))?;
    let _ = fs::remove_file(&pwfile);
    if !output.status.success() {
        bail!(
            "initdb failed for {}:\n{}",
            data_dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Waits until `postmaster.pid` says the server is ready.
fn wait_ready(child: &mut Child, data_dir: &Path, log_file: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid_file = data_dir.join("postmaster.pid");
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "PostgreSQL exited during start-up ({status}); its log ({}) ends with:\n{}",
                log_file.display(),
                tail(log_file)
            );
        }
        if let Ok(text) = fs::read_to_string(&pid_file) {
            // Line 1 of postmaster.pid is the postmaster's pid, line 8 its
            // status; a file left by another server does not count.
            let lines: Vec<&str> = text.lines().collect();
            let ours = lines.first().and_then(|l| l.trim().parse::<u32>().ok()) == Some(child.id());
            if ours && lines.get(7).is_some_and(|l| l.trim() == "ready") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "PostgreSQL did not become ready within 60 s; see {}",
                log_file.display()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_say_how_to_install_them() {
        let empty = tempfile::tempdir().unwrap();
        let message = PgBinaries::find_in(Some(empty.path().as_os_str()), empty.path())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("apt-get install -y postgresql"),
            "{message}"
        );
    }

    #[test]
    fn the_newest_installed_version_is_chosen() {
        let root = tempfile::tempdir().unwrap();
        for version in ["13", "15", "9"] {
            let bin = root.path().join(version).join("bin");
            fs::create_dir_all(&bin).unwrap();
            fs::write(bin.join("initdb"), "").unwrap();
            fs::write(bin.join("postgres"), "").unwrap();
        }
        let found = PgBinaries::find_in(None, root.path()).unwrap();
        assert_eq!(found.bin_dir, root.path().join("15").join("bin"));
    }
}
