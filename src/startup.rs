//! `Application`: both listeners, the shared state, and a graceful stop.
//!
//! `build` binds its listeners (port 0 allowed) before returning, so tests
//! and `recept dev` learn the real ports from `clinic_port()` and
//! `admin_port()`.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_http::{error::DispatchError, HttpService};
use actix_server::GracefulShutdownSignal;
use actix_service::{
    fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_web::dev::{AppConfig, Server};
use actix_web::middleware::{from_fn, ErrorHandlers};
use actix_web::{web, App};
use anyhow::Context;
use futures::future::ready;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::Settings;
use crate::http::door::{AtTheDoor, Door, DoorCounts, Replay, Triage};
use crate::http::first_head::{FirstHead, HeadGate, HEAD_GATE};
use crate::http::{self, AppState, BodyBudget, Listener};
use crate::master::MasterCache;
use crate::migrate::prepare_control;
use crate::pools::{budget, Pools};
use crate::tenancy::{KeyResolver, KeySecrets};

/// How often the hashes of the legacy (untagged) API keys are read again,
/// so that one revoked elsewhere stops working here.
const LEGACY_KEYS_REFRESH: Duration = Duration::from_secs(60);

/// A running recept: the clinic listener and the admin listener.
pub struct Application {
    clinic: Server,
    admin: Server,
    clinic_port: u16,
    admin_port: u16,
    state: web::Data<AppState>,
}

impl Application {
    /// Validates `settings`, brings the control schema up to date, binds
    /// both listeners and starts their workers.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        settings.validate()?;
        let settings = Arc::new(settings);
        let pools = Arc::new(Pools::build(&settings)?);
        prepare_control(&pools).await?;
        check_budget(&pools, &settings).await?;

        let memory = settings
            .memory_budget()
            .context("the memory budget does not fit (server.memory_mb)")?;
        tracing::info!("{}", memory.describe());
        let cache_budget_bytes = memory.caches;
        let master_cache = MasterCache::new(cache_budget_bytes);
        let keys = KeyResolver::new(
            settings.clinic.key_cache_capacity,
            Duration::from_millis(settings.clinic.key_cache_ttl_ms),
            KeySecrets::from_settings(&settings.clinic),
            settings.clinic.accept_legacy_keys,
        );
        let legacy = keys
            .load_legacy(&pools)
            .await
            .context("reading the API keys issued before keys were tagged")?;
        if legacy > 0 {
            tracing::info!(legacy, "untagged API keys from before tags still work");
        }
        keys.refresh_legacy(pools.clone(), LEGACY_KEYS_REFRESH);
        let body_timeout = Duration::from_millis(settings.server.body_timeout_ms);
        let clinic_bodies = Arc::new(BodyBudget::new(
            memory.bodies as usize,
            // A clinic holds at most the bodies of its share of requests.
            (settings.clinic.tenant_max_in_flight * 2 * settings.server.body_limit_bytes)
                .min(memory.bodies as usize),
            body_timeout,
        ));
        let admin_bodies = Arc::new(BodyBudget::new(
            memory.admin_bodies as usize,
            memory.admin_bodies as usize,
            body_timeout,
        ));
        let door = Arc::new(DoorCounts::default());
        let metrics = crate::metrics::Metrics::new(crate::metrics::Sources {
            door: door.clone(),
            memory_budget_bytes: memory.total,
            clinic_bodies: clinic_bodies.clone(),
            pools: pools.clone(),
            master_cache: master_cache.clone(),
            keys: keys.clone(),
            cache_budget_bytes,
            tenant_top: settings.server.tenant_metrics_top,
        });
        let state = web::Data::new(AppState {
            settings: settings.clone(),
            pools,
            keys,
            master_cache,
            metrics,
            draining: Default::default(),
            clinic_bodies,
            admin_bodies,
            door,
        });

        let clinic_listener = bind(
            &settings.server.clinic_listen,
            "server.clinic_listen",
            settings.server.reuse_port,
        )?;
        let admin_listener = bind(&settings.server.admin_listen, "server.admin_listen", false)?;
        let clinic_port = clinic_listener.local_addr()?.port();
        let admin_port = admin_listener.local_addr()?.port();

        let clinic = serve(
            clinic_listener,
            state.clone(),
            Listener::Clinic,
            settings.server.workers,
            memory.clinic_connections_per_worker as usize,
            &settings,
        )?;
        let admin = serve(
            admin_listener,
            state.clone(),
            Listener::Admin,
            settings.server.admin_workers,
            (memory.admin_connections as usize).div_ceil(settings.server.admin_workers),
            &settings,
        )?;
        Ok(Application {
            clinic,
            admin,
            clinic_port,
            admin_port,
            state,
        })
    }

    pub fn clinic_port(&self) -> u16 {
        self.clinic_port
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// The state shared by both listeners (pools, key cache, settings).
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until either server stops or `shutdown` completes; then lets
    /// in-flight requests finish (up to `server.shutdown_timeout_s`).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let clinic_handle = self.clinic.handle();
        let admin_handle = self.admin.handle();
        let mut clinic = tokio::spawn(self.clinic);
        let mut admin = tokio::spawn(self.admin);
        tokio::select! {
            _ = shutdown => {
                tracing::info!("stopping: finishing in-flight requests");
                // Every response now closes its connection, so clients
                // reconnect: with a shared port (server.reuse_port) to the
                // next process. The listener keeps accepting for the drain
                // period so no connection waits in its queue.
                self.state.draining.store(true, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(self.state.settings.server.drain_ms)).await;
                // Stop accepting first and let connections already accepted
                // reach their workers, so none is dropped in the hand-off.
                clinic_handle.pause().await;
                admin_handle.pause().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            result = &mut clinic => tracing::error!(?result, "the clinic listener stopped"),
            result = &mut admin => tracing::error!(?result, "the admin listener stopped"),
        }
        self.state
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::join!(clinic_handle.stop(true), admin_handle.stop(true));
        for task in [clinic, admin] {
            if !task.is_finished() {
                let _ = task.await;
            }
        }
        self.state.pools.close();
        Ok(())
    }
}

/// Refuses a budget that does not fit a reachable cluster; a cluster that
/// cannot be reached is reported and checked when it can.
async fn check_budget(pools: &Pools, settings: &Settings) -> anyhow::Result<()> {
    for (budget, error) in budget::measure(pools, settings).await {
        if let Some(problem) = budget.problem() {
            anyhow::bail!("the connection budget does not fit: {problem}");
        }
        match error {
            Some(error) => {
                tracing::warn!(cluster = %budget.cluster, %error, "could not check the connection budget")
            }
            None => tracing::info!(
                cluster = %budget.cluster,
                needed = budget.needed,
                allowed = budget.allowed,
                "connection budget fits"
            ),
        }
        if let Some(replica) = &budget.replica {
            match &replica.error {
                // A replica that is down stops reports only, never recept.
                Some(error) => tracing::warn!(
                    cluster = %budget.cluster,
                    %error,
                    "the replica for reports cannot be reached; reports follow admin.replica_behind until it can"
                ),
                None => tracing::info!(
                    cluster = %budget.cluster,
                    needed = replica.needed,
                    allowed = replica.allowed,
                    "replica connection budget fits"
                ),
            }
        }
    }
    Ok(())
}

/// How many connections the kernel holds for a listener before recept
/// accepts them (actix-web's own default). Under a burst of new connections
/// a short queue drops SYNs, and each dropped one costs its client a
/// second before it tries again.
const BACKLOG: u32 = 1024;

/// No lingering: a connection being closed (after a refusal with its body
/// unread, or `Connection: close`) is dropped as soon as its answer is
/// written, rather than read from and held for a disconnect timeout. A
/// refused sender that holds its end otherwise keeps its connection slot
/// for that long (actix-http lingers up to the timeout, and below about
/// 600 ms its cached clock makes the timer fire before it is armed, so
/// the connection stays open for good): at 1 s, 10,000 such senders held
/// every slot and honest clients waited in the kernel's queue behind
/// them. `load/ hostile` measures it.
const DISCONNECT_MS: u64 = 0;

fn bind(address: &str, key: &str, reuse_port: bool) -> anyhow::Result<TcpListener> {
    listen(address, reuse_port).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (the port is already in use: stop the other process or choose another address)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot listen on {address} ({key}): {e}{hint}")
    })
}

