//! `recept dev`: recept on a private PostgreSQL with demo tenants, for a
//! fresh machine with nothing set up.
//!
//! State that must survive between runs (the database password, the admin
//! token, the demo tenants' keys) is kept in `<state dir>/state.toml`; the
//! data directory is `<state dir>/pgdata`.

mod postgres;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

pub use postgres::{ClusterSpec, PgBinaries, PrivatePostgres};

use crate::audit::Actor;
use crate::config::{ClusterSettings, Settings};
use crate::master;
use crate::pools::{Pools, Role};
use crate::tenancy::{create_tenant, ApiKey, KeySecrets, Presented, Registry, Slug};

/// The database recept uses inside a private cluster.
pub const DATABASE: &str = "recept";

/// What `recept dev` remembers between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DevState {
    pub pg_password: String,
    pub admin_token: String,
    /// `clinic.key_secret` of the dev server (made on the first run of a
    /// version that tags keys).
    #[serde(default)]
    pub key_secret: String,
    /// Demo tenants' clinic API keys, by slug.
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
}

impl DevState {
    /// Loads the state, or makes new secrets on the first run.
    pub fn load_or_create(path: &Path) -> anyhow::Result<DevState> {
        if path.is_file() {
            let text = fs::read_to_string(path)?;
            let mut state: DevState =
                toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
            if state.key_secret.is_empty() {
                state.key_secret = secret(48);
            }
            return Ok(state);
        }
        Ok(DevState {
            pg_password: secret(24),
            admin_token: secret(32),
            key_secret: secret(48),
            keys: BTreeMap::new(),
        })
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        fs::write(path, toml::to_string(self)?)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        Ok(())
    }
}

/// A random URL-safe secret of `bytes` bytes.
pub fn secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// A tenant described by `tenants/*.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantManifest {
    pub slug: String,
    pub name: String,
    pub cluster: Option<String>,
    /// The master release to copy (default: the newest).
    pub master_release: Option<String>,
}

/// Reads every `*.toml` in `dir`, sorted by file name.
pub fn read_manifests(dir: &Path) -> anyhow::Result<Vec<TenantManifest>> {
    let mut paths: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let text = fs::read_to_string(path)?;
            let manifest: TenantManifest =
                toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
            Slug::parse(&manifest.slug)
                .with_context(|| format!("{}: slug `{}`", path.display(), manifest.slug))?;
            Ok(manifest)
        })
        .collect()
}

/// Starts the private cluster for `state_dir` and makes sure the recept
/// database exists. Must be called from a thread that outlives the cluster
/// (the kernel stops PostgreSQL when that thread ends).
pub fn start_cluster(state_dir: &Path, state: &DevState) -> anyhow::Result<PrivatePostgres> {
    let bins = PgBinaries::find()?;
    fs::create_dir_all(state_dir)?;
    let spec = ClusterSpec {
        data_dir: state_dir.join("pgdata"),
        password: state.pg_password.clone(),
        log_file: state_dir.join("postgres.log"),
        settings: vec![("max_connections".into(), "200".into())],
        port: None,
    };
    PrivatePostgres::start(&bins, &spec)
}

/// Creates `database` in the cluster unless it exists.
pub async fn ensure_database(pg: &PrivatePostgres, database: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls)
        .await
        .context("connecting to the private PostgreSQL")?;
    let task = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!(
                "CREATE DATABASE {}",
                crate::names::quote_ident(database)
            ))
            .await?;
    }
    drop(client);
    let _ = task.await;
    Ok(())
}

/// The settings `recept dev` serves with: `base` plus the private cluster
/// and the remembered admin token.
pub fn dev_settings(mut base: Settings, pg: &PrivatePostgres, state: &DevState) -> Settings {
    base.clusters.insert(
        base.control.cluster.clone(),
        ClusterSettings {
            url: pg.url(DATABASE),
            replica_url: None,
        },
    );
    base.admin.token = state.admin_token.clone();
    base.clinic.key_secret = state.key_secret.clone();
    base
}

/// Creates the manifests' tenants that do not exist yet and makes sure each
/// has a working key, reusing the remembered one. Returns (slug, key) pairs.
pub async fn ensure_demo_tenants(
    pools: &Pools,
    settings: &Settings,
    manifests: &[TenantManifest],
    state: &mut DevState,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut keys = Vec::new();
    for manifest in manifests {
        let slug = Slug::parse(&manifest.slug)?;
        let cluster = manifest
            .cluster
            .clone()
            .unwrap_or_else(|| settings.default_cluster().to_string());
        let client = pools.control(Role::Admin).await?;
        let tenant = match Registry::find(&client, &slug).await? {
            Some(tenant) => tenant,
            None => {
                drop(client);
                create_tenant(
                    pools,
                    &slug,
                    &manifest.name,
                    &cluster,
                    manifest.master_release.as_deref(),
                    &dev_actor(),
                )
                .await
                .with_context(|| format!("creating demo tenant `{slug}`"))?
            }
        };
        let client = pools.control(Role::Admin).await?;
        let secrets = KeySecrets::from_settings(&settings.clinic);
        let remembered = state
            .keys
            .get(slug.as_str())
            .filter(|key| matches!(secrets.check(key), Presented::Tagged(_)))
            .cloned();
        let live = match &remembered {
            Some(key) => Registry::resolve_key(&client, &ApiKey::from_presented(key).hash)
                .await?
                .is_some_and(|t| t.id == tenant.id),
            None => false,
        };
        let key = match (live, remembered) {
            (true, Some(key)) => key,
            _ => {
                let issued = secrets.issue();
                Registry::insert_key(&client, tenant.id, &issued, Some("recept dev")).await?;
                state.keys.insert(slug.to_string(), issued.secret.clone());
                issued.secret
            }
        };
        keys.push((slug.to_string(), key));
    }
    Ok(keys)
}

/// Imports every `VERSION.csv` in `dir` that is not a release yet, in
/// file-name order.
pub async fn ensure_sample_releases(pools: &Pools, dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "csv"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    files.sort();
    let mut imported = Vec::new();
    for file in files {
        let Some(version) = file.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let client = pools.control(Role::Admin).await?;
        if master::release_exists(&client, version).await? {
            continue;
        }
        drop(client);
        master::import_file(pools, &file, version, &dev_actor()).await?;
        imported.push(version.to_string());
    }
    Ok(imported)
}

/// Who `recept dev`'s own writes are audited as.
fn dev_actor() -> Actor {
    Actor {
        name: "recept dev".into(),
        remote_addr: None,
    }
}
