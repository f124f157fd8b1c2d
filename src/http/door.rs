//! The door: where a clinic connection that shows no key recept could have
//! issued is answered, on a thread of its own at the lowest CPU priority.
//!
//! A flood of strangers (forged keys, no key at all) costs recept its
//! answers: parsing, routing, a problem document, a closed connection.
//! Answered on the clinic workers, that work stands in the same run queue
//! as the connected clinics' requests and their PostgreSQL backends, and on
//! a small host it delays them by whole scheduler slices. So each new
//! connection's first head is read on its worker ([`super::first_head`])
//! and looked at in memory ([`Triage::serves`]): a caller with a key that
//! passes [`KeyResolver::plausible`] (or a health probe) stays on the
//! worker; anyone else is handed, socket and bytes read so far, to the
//! door.
//!
//! The door runs the same application as the workers (so it answers
//! exactly what they would: a `401` problem, a `404`, the public
//! documentation), at nice 19: the kernel gives it only the CPU nothing
//! else wants, and a woken clinic request or backend preempts it at once.
//! Every door answer closes its connection, so a stranger cannot stay at
//! the door and present a key later; and a connection lives there at most
//! `server.client_timeout_ms`.
//!
//! The door holds at most [`DOOR_CONNECTIONS`] connections and
//! [`DOOR_QUEUE`] waiting ones; past that a stranger's connection is closed
//! unanswered (counted in `recept_door_connections_total{outcome="dropped"}`),
//! never queued in memory.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::error::DispatchError;
use actix_service::{Service, ServiceFactory};
use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

pub use crate::metrics::DoorCounts;
use crate::tenancy::KeyResolver;

/// Connections the door answers at once, and connections handed to it
/// that wait for one of those places (their memory is a part of
/// `server.memory_mb`).
const DOOR_CONNECTIONS: usize = crate::config::DOOR_CONNECTIONS as usize;
const DOOR_QUEUE: usize = crate::config::DOOR_QUEUE as usize;
/// The door thread's nice value: the lowest priority.
const DOOR_NICE: libc::c_int = 19;
/// Headers read in a first head: as many as actix-http's parser allows.
const MAX_HEADERS: usize = 96;

/// A connection handed to the door: its socket and what was read of it.
pub struct Arrival {
    pub io: std::net::TcpStream,
    pub head: Bytes,
    pub peer: Option<SocketAddr>,
}

/// The way into the door; cloned into every clinic worker. The door's
/// thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct Door {
    arrivals: mpsc::Sender<Arrival>,
    counts: Arc<DoorCounts>,
}

impl Door {
    /// Starts the door's thread. `make` builds, on that thread, the HTTP
    /// service it answers with; each connection is cut after `deadline`.
    pub fn open<F, S>(counts: Arc<DoorCounts>, deadline: Duration, make: F) -> io::Result<Door>
    where
        F: FnOnce() -> S + Send + 'static,
        S: ServiceFactory<
                (Replay<TcpStream>, Option<SocketAddr>),
                Config = (),
                Response = (),
                Error = DispatchError,
                InitError = (),
            > + 'static,
    {
        let (arrivals, mut waiting) = mpsc::channel::<Arrival>(DOOR_QUEUE);
        let answered = counts.clone();
        std::thread::Builder::new()
            .name("recept-door".into())
            .spawn(move || {
                lower_priority();
                actix_rt::System::new().block_on(async move {
                    let service = match make().new_service(()).await {
                        Ok(service) => Rc::new(service),
                        Err(()) => {
                            tracing::error!("the door's HTTP service could not start");
                            return;
                        }
                    };
                    let places = Arc::new(Semaphore::new(DOOR_CONNECTIONS));
                    while let Some(arrival) = waiting.recv().await {
                        let Ok(place) = places.clone().acquire_owned().await else {
                            break;
                        };
                        let Ok(io) = TcpStream::from_std(arrival.io) else {
                            continue;
                        };
                        let call = service.call((Replay::new(arrival.head, io), arrival.peer));
                        let answered = answered.clone();
                        actix_rt::spawn(async move {
                            let outcome = match tokio::time::timeout(deadline, call).await {
                                Ok(_) => &answered.answered,
                                Err(_) => &answered.cut,
                            };
                            outcome.fetch_add(1, Relaxed);
                            drop(place);
                        });
                    }
                });
            })?;
        Ok(Door { arrivals, counts })
    }

    /// Hands `arrival` to the door, or closes it when the door is full.
    pub fn enter(&self, arrival: Arrival) {
        if self.arrivals.try_send(arrival).is_err() {
            self.counts.dropped.fetch_add(1, Relaxed);
        }
    }
}

/// Lowers the calling thread's CPU priority. On Linux the nice value
/// belongs to the thread, not the process (setpriority(2), "BUGS"), so
/// the workers keep theirs.
fn lower_priority() {
    // SAFETY: a plain system call on the calling thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, DOOR_NICE) } != 0 {
        tracing::warn!(
            error = %io::Error::last_os_error(),
            "the door runs at normal priority: setpriority failed"
        );
    }
}

/// Which connections stay on the clinic workers.
#[derive(Clone)]
pub struct Triage {
    pub door: Door,
    pub keys: KeyResolver,
}

impl Triage {
    /// Whether a connection whose first head is `head` is served by its
    /// worker: a health probe, or a caller presenting a key that may be one
    /// recept issued. Everyone else goes to the door, a head that does not
    /// parse or does not end within the head limit too: the door's parser
    /// refuses it just as a worker's would (recept refuses heads over 16 KiB
    /// anyway), so padding a head does not skip the door.
    pub fn serves(&self, head: &[u8]) -> bool {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
            return false;
        }
        let path = request.path.unwrap_or("/");
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        if matches!(path, "/healthz" | "/readyz") {
            return true;
        }
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("authorization"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(super::extract::bearer_token)
            .is_some_and(|token| self.keys.plausible(token))
    }
}

/// A socket with the bytes already read from it put back in front.
pub struct Replay<T> {
    head: Bytes,
    io: T,
}

impl<T> Replay<T> {
    pub fn new(head: Bytes, io: T) -> Replay<T> {
        Replay { head, io }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Replay<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.head.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.head.len().min(buf.remaining());
        buf.put_slice(&self.head[..n]);
        self.head.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Replay<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Marks the application the door runs: its answers close their
/// connections.
#[derive(Debug, Clone, Copy)]
pub struct AtTheDoor;
