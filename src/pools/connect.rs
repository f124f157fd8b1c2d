//! Building a pool: its manager, its session settings fixed in the
//! startup options, the checks its hooks make, and the runtime its
//! connections are driven on.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts,
};
use tokio_postgres::NoTls;

use super::slots::{AffinityCounts, Slot, SlotState, Slots};
use super::{ConnectionCounts, Conns, CountedPool, QueueState, Role};

/// Opens connections and drives them on one runtime: for admin and
/// migration pools the one that built the pools, whichever actix worker
/// asked for the connection (a worker that stops at shutdown must not take
/// with it connections other workers are using); for a clinic shard, its
/// worker's own runtime once the worker has claimed it
/// ([`Pools::clinic_worker`]), since only that worker uses them.
pub(super) struct OnRuntime(Arc<RwLock<tokio::runtime::Handle>>);

impl deadpool_postgres::Connect for OnRuntime {
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> futures::future::BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let pg_config = pg_config.clone();
        let driver = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        let opened = driver.spawn(async move {
            let (client, connection) = pg_config.connect(NoTls).await?;
            let task = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "a database connection ended");
                }
            });
            Ok((client, task))
        });
        Box::pin(async move {
            match opened.await {
                Ok(result) => result,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // The runtime is shutting down: nothing opens again, and the
                // pool's create timeout answers the caller.
                Err(_) => std::future::pending().await,
            }
        })
    }
}

/// A pool's timeouts: `wait_ms` for a free connection, a few seconds to
/// open or check one.
pub(super) fn connection_timeouts(wait_ms: u64) -> Timeouts {
    Timeouts {
        wait: Some(Duration::from_millis(wait_ms)),
        create: Some(Duration::from_secs(5)),
        recycle: Some(Duration::from_secs(5)),
    }
}

/// What one pool is built with.
#[derive(Clone, Copy)]
pub(super) struct PoolSpec {
    pub(super) role: Role,
    pub(super) size: usize,
    pub(super) statement_timeout_ms: u64,
    pub(super) lock_timeout_ms: u64,
    /// The longest wait for a connection.
    pub(super) queue_timeout_ms: u64,
    /// Retire connections past this age or number of uses.
    pub(super) retire: Option<(Duration, usize)>,
}

pub(super) fn build_pool(
    pg: tokio_postgres::Config,
    spec: PoolSpec,
    counts: Arc<ConnectionCounts>,
) -> anyhow::Result<CountedPool> {
    let driver = Arc::new(RwLock::new(tokio::runtime::Handle::current()));
    let pool = object_pool(pg, &spec, spec.size, counts.clone(), driver.clone(), None)?;
    Ok(CountedPool {
        conns: Conns::One(pool),
        counts,
        queue: QueueState::new(),
        driver,
        max_waiting: usize::MAX,
    })
}

