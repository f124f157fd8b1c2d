//! A new connection's first request head, read before its body, only a
//! few connections of a worker at a time, and looked at before the server
//! sees it.
//!
//! actix-http reads whatever a connection has sent, up to 128 KiB, before
//! it parses the head; a request refused on its head (a stranger's key, a
//! body declared too long) therefore has its body copied in anyway. And a
//! worker runs every connection that has something to read in turn, so a
//! burst of thousands of new connections puts thousands of those first
//! reads (about 300 µs each, `load/ hostile`) in front of the next request
//! of a clinic already connected.
//!
//! [`FirstHead`] wraps each accepted socket until its first head has been
//! read:
//!
//! - the head is read into a buffer of its own, at most [`HEAD_READ`]
//!   bytes a read, until its end (or [`HEAD_LIMIT`] bytes, for the server's
//!   parser to refuse);
//! - then, on the clinic listener, [`Triage`] looks at it in memory: a
//!   stranger's connection (no key recept could have issued) is handed,
//!   socket and bytes, to the door (`super::door`), which answers it at
//!   the lowest CPU priority; the server sees an end of stream;
//! - otherwise the server is given what was read, and the next read
//!   yields once, so the head is parsed and answered (or its body asked
//!   for) before any more of the body is copied;
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
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;
use tokio_util::sync::PollSemaphore;

use super::door::{Arrival, Triage};

/// The most bytes one read takes before the end of the first head: the
/// size of actix-http's first read buffer, so it never grows for a head.
pub const HEAD_READ: usize = 8 * 1024;

/// The most of a first head read before the server sees it: past this the
/// head is the server's to refuse (actix-http allows 32 KiB).
pub const HEAD_LIMIT: usize = crate::config::HEAD_LIMIT_BYTES as usize;

/// How many connections of one worker read their first head at once.
pub const HEAD_GATE: usize = 4;

/// One worker's permits to read a first head, and the pace at which it
/// starts them.
#[derive(Clone)]
pub struct HeadGate {
    permits: Arc<Semaphore>,
    pace: Option<Arc<Pace>>,
    triage: Option<Triage>,
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
                // A hundredth of a second's worth at once: a clinic's few
                // new connections do not wait for the pace, and a flood's
                // first instant is not a burst of hundreds.
                burst: interval * (per_second / 100).max(1),
                next: Mutex::new(None),
            })
        });
        HeadGate {
            permits: Arc::new(Semaphore::new(permits)),
            pace,
            triage: None,
        }
    }

    /// Sends strangers' connections to the door, as `triage` tells them.
    pub fn with_triage(mut self, triage: Triage) -> HeadGate {
        self.triage = Some(triage);
        self
    }

    /// Permits free now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

/// Where a connection is in its first head.
enum Phase {
    /// Reading it into `head`.
    Head,
    /// Giving what was read to the server, then one yield.
    Replay,
    /// The head has been given; the next read yields once.
    Yield,
    /// Past it: reads go straight to the socket.
    Through,
    /// Handed to the door: this side reads an end of stream.
    Gone,
}

/// A socket whose first head is read as this module's comment says.
pub struct FirstHead {
    io: Option<TcpStream>,
    peer: Option<SocketAddr>,
    phase: Phase,
    /// The first head as read so far (and whatever came with it).
    head: BytesMut,
    /// Whether nothing but `\r` has been read since the last `\n`
    /// (`seen_newline` says there was one): a `\n` then ends the head.
    seen_newline: bool,
    line_start: bool,
    gate: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
    pace: Option<Arc<Pace>>,
    triage: Option<Triage>,
    /// The instant kept for this connection by the pace, once it has one.
    start: Start,
}

enum Start {
    NotYet,
    At(Pin<Box<Sleep>>),
    Started,
}

