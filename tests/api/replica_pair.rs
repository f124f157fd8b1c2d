//! A primary and its streaming replica for the replica tests: a private
//! primary with one database, a base backup of it taken with
//! `pg_basebackup -R` as the unprivileged user the servers run as, and the
//! replica started on it as a hot standby. Each test gets a pair of its own,
//! since the tests pause, freeze and stop its servers.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use recept::dev::{PgBinaries, PrivatePostgres};
use uuid::Uuid;

use crate::helpers::{cluster_dir, connect, spec, url};

const DATABASE: &str = "recept";

pub struct ReplicaPair {
    bins: PgBinaries,
    dir: PathBuf,
    password: String,
    primary: Option<PrivatePostgres>,
    replica: Option<PrivatePostgres>,
    replica_port: u16,
    /// The database's URL on the primary.
    pub primary_url: String,
    /// The same database's URL on the replica.
    pub replica_url: String,
}

impl ReplicaPair {
    pub async fn start() -> ReplicaPair {
        tokio::task::spawn_blocking(Self::start_blocking)
            .await
            .expect("the pair starts")
    }

    fn start_blocking() -> ReplicaPair {
        let bins = PgBinaries::find().expect("PostgreSQL server binaries");
        let dir = cluster_dir("recept-replica-");
        let password = Uuid::new_v4().simple().to_string();
        let mut primary_spec = spec(&dir.join("primary"), &password);
        primary_spec.log_file = dir.join("primary.log");
        let primary = PrivatePostgres::start(&bins, &primary_spec).expect("the primary starts");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            connect(&url(primary.port(), &password, "postgres"))
                .await
                .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
                .await
                .expect("the test database");
        });
        primary
            .base_backup(&bins, &dir.join("replica").join("data"))
            .expect("a base backup of the primary");
        let mut pair = ReplicaPair {
            primary_url: url(primary.port(), &password, DATABASE),
            replica_url: String::new(),
            bins,
            dir,
            password,
            primary: Some(primary),
            replica: None,
            replica_port: 0,
        };
        pair.start_replica_blocking();
        pair
    }

    fn replica_spec(&self) -> recept::dev::ClusterSpec {
        let mut replica = spec(&self.dir.join("replica"), &self.password);
        replica.log_file = self.dir.join("replica.log");
        if self.replica_port != 0 {
            replica.port = Some(self.replica_port);
        }
        replica
    }

    fn start_replica_blocking(&mut self) {
        let replica =
            PrivatePostgres::start(&self.bins, &self.replica_spec()).expect("the replica starts");
        self.replica_port = replica.port();
        self.replica_url = url(replica.port(), &self.password, DATABASE);
        self.replica = Some(replica);
    }

    /// Starts the replica again after [`ReplicaPair::stop_replica`], on the
    /// same port.
    pub async fn restart_replica(&mut self) {
        tokio::task::block_in_place(|| self.start_replica_blocking());
    }

    /// Stops the replica (fast shutdown).
    pub async fn stop_replica(&mut self) {
        let replica = self.replica.take().expect("the replica runs");
        tokio::task::block_in_place(|| replica.stop()).expect("the replica stops");
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
    /// primary: a primary that answers nothing, as one held busy.
    pub fn freeze_primary(&self, frozen: bool) {
        use nix::sys::signal::{killpg, Signal};
        let primary = self.primary.as_ref().expect("the primary runs");
        let pid_file = primary.data_dir().join("postmaster.pid");
        let text = std::fs::read_to_string(pid_file).expect("postmaster.pid");
        let pid: i32 = text.lines().next().unwrap().trim().parse().unwrap();
        // The postmaster leads a process group of its own, with every
        // backend in it.
        let signal = if frozen {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        killpg(nix::unistd::Pid::from_raw(pid), signal).expect("signal the primary");
    }
}

impl Drop for ReplicaPair {
    fn drop(&mut self) {
        if self.primary.is_some() {
            self.freeze_primary(false);
        }
        drop(self.replica.take());
        drop(self.primary.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
