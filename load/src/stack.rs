//! A private PostgreSQL and a recept server in this process, on loopback.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use recept::config::{ClusterSettings, Settings};
use recept::dev::{ClusterSpec, PgBinaries, PrivatePostgres};
use recept::master::MasterCache;
use recept::pools::Pools;
use recept::startup::Application;

/// The running stack; PostgreSQL stops and its files go when dropped.
pub struct Stack {
    pub clinic: String,
    pub admin: String,
    pub admin_token: String,
    /// What recept tags clinic keys under, to issue keys directly.
    pub keys: recept::tenancy::KeySecrets,
    /// The secret itself, for a recept started as its own process.
    pub key_secret: String,
    /// The database recept uses, for samplers of its own.
    pub database_url: String,
    pub pools: Arc<Pools>,
    pub cache: MasterCache,
    pub pg: Option<PrivatePostgres>,
    /// A Citus cluster's workers; `pg` is then its coordinator.
    pub workers: Vec<PrivatePostgres>,
    /// `pg`'s streaming replica, when the scenario asked for one; recept
    /// reads admin reports there.
    pub replica: Option<PrivatePostgres>,
    /// The database recept uses, on the replica.
    pub replica_url: Option<String>,
    /// recept's settings, for another server on the same database.
    settings: Settings,
    dir: PathBuf,
}

impl Stack {
    /// Starts PostgreSQL (from the installed binaries) and recept with
    /// `tweak` applied to its settings. Call from the main thread: the
    /// kernel stops PostgreSQL when the thread that started it ends.
    pub async fn start(tweak: impl FnOnce(&mut Settings)) -> anyhow::Result<Stack> {
        let dir = work_dir()?;
        let pg = start_postgres(&dir.join("data"), &[], None)?;
        recept::dev::ensure_database(&pg, "recept").await?;
        let database_url = pg.url("recept");
        Stack::serve(dir, pg, Vec::new(), database_url, tweak).await
    }

    /// Like [`Stack::start`], with a streaming replica of PostgreSQL
    /// (`pg_basebackup -R`) named as the cluster's `replica_url`.
    pub async fn start_with_replica(tweak: impl FnOnce(&mut Settings)) -> anyhow::Result<Stack> {
        let dir = work_dir()?;
        let pg = start_postgres(&dir.join("data"), &[], None)?;
        recept::dev::ensure_database(&pg, "recept").await?;
        pg.base_backup(&PgBinaries::find()?, &dir.join("replica"))?;
        let replica = start_postgres(&dir.join("replica"), &[], None)?;
        let replica_url = replica.url("recept");
        let database_url = pg.url("recept");
        let url = replica_url.clone();
        let mut stack = Stack::serve(dir, pg, Vec::new(), database_url, move |s| {
            s.clusters
                .get_mut("main")
                .expect("cluster main")
                .replica_url = Some(url);
            tweak(s);
        })
        .await?;
        stack.replica = Some(replica);
        stack.replica_url = Some(replica_url);
        Ok(stack)
    }

