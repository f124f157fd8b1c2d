//! A new connection's first request head, read before its body and only a
//! few connections of a worker at a time.
//!
//! actix-http reads whatever a connection has sent, up to 128 KiB, before
//! it parses the head; a request refused on its head (a stranger's key, a
//! body declared too long) therefore has its body copied in anyway. And a
//! worker runs every connection that has something to read in turn, so a
//! burst of thousands of new connections puts thousands of those first
//! reads (about 300 µs each, `load/ hostile`) in front of the next request
//! of a clinic already connected.
//!
//! [`FirstHead`] wraps each accepted socket until the end of its first head
//! has gone through:
//!
//! - a read takes at most [`HEAD_READ`] bytes; after the read that holds
//!   the head's end, the next read yields once, so the head is parsed and
//!   answered (or its body asked for) before any more of the body is copied;
//! - while it reads its first head a connection holds one of its worker's
//!   [`HEAD_GATE`] permits. Connections without one are not run at all
//!   until a permit is free (first come, first served), so at most that
//!   many first heads are ever ahead of a connected clinic's request. A
//!   connection that has sent only part of its head gives its permit back
//!   when it has nothing more to read, so a client that stalls mid-head
//!   keeps no one else out (its head is cut by `server.client_timeout_ms`,
//!   which runs while a connection waits for a permit too).
//!
//! After its first head a connection's socket is used as it is.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::PollSemaphore;

/// The most bytes one read takes before the end of the first head: the
/// size of actix-http's first read buffer, so it never grows for a head.
pub const HEAD_READ: usize = 8 * 1024;

/// How many connections of one worker read their first head at once.
pub const HEAD_GATE: usize = 4;

/// One worker's permits to read a first head, and the pace at which it
/// starts them.
#[derive(Clone)]
pub struct HeadGate {
    permits: Arc<Semaphore>,
    pace: Option<Arc<Pace>>,
}

/// New connections started at most one per `interval` on average, with
/// up to `burst` at once (a virtual schedule: each start takes the next
/// free instant, so waiting connections are started in order and none is
/// woken in vain).
struct Pace {
    interval: Duration,
    burst: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pace {
    /// The instant a connection may start: now, or a later one kept for it.
    fn reserve(&self) -> Instant {
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let earliest = now.checked_sub(self.burst).unwrap_or(now);
        let slot = next.map_or(earliest, |next| next.max(earliest));
        *next = Some(slot + self.interval);
        slot.max(now)
    }
}

impl HeadGate {
    /// `permits` first heads read at once; `per_second` new connections
    /// started a second at most, on average (0: no bound).
    pub fn new(permits: usize, per_second: u32) -> HeadGate {
        let pace = (per_second > 0).then(|| {
            let interval = Duration::from_secs(1) / per_second;
            Arc::new(Pace {
                interval,
                // A tenth of a second's worth at once, so a clinic's few
                // new connections never wait for the pace.
                burst: interval * (per_second / 10).max(1),
                next: Mutex::new(None),
            })
        });
        HeadGate {
            permits: Arc::new(Semaphore::new(permits)),
            pace,
        }
    }

    /// Permits free now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

/// Where a connection is in its first head.
enum Phase {
    /// Reading it. `line_start` is whether nothing but `\r` has been read
    /// since the last `\n` (`seen_newline` says there was one): a `\n` then
    /// ends the head.
    Head {
        seen_newline: bool,
        line_start: bool,
    },
    /// Its end has been read; the next read yields once.
    Yield,
    /// Past it: reads go straight to the socket.
    Through,
}

/// A socket whose first head is read as this module's comment says.
pub struct FirstHead<T> {
    io: T,
    phase: Phase,
    gate: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
    pace: Option<Arc<Pace>>,
    /// The instant kept for this connection by the pace, once it has one.
    start: Start,
}

enum Start {
    NotYet,
    At(Pin<Box<Sleep>>),
    Started,
}

impl<T> FirstHead<T> {
    pub fn new(io: T, gate: &HeadGate) -> FirstHead<T> {
        FirstHead {
            io,
            phase: Phase::Head {
                seen_newline: false,
                line_start: false,
            },
            gate: PollSemaphore::new(gate.permits.clone()),
            permit: None,
            pace: gate.pace.clone(),
            start: Start::NotYet,
        }
    }

