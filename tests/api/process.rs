//! A `recept serve` child process on a test database: for what needs a real
//! process (signals, a kill, its log output).

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::helpers::TestApp;

pub struct Process {
    child: Child,
    pub clinic: String,
    pub admin: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Process {
    /// `recept serve` against `app`'s database and admin token, with JSON
    /// logs at `info`, listening on `clinic_port` (or a free one). Returns
    /// once it answers `/healthz`.
    pub async fn start(app: &TestApp, clinic_port: Option<u16>, env: &[(&str, &str)]) -> Process {
        let clinic_port = clinic_port.unwrap_or_else(free_port);
        let admin_port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("recept.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_recept"));
        for (name, _) in std::env::vars() {
            if name.starts_with("RECEPT__") || name.starts_with("OTEL_") {
                command.env_remove(name);
            }
        }
        command
            .arg("serve")
            .env("RUST_LOG", "info")
            .env("RECEPT__SERVER__LOG_FORMAT", "json")
            .env(
                "RECEPT__SERVER__CLINIC_LISTEN",
                format!("127.0.0.1:{clinic_port}"),
            )
            .env(
                "RECEPT__SERVER__ADMIN_LISTEN",
                format!("127.0.0.1:{admin_port}"),
            )
            .env("RECEPT__CLUSTERS__MAIN__URL", &app.db_url)
            .env("RECEPT__ADMIN__TOKEN", &app.admin_token)
            .env("RECEPT__CLINIC__KEY_SECRET", &app.key_secret)
            .env("RECEPT__CLINIC__POOL_SIZE", "4")
            .env("RECEPT__ADMIN__POOL_SIZE", "2")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = command.spawn().expect("recept starts");
        let mut process = Process {
            child,
            clinic: format!("http://127.0.0.1:{clinic_port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            log,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = http.get(format!("{}/healthz", process.admin)).send().await {
                if response.status().is_success() {
                    return process;
                }
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("recept exited ({status}): {}", process.logs());
            }
            assert!(
                Instant::now() < deadline,
                "recept did not start: {}",
                process.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "recept did not exit: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