impl FirstHead {
    pub fn new(io: TcpStream, peer: Option<SocketAddr>, gate: &HeadGate) -> FirstHead {
        FirstHead {
            io: Some(io),
            peer,
            phase: Phase::Head,
            head: BytesMut::new(),
            seen_newline: false,
            line_start: false,
            gate: PollSemaphore::new(gate.permits.clone()),
            permit: None,
            pace: gate.pace.clone(),
            triage: gate.triage.clone(),
            start: Start::NotYet,
        }
    }

    /// Whether the end of the first head has been read.
    #[cfg(test)]
    fn past_head(&self) -> bool {
        !matches!(self.phase, Phase::Head)
    }

    /// Follows the bytes of `head` from `from` on; true when they hold the
    /// head's end.
    fn scan(&mut self, from: usize) -> bool {
        for &byte in &self.head[from..] {
            match byte {
                b'\n' if self.seen_newline && self.line_start => return true,
                b'\n' => {
                    self.seen_newline = true;
                    self.line_start = true;
                }
                b'\r' => {}
                _ => self.line_start = false,
            }
        }
        false
    }

    /// Waits for a permit, then for the pace; `Ready` once both allow it
    /// to read.
    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.permit.is_none() {
            match self.gate.poll_acquire(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(permit) => self.permit = permit,
            }
        }
        // Holding a permit, it waits for its turn at the pace (once), so
        // the others wait in the semaphore's queue, in order.
        loop {
            match &mut self.start {
                Start::Started => return Poll::Ready(()),
                Start::NotYet => match &self.pace {
                    None => self.start = Start::Started,
                    Some(pace) => {
                        let at = pace.reserve();
                        self.start = if at > Instant::now() {
                            Start::At(Box::pin(tokio::time::sleep_until(at)))
                        } else {
                            Start::Started
                        };
                    }
                },
                Start::At(sleep) => match sleep.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => self.start = Start::Started,
                },
            }
        }
    }

    /// Reads the first head into `head`: `Ready` at its end (or at the
    /// end of the stream, or past [`HEAD_LIMIT`]), `Pending` when the
    /// socket has nothing more for now.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.head.len() < HEAD_LIMIT {
            let Some(io) = self.io.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            let from = self.head.len();
            self.head.reserve(HEAD_READ);
            let mut room = (&mut self.head).limit(HEAD_READ);
            let read = poll_read_buf(Pin::new(io), cx, &mut room);
            match read {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(_)) => {
                    if self.scan(from) {
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The head has been read: hands the connection to the door when
    /// triage says so, else lets the server read it.
    fn triage(&mut self) {
        let stays = self.triage.as_ref().is_none_or(|t| t.serves(&self.head));
        if stays {
            // The permit is kept until the server has parsed and answered
            // the head (the one yield), so that work counts against the
            // gate too.
            self.phase = Phase::Replay;
            return;
        }
        self.permit = None;
        self.phase = Phase::Gone;
        let (Some(triage), Some(io)) = (self.triage.take(), self.io.take()) else {
            return;
        };
        // Leaves this worker's reactor; the door registers it with its own.
        if let Ok(io) = io.into_std() {
            triage.door.enter(Arrival {
                io,
                head: self.head.split().freeze(),
                peer: self.peer,
            });
        }
    }
}

fn gone() -> io::Error {
    io::Error::from(io::ErrorKind::NotConnected)
}

impl AsyncRead for FirstHead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match this.phase {
                Phase::Through => {
                    let Some(io) = this.io.as_mut() else {
                        return Poll::Ready(Ok(()));
                    };
                    return Pin::new(io).poll_read(cx, buf);
                }
                Phase::Gone => return Poll::Ready(Ok(())),
                Phase::Yield => {
                    this.phase = Phase::Through;
                    this.permit = None;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Phase::Replay => {
                    if this.head.is_empty() {
                        this.phase = Phase::Through;
                        this.permit = None;
                        continue;
                    }
                    let n = this.head.len().min(buf.remaining());
                    buf.put_slice(&this.head[..n]);
                    this.head.advance(n);
                    if this.head.is_empty() {
                        this.phase = Phase::Yield;
                        this.head = BytesMut::new();
                    }
                    return Poll::Ready(Ok(()));
                }
                Phase::Head => {
                    if this.poll_turn(cx).is_pending() {
                        return Poll::Pending;
                    }
                    match this.poll_head(cx) {
                        Poll::Pending => {
                            // Nothing more to read now: let another
                            // connection in.
                            this.permit = None;
                            return Poll::Pending;
                        }
                        Poll::Ready(Err(e)) => {
                            this.permit = None;
                            return Poll::Ready(Err(e));
                        }
                        Poll::Ready(Ok(())) => this.triage(),
                    }
                }
            }
        }
    }
}