    /// Another recept on the same database, with this one's settings
    /// changed by `tweak`: its admin URL.
    pub async fn another_server(
        &self,
        tweak: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<String> {
        let mut settings = self.settings.clone();
        tweak(&mut settings);
        let (_, admin_port, _, _) = spawn_recept(settings).await?;
        Ok(format!("http://127.0.0.1:{admin_port}"))
    }

    /// Starts recept on `database_url`, served by `pg` (and, for Citus,
    /// `workers`), which the stack stops when dropped.
    pub async fn serve(
        dir: PathBuf,
        pg: PrivatePostgres,
        workers: Vec<PrivatePostgres>,
        database_url: String,
        tweak: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<Stack> {
        let mut settings = Settings::default();
        settings.server.clinic_listen = "127.0.0.1:0".into();
        settings.server.admin_listen = "127.0.0.1:0".into();
        settings.admin.token = "load-admin-token-0123456789".into();
        settings.clinic.key_secret = "load-key-secret-0123456789abcdef0123".into();
        settings.clusters.insert(
            "main".into(),
            ClusterSettings {
                url: database_url.clone(),
                replica_url: None,
            },
        );
        tweak(&mut settings);
        let admin_token = settings.admin.token.clone();
        let keys = recept::tenancy::KeySecrets::from_settings(&settings.clinic);
        let key_secret = settings.clinic.key_secret.clone();
        let (clinic_port, admin_port, pools, cache) = spawn_recept(settings.clone()).await?;
        crate::report::sample_backends(&database_url);
        let admin = format!("http://127.0.0.1:{admin_port}");
        let clinic = format!("http://127.0.0.1:{clinic_port}");
        Ok(Stack {
            clinic,
            admin,
            admin_token,
            keys,
            key_secret,
            database_url,
            pools,
            cache,
            pg: Some(pg),
            workers,
            replica: None,
            replica_url: None,
            settings,
            dir,
        })
    }
}

/// Starts recept with `settings` on a thread and runtime of its own, as
/// `recept serve` runs, so that its connections are not driven by the load
/// generator's threads: its clinic and admin ports, pools and cache.
async fn spawn_recept(settings: Settings) -> anyhow::Result<(u16, u16, Arc<Pools>, MasterCache)> {
    let (started, built) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("recept".into())
        .spawn(move || {
            if let Err(e) = crate::pin::recept_thread() {
                let _ = started.send(Err(e));
                return;
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = started.send(Err(anyhow::Error::from(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                match Application::build(settings).await {
                    Ok(app) => {
                        let state = app.state();
                        let _ = started.send(Ok((
                            app.clinic_port(),
                            app.admin_port(),
                            state.pools.clone(),
                            state.master_cache.clone(),
                        )));
                        let _ = app.run_until(std::future::pending()).await;
                    }
                    Err(e) => {
                        let _ = started.send(Err(e));
                    }
                }
            });
        })?;
    built.await.context("recept's thread")?
}

impl Stack {
    /// Stops PostgreSQL (fast shutdown), waits `down`, and starts it again on
    /// the same port and data; returns when it accepts connections.
    pub fn restart_postgres(&mut self, down: std::time::Duration) -> anyhow::Result<()> {
        let pg = self.pg.take().context("PostgreSQL is not running")?;
        let port = pg.port();
        pg.stop()?;
        std::thread::sleep(down);
        self.pg = Some(start_postgres(&self.dir.join("data"), &[], Some(port))?);
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(replica) = self.replica.take() {
            let _ = replica.stop();
        }
        if let Some(pg) = self.pg.take() {
            let _ = pg.stop();
        }
        if std::env::var_os("LOAD_PG_LOG").is_some() {
            // Kept for reading; the data beside it goes.
            if let Ok(dir) = crate::report::dir() {
                let _ = std::fs::copy(self.dir.join("data.log"), dir.join("postgres.log"));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A directory for a stack's data, removed when the stack is dropped.
pub fn work_dir() -> anyhow::Result<PathBuf> {
    let dir = tempfile::Builder::new()
        .prefix("recept-load-")
        .tempdir()?
        .keep();
    if nix_is_root() {
        chown_to_postgres(&dir)?;
    }
    Ok(dir)
}

/// A private PostgreSQL with the benchmarks' settings plus `extra`, its
/// data in `data_dir`, pinned off the load generator's CPU.
pub fn start_postgres(
    data_dir: &std::path::Path,
    extra: &[(&str, &str)],
    port: Option<u16>,
) -> anyhow::Result<PrivatePostgres> {
    // Later settings win: PostgreSQL takes the last `-c` of a name.
    let settings: Vec<(String, String)> = [
        ("max_connections", "200"),
        ("shared_buffers", "512MB"),
        ("max_locks_per_transaction", "256"),
    ]
    .iter()
    .chain(extra)
    // LOAD_PG_LOG=1: statements over 50 ms, lock waits, checkpoints and
    // autovacuum go to PostgreSQL's log, to tell where a stall came from.
    .chain(match std::env::var_os("LOAD_PG_LOG") {
        Some(_) => &[
            ("log_min_duration_statement", "50"),
            ("log_lock_waits", "on"),
            ("deadlock_timeout", "20ms"),
            ("log_checkpoints", "on"),
            ("log_autovacuum_min_duration", "0"),
        ][..],
        None => &[],
    })
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let pg = PrivatePostgres::start(
        &PgBinaries::find()?,
        &ClusterSpec {
            data_dir: data_dir.to_path_buf(),
            password: "load-test".into(),
            log_file: data_dir.with_extension("log"),
            settings,
            port,
        },
    )
    .context("starting PostgreSQL")?;
    crate::pin::postgres(pg.data_dir())?;
    Ok(pg)
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn chown_to_postgres(dir: &std::path::Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("chown")
        .arg("postgres:postgres")
        .arg(dir)
        .status()?;
    anyhow::ensure!(status.success(), "chown {} failed", dir.display());
    Ok(())
}

/// Creates `slugs` on cluster `main` with master release `release`,
/// `concurrency` at a time.
pub async fn create_tenants(
    pools: &Arc<Pools>,
    slugs: &[recept::tenancy::Slug],
    release: &str,
    concurrency: usize,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    let actor = recept::audit::Actor::operator();
    let created: Vec<anyhow::Result<()>> = futures::stream::iter(slugs.iter())
        .map(|slug| {
            let actor = &actor;
            async move {
                recept::tenancy::create_tenant(
                    pools,
                    slug,
                    "Bench clinic",
                    "main",
                    Some(release),
                    actor,
                )
                .await?;
                Ok(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    created.into_iter().collect()
}

/// Imports the sample master release (`tenants/master/2026-04.csv`) as
/// `2026-04`, as an operator would.
pub async fn import_sample_release(pools: &recept::pools::Pools) -> anyhow::Result<()> {
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tenants/master/2026-04.csv"
    ))?;
    let items = recept::master::parse_release(&sample)?;
    let operator = recept::audit::Actor::operator();
    recept::master::import_release(pools, "2026-04", &items, &operator).await?;
    Ok(())
}