/// A listener with a backlog of [`BACKLOG`]; with `reuse_port`, one other
/// processes may bind too (`SO_REUSEPORT`): the kernel spreads new
/// connections over every process listening. Connections are handed over
/// once they have sent something ([`defer_accept`]).
fn listen(address: &str, reuse_port: bool) -> std::io::Result<TcpListener> {
    use std::net::ToSocketAddrs;
    let addr = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(reuse_port)?;
    socket.bind(addr)?;
    defer_accept(&socket);
    socket.listen(BACKLOG)?.into_std()
}

/// How long the kernel keeps a new connection that has sent nothing before
/// handing it over anyway (`TCP_DEFER_ACCEPT`).
const DEFER_ACCEPT_S: libc::c_int = 5;

/// Asks the kernel to hand a new connection over only once its first
/// bytes have arrived (or after [`DEFER_ACCEPT_S`]). An HTTP client speaks
/// first, so nothing is lost; a connection is then accepted and read in
/// one wake-up of its worker instead of two, and one that never speaks
/// costs no worker anything. Measured with forged keys: about a fifth less
/// CPU at the workers' priority per connection (load/RESULTS.md).
fn defer_accept(socket: &tokio::net::TcpSocket) {
    use std::os::fd::AsRawFd;
    let seconds = DEFER_ACCEPT_S;
    // SAFETY: a plain setsockopt on a socket this function borrows, with a
    // value that outlives the call.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&seconds as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "new connections are handed over before they send anything: TCP_DEFER_ACCEPT failed"
        );
    }
}

