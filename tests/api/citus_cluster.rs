//! A Citus cluster for the Citus tests: a coordinator and two workers, all
//! on loopback, started like the other test clusters when Citus is
//! installed for the PostgreSQL server, and a fresh database on it per test.
//!
//! Nothing here builds or fetches Citus: without an installed `citus.so`
//! (and its extension files) every Citus test prints why it is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, OnceLock};

use recept::dev::{PgBinaries, PrivatePostgres};
use uuid::Uuid;

use crate::helpers::{cluster_dir, connect, keep_until_exit, spec, url};

struct CitusCluster {
    coordinator: u16,
    workers: [u16; 2],
    password: String,
}

static CLUSTER: OnceLock<Result<CitusCluster, String>> = OnceLock::new();
/// Databases are set up one at a time: nodes added to several databases
/// at once made Citus fail a connection it marks as essential.
static SETTING_UP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where the server looks for extension libraries and control files:
/// `pg_config`'s answer, or Debian's layout beside the binaries.
fn extension_dirs(bins: &PgBinaries) -> (PathBuf, PathBuf) {
    let ask = |flag: &str| {
        Command::new(bins.bin_dir.join("pg_config"))
            .arg(flag)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
    };
    let version_dir = bins.bin_dir.parent().unwrap_or(Path::new("/"));
    let lib = ask("--pkglibdir").unwrap_or_else(|| version_dir.join("lib"));
    let share = ask("--sharedir").unwrap_or_else(|| {
        let version = version_dir.file_name().unwrap_or_default();
        Path::new("/usr/share/postgresql").join(version)
    });
    (lib, share.join("extension"))
}

/// Why the Citus tests cannot run on this machine, if they cannot.
fn why_not_installed(bins: &PgBinaries) -> Option<String> {
    let (lib, extensions) = extension_dirs(bins);
    let library = lib.join("citus.so");
    let control = extensions.join("citus.control");
    (!library.is_file() || !control.is_file()).then(|| {
        format!(
            "Citus is not installed for the PostgreSQL server in {} (looked for {} and {})",
            bins.bin_dir.display(),
            library.display(),
            control.display()
        )
    })
}

fn start() -> Result<CitusCluster, String> {
    let bins = PgBinaries::find().map_err(|e| e.to_string())?;
    if let Some(why) = why_not_installed(&bins) {
        return Err(why);
    }
    let password = Uuid::new_v4().simple().to_string();
    let (tx, rx) = mpsc::channel();
    for _ in 0..3 {
        let (tx, bins, password) = (tx.clone(), bins.clone(), password.clone());
        // Like the shared clusters: started by a thread that lives until
        // the process exits, and stopped at exit.
        std::thread::spawn(move || {
            let dir = cluster_dir("recept-citus-");
            let mut node = spec(&dir, &password);
            node.settings.extend(
                [
                    ("shared_preload_libraries", "citus"),
                    // Moving a tenant between workers replicates logically.
                    ("wal_level", "logical"),
                    // A maintenance daemon per database and node, and the
                    // replication workers of a move.
                    ("max_worker_processes", "64"),
                    // Loopback only; and libpq would look for client
                    // certificates in a home the server's user cannot read.
                    ("citus.node_conninfo", "sslmode=disable"),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string())),
            );
            match PrivatePostgres::start(&bins, &node) {
                Ok(pg) => {
                    tx.send(Ok(pg.port())).unwrap();
                    keep_until_exit(pg, dir);
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => tx
                    .send(Err(format!("a Citus node did not start: {e:#}")))
                    .unwrap(),
            }
        });
    }
    let ports = (0..3)
        .map(|_| rx.recv().map_err(|e| e.to_string())?)
        .collect::<Result<Vec<u16>, String>>()?;
    Ok(CitusCluster {
        coordinator: ports[0],
        workers: [ports[1], ports[2]],
        password,
    })
}

/// A Citus database for one test: the URL of a fresh database on the
/// coordinator, with both workers added and schema-based sharding on, as
/// `../README.md` ("On Citus") sets one up. `None`, after saying why on
/// stderr, when Citus is not installed here.
pub async fn citus_database(test: &str) -> Option<CitusDatabase> {
    let cluster = match CLUSTER.get_or_init(start) {
        Ok(cluster) => cluster,
        Err(why) => {
            eprintln!("skipped {test}: {why}");
            // `.ci/run` names this file and prints what it holds, since
            // cargo shows nothing of a test that passed.
            if let Some(path) = std::env::var_os("RECEPT_TEST_SKIPS") {
                use std::io::Write;
                if let Ok(mut file) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                {
                    let _ = writeln!(file, "{test}: {why}");
                }
            }
            return None;
        }
    };
    let _one_at_a_time = SETTING_UP.lock().await;
    let name = format!("citus_{}", Uuid::new_v4().simple());
    let nodes = [cluster.coordinator, cluster.workers[0], cluster.workers[1]];
    for port in nodes {
        let admin = connect(&url(port, &cluster.password, "postgres")).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a database on every node");
        let db = connect(&url(port, &cluster.password, &name)).await;
        // The nodes reach one another as the superuser, by password.
        db.batch_execute(&format!(
            "CREATE EXTENSION citus; \
             INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) \
             VALUES (0, 'recept', 'password={}')",
            cluster.password
        ))
        .await
        .expect("Citus in the new database");
    }
    let url = url(cluster.coordinator, &cluster.password, &name);
    let coordinator = connect(&url).await;
    coordinator
        .execute(
            "SELECT citus_set_coordinator_host('127.0.0.1', $1)",
            &[&i32::from(cluster.coordinator)],
        )
        .await
        .expect("the coordinator");
    for worker in cluster.workers {
        coordinator
            .execute(
                "SELECT citus_add_node('127.0.0.1', $1)",
                &[&i32::from(worker)],
            )
            .await
            .expect("a worker");
    }
    coordinator
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET citus.enable_schema_based_sharding = on"
        ))
        .await
        .expect("schema-based sharding");
    Some(CitusDatabase {
        url,
        workers: cluster.workers,
    })
}

/// A test's database on the Citus cluster.
pub struct CitusDatabase {
    /// The coordinator's URL for it, as recept's cluster URL.
    pub url: String,
    /// The workers' ports.
    pub workers: [u16; 2],
}

impl CitusDatabase {
    /// The port of the worker holding tenant `slug`'s tables.
    pub async fn worker_of(&self, slug: &str) -> u16 {
        let db = connect(&self.url).await;
        let ports: Vec<i32> = db
            .query(
                "SELECT DISTINCT nodeport FROM citus_shards s JOIN pg_class c ON c.oid = s.table_name \
                 WHERE c.relnamespace = to_regnamespace($1)",
                &[&format!("t_{slug}")],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            ports.len(),
            1,
            "tenant {slug}'s tables on one worker: {ports:?}"
        );
        ports[0] as u16
    }
}