/// A clinic shard: `spec.size` slots of one connection each, at most
/// `active` of them in use at once, driven on one runtime, for
/// tenant-affine routing (`slots.rs`); a connection is retired
/// once it has served `max_schemas` distinct schemas.
pub(super) fn build_slots(
    pg: tokio_postgres::Config,
    spec: PoolSpec,
    counts: Arc<ConnectionCounts>,
    active: usize,
    max_schemas: usize,
    affinity: Arc<AffinityCounts>,
) -> anyhow::Result<CountedPool> {
    let driver = Arc::new(RwLock::new(tokio::runtime::Handle::current()));
    let slots = (0..spec.size)
        .map(|_| {
            let state = Arc::new(SlotState::default());
            let pool = object_pool(
                pg.clone(),
                &spec,
                1,
                counts.clone(),
                driver.clone(),
                Some(state.clone()),
            )?;
            Ok(Slot { pool, state })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(CountedPool {
        conns: Conns::Slots(Slots::new(
            slots,
            active,
            affinity,
            max_schemas,
            counts.clone(),
        )),
        counts,
        queue: QueueState::new(),
        driver,
        max_waiting: usize::MAX,
    })
}

/// A deadpool of `size` connections with `spec`'s session settings, opened
/// and driven on `driver`; with `slot`, one slot's pool, whose record of
/// schemas served starts over with each new connection.
fn object_pool(
    mut pg: tokio_postgres::Config,
    spec: &PoolSpec,
    size: usize,
    counts: Arc<ConnectionCounts>,
    driver: Arc<RwLock<tokio::runtime::Handle>>,
    slot: Option<Arc<SlotState>>,
) -> anyhow::Result<Pool> {
    let PoolSpec {
        role,
        statement_timeout_ms,
        lock_timeout_ms,
        queue_timeout_ms,
        retire,
        ..
    } = *spec;
    pg.application_name(role.application_name());
    // Fixed for the life of the connection; a request cannot change them
    // for the next one because recept never runs a session-level SET.
    // Options the cluster's URL carries (`?options=-c…`) come first, so
    // that recept's own win where both name a setting.
    let mut ours = format!(
        "-c statement_timeout={statement_timeout_ms} \
         -c idle_in_transaction_session_timeout={} \
         -c lock_timeout={lock_timeout_ms}",
        statement_timeout_ms.max(1_000) * 2
    );
    // A clinic connection names no schema of its own outside a tenant's
    // transaction: a read that names the tenant's schema itself
    // (`TenantConn::read`) and a table it forgot to mark fails, rather
    // than finding a table of that name in the control schema, which the
    // default `"$user"` would.
    if role == Role::Clinic {
        ours.push_str(" -c search_path=pg_catalog");
    }
    let options = match pg.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
        _ => ours,
    };
    pg.options(options);
    pg.connect_timeout(Duration::from_secs(5));
    // Clinic connections are checked inside each request's first flight
    // (TenantConn), at no extra round trip. The other roles' connections
    // are checked with a query whenever they are handed out, and one whose
    // settings changed fails it (dividing by zero: a plain statement, as
    // the key-lookup lane runs it hundreds of times a second with many
    // tenants, where a `DO` block's compilation showed in PostgreSQL's
    // profile) and is replaced.
    let recycling_method = match role {
        Role::Clinic => RecyclingMethod::Fast,
        Role::Admin | Role::Migration | Role::Keys | Role::Report => RecyclingMethod::Custom(format!(
            "SELECT 1 / (current_setting('statement_timeout')::interval = '{statement_timeout_ms}ms'::interval \
             AND current_setting('application_name') = '{}')::int",
            role.application_name()
        )),
    };
    let manager = Manager::from_connect(
        pg,
        OnRuntime(driver.clone()),
        ManagerConfig { recycling_method },
    );
    let opened = counts.clone();
    let returned = counts;
    let retire = retire.unwrap_or((Duration::MAX, usize::MAX));
    let created = slot;
    let pool = Pool::builder(manager)
        .post_create(Hook::sync_fn(move |_, _| {
            opened.opened.fetch_add(1, Ordering::Relaxed);
            if let Some(state) = &created {
                state.reset();
            }
            Ok(())
        }))
        .pre_recycle(Hook::sync_fn(move |client, metrics| {
            let (max_age, max_uses) = retire;
            if client.is_closed() {
                returned.broken.fetch_add(1, Ordering::Relaxed);
                Err(HookError::message("closed"))
            } else if metrics.age() > max_age || metrics.recycle_count >= max_uses {
                // Each backend caches the catalog of every schema it
                // touched; retiring a connection after an age or a number
                // of uses keeps memory bounded with thousands of tenants.
                returned.retired.fetch_add(1, Ordering::Relaxed);
                Err(HookError::message("retired"))
            } else {
                Ok(())
            }
        }))
        .max_size(size)
        .timeouts(connection_timeouts(queue_timeout_ms))
        .runtime(Runtime::Tokio1)
        .build()?;
    Ok(pool)
}
