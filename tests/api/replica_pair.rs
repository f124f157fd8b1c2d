//! A primary and its streaming replica for the replica tests: a private
//! primary with one database, a base backup of it taken with
//! `pg_basebackup -R` as the unprivileged user the servers run as, and the
//! replica started on it as a hot standby. Each test gets a pair of its own,
//! since the tests pause, freeze and stop its servers.
//!
//! The servers are started and stopped by one thread of the pair's own,
//! which lives as long as the pair: the kernel stops a private PostgreSQL
//! when the thread that started it ends, so neither a blocking-pool thread
//! nor a runtime's worker may start one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use recept::dev::{PgBinaries, PrivatePostgres};
use uuid::Uuid;

use crate::helpers::{cluster_dir, connect, spec, url};

const DATABASE: &str = "recept";

type Servers = HashMap<&'static str, PrivatePostgres>;
type Job = Box<dyn FnOnce(&mut Servers) + Send>;

/// The thread that starts, holds and stops the pair's servers.
struct Keeper {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keeper {
    fn new() -> Keeper {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::spawn(move || {
            let mut servers = Servers::new();
            for job in queue {
                job(&mut servers);
            }
            // The pair is gone: its servers stop as they drop.
        });
        Keeper {
            jobs: Some(jobs),
            thread: Some(thread),
        }
    }

    /// Runs `job` on the keeper's thread and waits for its answer.
    fn run<T: Send + 'static>(&self, job: impl FnOnce(&mut Servers) -> T + Send + 'static) -> T {
        let (answer, answered) = mpsc::channel();
        self.jobs
            .as_ref()
            .expect("the keeper runs")
            .send(Box::new(move |servers| {
                let _ = answer.send(job(servers));
            }))
            .expect("the keeper runs");
        tokio::task::block_in_place(|| answered.recv().expect("the keeper answers"))
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub struct ReplicaPair {
    keeper: Keeper,
    bins: PgBinaries,
    dir: PathBuf,
    password: String,
    primary_data: PathBuf,
    replica_port: Option<u16>,
    /// The database's URL on the primary.
    pub primary_url: String,
    /// The same database's URL on the replica.
    pub replica_url: String,
}

impl ReplicaPair {
    /// Starts a pair. The test must run on a multi-threaded runtime.
    pub async fn start() -> ReplicaPair {
        let bins = PgBinaries::find().expect("PostgreSQL server binaries");
        let dir = cluster_dir("recept-replica-");
        let password = Uuid::new_v4().simple().to_string();
        let keeper = Keeper::new();
        let mut primary_spec = spec(&dir.join("primary"), &password);
        primary_spec.log_file = dir.join("primary.log");
        let (primary_port, primary_data) = {
            let bins = bins.clone();
            keeper.run(move |servers| {
                let pg = PrivatePostgres::start(&bins, &primary_spec).expect("the primary starts");
                let started = (pg.port(), pg.data_dir().to_path_buf());
                servers.insert("primary", pg);
                started
            })
        };
        connect(&url(primary_port, &password, "postgres"))
            .await
            .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
            .await
            .expect("the test database");
        {
            let (bins, target) = (bins.clone(), dir.join("replica").join("data"));
            keeper.run(move |servers| {
                servers["primary"]
                    .base_backup(&bins, &target)
                    .expect("a base backup of the primary")
            });
        }
        let mut pair = ReplicaPair {
            keeper,
            bins,
            primary_url: url(primary_port, &password, DATABASE),
            replica_url: String::new(),
            dir,
            password,
            primary_data,
            replica_port: None,
        };
        pair.restart_replica().await;
        pair
    }

    /// Starts the replica: the first time on a free port, again after
    /// [`ReplicaPair::stop_replica`] on the same one.
    pub async fn restart_replica(&mut self) {
        let mut replica = spec(&self.dir.join("replica"), &self.password);
        replica.log_file = self.dir.join("replica.log");
        replica.port = self.replica_port;
        let bins = self.bins.clone();
        let port = self.keeper.run(move |servers| {
            let pg = PrivatePostgres::start(&bins, &replica).expect("the replica starts");
            let port = pg.port();
            servers.insert("replica", pg);
            port
        });
        self.replica_port = Some(port);
        self.replica_url = url(port, &self.password, DATABASE);
    }

    /// Stops the replica (fast shutdown).
    pub async fn stop_replica(&mut self) {
        self.keeper.run(|servers| {
            servers
                .remove("replica")
                .expect("the replica runs")
                .stop()
                .expect("the replica stops")
        });
    }

    /// Waits until the replica has replayed all the primary has written.
    pub async fn wait_replayed(&self) {
        let primary = connect(&self.primary_url).await;
        let lsn: String = primary
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .unwrap()
            .get(0);
        let replica = connect(&self.replica_url).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let replayed: bool = replica
                .query_one(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                    &[&lsn],
                )
                .await
                .unwrap()
                .get(0);
            if replayed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replica did not replay up to {lsn} within a minute"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) every process of the
    /// primary, the postmaster and all its children: a primary that answers
    /// nothing, as one held busy.
    pub fn freeze_primary(&self, frozen: bool) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let Ok(text) = std::fs::read_to_string(self.primary_data.join("postmaster.pid")) else {
            return;
        };
        let Some(postmaster) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        else {
            return;
        };
        let signal = if frozen {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        // The postmaster first, so that it forks nothing new meanwhile;
        // then its children, found by parent (each backend leads a session
        // of its own, so not by process group).
        let _ = kill(Pid::from_raw(postmaster), signal);
        let children = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|stat| {
                        let rest = &stat[stat.rfind(')')? + 2..];
                        rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                    })
                    == Some(postmaster)
            });
        for pid in children {
            // A child may have ended since it was listed.
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}

impl Drop for ReplicaPair {
    fn drop(&mut self) {
        self.freeze_primary(false);
        // The keeper stops both servers as it ends, before the files go.
        let keeper = std::mem::replace(
            &mut self.keeper,
            Keeper {
                jobs: None,
                thread: None,
            },
        );
        drop(keeper);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