fn serve(
    socket: TcpListener,
    state: web::Data<AppState>,
    listener: Listener,
    workers: usize,
    connections_per_worker: usize,
    settings: &Settings,
) -> anyhow::Result<Server> {
    let new_connections_per_worker = match listener {
        Listener::Clinic => settings
            .server
            .new_connections_per_s
            .div_ceil(workers as u32),
        Listener::Admin => 0,
    };
    let local = socket.local_addr()?;
    let name = match listener {
        Listener::Clinic => "clinic",
        Listener::Admin => "admin",
    };
    // Strangers on the clinic listener are answered at the door.
    let triage = match listener {
        Listener::Clinic => {
            let door_state = state.clone();
            let door = Door::open(
                state.door.clone(),
                Duration::from_millis(settings.server.client_timeout_ms),
                move || application::<Replay<TcpStream>>(door_state, listener, local, None),
            )
            .context("starting the door's thread")?;
            Some(Triage {
                door,
                keys: state.keys.clone(),
            })
        }
        Listener::Admin => None,
    };
    // actix-web's `HttpServer`, assembled from its parts so that each new
    // connection's socket is wrapped in a `FirstHead`.
    let builder = actix_server::Server::build();
    let stopping = builder.graceful_shutdown_signal();
    let server = builder
        .workers(workers)
        // Past this a worker stops accepting: new connections wait in the
        // kernel's queue, not in this process's memory.
        .max_concurrent_connections(connections_per_worker)
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout_s)
        .listen(name, socket, move || {
            // Runs on each worker's own thread. One gate per worker, as the
            // worker runs its connections.
            let gate = HeadGate::new(HEAD_GATE, new_connections_per_worker);
            let gate = match &triage {
                Some(triage) => gate.with_triage(triage.clone()),
                None => gate,
            };
            fn_service(move |io: TcpStream| {
                let peer = io.peer_addr().ok();
                ready(Ok::<_, DispatchError>((
                    FirstHead::new(io, peer, &gate),
                    peer,
                )))
            })
            .and_then(application::<FirstHead>(
                state.clone(),
                listener,
                local,
                Some(stopping.clone()),
            ))
        })?
        .run();
    Ok(server)
}

/// The HTTP service of one listener's application, for connections of
/// type `T`: on a worker of the listener (which stops gracefully with
/// `stopping`), or at the door (`stopping` is `None`).
fn application<T>(
    state: web::Data<AppState>,
    listener: Listener,
    local: SocketAddr,
    stopping: Option<GracefulShutdownSignal>,
) -> impl ServiceFactory<
    (T, Option<SocketAddr>),
    Config = (),
    Response = (),
    Error = DispatchError,
    InitError = (),
>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let settings = &state.settings;
    let body_limit = settings.server.body_limit_bytes;
    let release_limit = settings.admin.release_limit_bytes;
    let request_timeout = Duration::from_millis(settings.server.client_timeout_ms);
    let app = App::new();
    let app = match (listener, &stopping) {
        // A clinic worker claims its shard of the clinic pools, held for as
        // long as its app lives; its requests find the claim here and carry
        // its shard.
        (Listener::Clinic, Some(_)) => app.app_data(web::Data::new(state.pools.clinic_worker())),
        // The door's answers close their connections.
        (_, None) => app.app_data(web::Data::new(AtTheDoor)),
        (Listener::Admin, Some(_)) => app,
    };
    let app = app
        .app_data(state.clone())
        .app_data(web::Data::new(listener))
        .configure(|cfg| http::extractor_configs(cfg, body_limit))
        .wrap(from_fn(http::intake))
        .wrap(ErrorHandlers::new().default_handler(http::error::ensure_problem))
        .wrap(from_fn(http::request_span))
        .wrap(from_fn(http::shed))
        .default_service(web::to(http::not_found));
    let app = match listener {
        Listener::Clinic => app.configure(http::clinic_routes),
        Listener::Admin => app.configure(|cfg| http::admin_routes(cfg, release_limit)),
    };
    let app = app
        .into_factory()
        .map_err(|error: actix_web::Error| error.error_response());
    let mut http = HttpService::build()
        .client_request_timeout(request_timeout)
        .client_disconnect_timeout(Duration::from_millis(DISCONNECT_MS))
        .local_addr(local);
    if let Some(stopping) = stopping {
        http = http.graceful_shutdown_signal(move || {
            let stopping = stopping.clone();
            async move { stopping.notified().await }
        });
    }
    http.h1(map_config(app, |_| AppConfig::default()))
}