    /// Whether the end of the first head has been read.
    #[cfg(test)]
    fn past_head(&self) -> bool {
        !matches!(self.phase, Phase::Head { .. })
    }

    /// Follows `bytes` just read; true when they hold the head's end.
    fn scan(&mut self, bytes: &[u8]) -> bool {
        let Phase::Head {
            seen_newline,
            line_start,
        } = &mut self.phase
        else {
            return false;
        };
        for &byte in bytes {
            match byte {
                b'\n' if *seen_newline && *line_start => return true,
                b'\n' => {
                    *seen_newline = true;
                    *line_start = true;
                }
                b'\r' => {}
                _ => *line_start = false,
            }
        }
        false
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstHead<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.phase {
            Phase::Through => return Pin::new(&mut this.io).poll_read(cx, buf),
            Phase::Yield => {
                this.phase = Phase::Through;
                this.permit = None;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Phase::Head { .. } => {}
        }
        if this.permit.is_none() {
            match this.gate.poll_acquire(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(permit) => this.permit = permit,
            }
        }
        // Holding a permit, it waits for its turn at the pace (once), so
        // the others wait in the semaphore's queue, in order.
        loop {
            match &mut this.start {
                Start::Started => break,
                Start::NotYet => match &this.pace {
                    None => this.start = Start::Started,
                    Some(pace) => {
                        let at = pace.reserve();
                        this.start = if at > Instant::now() {
                            Start::At(Box::pin(tokio::time::sleep_until(at)))
                        } else {
                            Start::Started
                        };
                    }
                },
                Start::At(sleep) => match sleep.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => this.start = Start::Started,
                },
            }
        }
        let limit = buf.remaining().min(HEAD_READ);
        let mut head = ReadBuf::new(buf.initialize_unfilled_to(limit));
        match Pin::new(&mut this.io).poll_read(cx, &mut head) {
            Poll::Pending => {
                // Nothing more to read now: let another connection in.
                this.permit = None;
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                let n = head.filled().len();
                let ended = this.scan(head.filled());
                buf.advance(n);
                if ended {
                    this.phase = Phase::Yield;
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FirstHead<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: the client's end and the server's, wrapped.
    async fn pair(gate: &HeadGate) -> (TcpStream, FirstHead<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, FirstHead::new(server, gate))
    }

    /// One `poll_read` with room for `room` bytes, without waiting: the
    /// bytes read, or `None` when it was pending.
    fn read_once(conn: &mut FirstHead<TcpStream>, room: usize) -> Option<Vec<u8>> {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut storage = vec![0u8; room];
        let mut buf = ReadBuf::new(&mut storage);
        match Pin::new(conn).poll_read(&mut cx, &mut buf) {
            Poll::Ready(result) => {
                result.unwrap();
                Some(buf.filled().to_vec())
            }
            Poll::Pending => None,
        }
    }

    /// Reads until `want` bytes came, polling as a runtime would.
    async fn read_until(conn: &mut FirstHead<TcpStream>, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < want {
            let mut chunk = vec![0u8; 64 * 1024];
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed after {} bytes", got.len());
            got.extend_from_slice(&chunk[..n]);
        }
        got
    }

    /// Gives loopback time to deliver what was written.
    async fn settle() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    const HEAD: &[u8] = b"POST /v1/patients HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n";

    #[tokio::test]
    async fn the_first_head_is_read_in_small_reads_and_the_body_waits_for_a_second_look() {
        let gate = HeadGate::new(1, 0);
        let (mut client, mut conn) = pair(&gate).await;
        let mut sent = HEAD.to_vec();
        sent.extend(std::iter::repeat_n(b'x', 100_000));
        client
            .write_all(&sent[..HEAD.len() + 20_000])
            .await
            .unwrap();
        settle().await;

        // Reads of at most HEAD_READ until the head's end has been read...
        let first = read_once(&mut conn, 128 * 1024).expect("data is ready");
        assert_eq!(first.len(), HEAD_READ);
        assert!(conn.past_head());
        // ...then one read that yields although the body is there...
        assert_eq!(read_once(&mut conn, 128 * 1024), None);
        // ...and from then on the socket as it is.
        let rest = read_once(&mut conn, 128 * 1024).expect("data is ready");
        assert_eq!(rest.len(), HEAD.len() + 20_000 - HEAD_READ);
        assert_eq!(gate.available(), 1, "the permit is back");
    }

    #[tokio::test]
    async fn a_head_sent_a_byte_at_a_time_ends_at_its_blank_line_with_or_without_cr() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\nHost: x\n\n",
        ] {
            let gate = HeadGate::new(1, 0);
            let (mut client, mut conn) = pair(&gate).await;
            for (i, byte) in head.iter().enumerate() {
                assert!(!conn.past_head(), "ended early, at byte {i} of {head:?}");
                client.write_all(&[*byte]).await.unwrap();
                let got = loop {
                    if let Some(got) = read_once(&mut conn, 64) {
                        break got;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                };
                assert_eq!(got, [*byte]);
            }
            assert!(conn.past_head(), "{head:?}");
            client.write_all(b"NEXT").await.unwrap();
            settle().await;
            assert_eq!(read_once(&mut conn, 64), None, "the one yield");
            assert_eq!(read_once(&mut conn, 64).unwrap(), b"NEXT");
        }
    }

    #[tokio::test]
    async fn only_as_many_connections_as_the_gate_holds_read_a_first_head_at_once() {
        let gate = HeadGate::new(1, 0);
        let (mut client_a, mut a) = pair(&gate).await;
        let (mut client_b, mut b) = pair(&gate).await;
        client_a.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        client_b.write_all(HEAD).await.unwrap();
        settle().await;

        // A reads part of its head and holds the gate while it has more.
        assert!(read_once(&mut a, 1024).is_some());
        assert_eq!(gate.available(), 0);
        // B has its whole head ready but waits for the gate.
        assert_eq!(read_once(&mut b, 1024), None);
        // A has nothing more for now: it gives the permit back.
        assert_eq!(read_once(&mut a, 1024), None);
        assert_eq!(gate.available(), 0, "handed to the waiting B");
        let head = read_once(&mut b, 1024).expect("B's head");
        assert_eq!(head, HEAD);
        // A waits now, until B is past its head.
        client_a.write_all(b"Host: x\r\n\r\n").await.unwrap();
        settle().await;
        assert_eq!(read_once(&mut a, 1024), None);
        assert_eq!(read_once(&mut b, 1024), None, "B's one yield");
        let rest = read_until(&mut a, 11).await;
        assert_eq!(rest, b"Host: x\r\n\r\n");
        drop(client_b);
    }

    #[tokio::test]
    async fn a_connection_dropped_while_waiting_or_reading_gives_its_place_back() {
        let gate = HeadGate::new(1, 0);
        let (mut client_a, mut a) = pair(&gate).await;
        let (_client_b, mut b) = pair(&gate).await;
        client_a.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        settle().await;
        assert!(read_once(&mut a, 1024).is_some());
        assert_eq!(read_once(&mut b, 1024), None, "waiting");
        drop(b);
        drop(a);
        assert_eq!(gate.available(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_pace_starts_a_burst_at_once_then_one_connection_an_interval_in_order() {
        // 10 a second: one every 100 ms, two at once.
        let gate = HeadGate::new(4, 10);
        let pace = gate.pace.clone().unwrap();
        let t0 = Instant::now();
        let slots: Vec<_> = (0..5).map(|_| pace.reserve() - t0).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(slots, [ms(0), ms(0), ms(100), ms(200), ms(300)]);
        // Idle for a while, it has its burst again, and no more.
        tokio::time::advance(ms(2_000)).await;
        let t1 = Instant::now();
        let slots: Vec<_> = (0..3).map(|_| pace.reserve() - t1).collect();
        assert_eq!(slots, [ms(0), ms(0), ms(100)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_past_the_pace_waits_for_its_turn_before_it_reads() {
        let gate = HeadGate::new(4, 10);
        let mut conns = Vec::new();
        for _ in 0..3 {
            let (mut client, conn) = pair(&gate).await;
            client.write_all(HEAD).await.unwrap();
            conns.push((client, conn));
        }
        // Loopback delivers without the (paused) clock.
        tokio::task::yield_now().await;
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(read_once(&mut conns[0].1, 1024).is_some());
        assert!(read_once(&mut conns[1].1, 1024).is_some());
        assert_eq!(
            read_once(&mut conns[2].1, 1024),
            None,
            "its turn is 100 ms on"
        );
        tokio::time::advance(Duration::from_millis(99)).await;
        assert_eq!(read_once(&mut conns[2].1, 1024), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(read_once(&mut conns[2].1, 1024).unwrap(), HEAD);
    }
}