impl AsyncWrite for FirstHead {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_write(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::door::{Door, DoorCounts, Replay};
    use crate::tenancy::{KeyResolver, KeySecrets};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: the client's end and the server's, wrapped.
    async fn pair(gate: &HeadGate) -> (TcpStream, FirstHead) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        (client, FirstHead::new(server, Some(peer), gate))
    }

    /// One `poll_read` with room for `room` bytes, without waiting: the
    /// bytes read, or `None` when it was pending.
    fn read_once(conn: &mut FirstHead, room: usize) -> Option<Vec<u8>> {
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

    /// Polls until a read is ready, as a runtime would.
    async fn read_ready(conn: &mut FirstHead, room: usize) -> Vec<u8> {
        for _ in 0..1000 {
            if let Some(got) = read_once(conn, room) {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        panic!("no read was ready within a second");
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
        assert_eq!(first, sent[..HEAD_READ]);
        assert!(conn.past_head());
        // ...then one read that yields although the body is there...
        assert_eq!(read_once(&mut conn, 128 * 1024), None);
        // ...and from then on the socket as it is.
        let rest = read_once(&mut conn, 128 * 1024).expect("data is ready");
        assert_eq!(rest, sent[HEAD_READ..HEAD.len() + 20_000]);
        assert_eq!(gate.available(), 1, "the permit is back");
    }

    #[tokio::test]
    async fn a_head_sent_a_byte_at_a_time_is_given_whole_at_its_blank_line_with_or_without_cr() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\nHost: x\n\n",
        ] {
            let gate = HeadGate::new(1, 0);
            let (mut client, mut conn) = pair(&gate).await;
            for (i, byte) in head.iter().enumerate() {
                assert!(!conn.past_head(), "ended early, at byte {i} of {head:?}");
                client.write_all(&[*byte]).await.unwrap();
                settle().await;
                if i + 1 < head.len() {
                    assert_eq!(read_once(&mut conn, 64), None, "byte {i} of {head:?}");
                    assert_eq!(gate.available(), 1, "a stalled head holds no permit");
                }
            }
            assert_eq!(read_ready(&mut conn, 64).await, head);
            assert!(conn.past_head(), "{head:?}");
            client.write_all(b"NEXT").await.unwrap();
            settle().await;
            assert_eq!(read_once(&mut conn, 64), None, "the one yield");
            assert_eq!(read_once(&mut conn, 64).unwrap(), b"NEXT");
        }
    }

    #[tokio::test]
    async fn a_connection_waiting_for_the_gate_is_not_read_until_a_permit_is_free() {
        let gate = HeadGate::new(1, 0);
        let held = gate.permits.clone().try_acquire_owned().unwrap();
        let (mut client, mut conn) = pair(&gate).await;
        client.write_all(HEAD).await.unwrap();
        settle().await;
        assert_eq!(read_once(&mut conn, 1024), None, "waits for the permit");
        assert!(!conn.past_head());
        drop(held);
        assert_eq!(read_once(&mut conn, 1024).unwrap(), HEAD);
        assert_eq!(
            gate.available(),
            0,
            "held until the server has seen the head"
        );
        assert_eq!(read_once(&mut conn, 1024), None, "the one yield");
        assert_eq!(gate.available(), 1);
    }

    #[tokio::test]
    async fn a_head_past_the_limit_is_given_to_the_server_as_it_is() {
        let gate = HeadGate::new(1, 0);
        let (mut client, mut conn) = pair(&gate).await;
        let mut long = b"GET / HTTP/1.1\r\nX-Padding: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 2 * HEAD_LIMIT));
        client.write_all(&long).await.unwrap();
        settle().await;
        let mut got = Vec::new();
        while got.len() < HEAD_LIMIT {
            got.extend(read_once(&mut conn, 4096).expect("data is ready"));
        }
        assert_eq!(got, long[..HEAD_LIMIT]);
        assert!(conn.past_head());
    }

    #[tokio::test]
    async fn a_connection_dropped_while_waiting_gives_its_place_back() {
        let gate = HeadGate::new(1, 0);
        let held = gate.permits.clone().try_acquire_owned().unwrap();
        let (_client, mut conn) = pair(&gate).await;
        assert_eq!(read_once(&mut conn, 1024), None, "waiting");
        drop(conn);
        drop(held);
        assert_eq!(gate.available(), 1);
    }

    /// A door that answers every connection with `401` and what it was
    /// given, so a test can read both.
    fn test_door(counts: Arc<DoorCounts>) -> Door {
        Door::open(counts, Duration::from_secs(5), || {
            actix_service::fn_service(
                |(mut io, _peer): (Replay<TcpStream>, Option<SocketAddr>)| async move {
                    let mut seen = vec![0u8; 1024];
                    let n = io.read(&mut seen).await.unwrap_or(0);
                    let answer = format!(
                        "HTTP/1.1 401 Door\r\n\r\n{}",
                        String::from_utf8_lossy(&seen[..n])
                    );
                    let _ = io.write_all(answer.as_bytes()).await;
                    Ok::<_, actix_http::error::DispatchError>(())
                },
            )
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_stranger_goes_to_the_door_with_its_head_and_a_caller_with_a_key_stays() {
        let secrets = KeySecrets::new(&"s".repeat(32), None);
        let keys = KeyResolver::new(10, Duration::from_secs(60), secrets.clone(), false);
        let counts = Arc::new(DoorCounts::default());
        let triage = Triage {
            door: test_door(counts.clone()),
            keys,
        };
        let gate = HeadGate::new(1, 0).with_triage(triage.clone());
        let issued = secrets.issue().secret;
        let forged = {
            let mut forged = issued.clone().into_bytes();
            let last = forged.len() - 1;
            forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
            String::from_utf8(forged).unwrap()
        };
        let head = |key: Option<&str>, path: &str| {
            let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").into_bytes()
        };
        for (sent, stays) in [
            (head(Some(&issued), "/v1/tenant"), true),
            (head(None, "/healthz"), true),
            (head(None, "/readyz?x=1"), true),
            (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), false),
            (head(Some(&forged), "/v1/tenant"), false),
            (head(None, "/v1/tenant"), false),
            (head(Some("rk_guessed"), "/v1/openapi.json"), false),
        ] {
            let (mut client, mut conn) = pair(&gate).await;
            client.write_all(&sent).await.unwrap();
            let got = read_ready(&mut conn, 1024).await;
            let shown = String::from_utf8_lossy(&sent).into_owned();
            if stays {
                assert_eq!(got, sent, "{shown}");
                continue;
            }
            assert!(got.is_empty(), "the server sees an end of stream: {shown}");
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            let mut expected = b"HTTP/1.1 401 Door\r\n\r\n".to_vec();
            expected.extend(&sent);
            assert_eq!(answer, expected, "{shown}");
        }
        assert_eq!(counts.dropped.load(std::sync::atomic::Ordering::Relaxed), 0);

        // A head padded past the limit goes to the door whatever key it
        // shows: padding does not skip the door.
        let mut padded = head(Some(&issued), "/v1/tenant");
        padded.truncate(padded.len() - 2);
        padded.extend(b"X-Padding: ");
        padded.extend(std::iter::repeat_n(b'a', HEAD_LIMIT));
        assert!(!triage.serves(&padded[..HEAD_LIMIT]));
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
