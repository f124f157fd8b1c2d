//! A lean HTTP/1.1 client for closed loops that measure the server's
//! own cost against the database's: one keep-alive connection per client,
//! each request written whole, each answer read by its `Content-Length`.
//! reqwest's general client (a URL parsed, a header map built, a
//! connection pool asked, per request) spent about an eighth of the two
//! cores the server and PostgreSQL share in `many-tenants`, where pgbench's
//! libpq spent about a hundredth; this one leaves the machine to the two
//! sides being compared, as `wrk` would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stats::Latencies;

/// An answer's status and whether the server closes the connection after it.
struct Answer {
    status: u16,
    close: bool,
}

/// One client's connection and its read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends `request` and reads its answer, body included.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<Answer> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = response
                .parse(&self.buf)
                .map_err(|e| std::io::Error::other(e.to_string()))?
            {
                let status = response.code.unwrap_or(0);
                let mut length = 0usize;
                let mut close = false;
                for h in response.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .ok_or_else(|| std::io::Error::other("bad content-length"))?;
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        close = h.value.eq_ignore_ascii_case(b"close");
                    }
                }
                while self.buf.len() < head + length {
                    self.fill().await?;
                }
                return Ok(Answer { status, close });
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let start = self.buf.len();
        self.buf.resize(start + 8 * 1024, 0);
        let n = self.stream.read(&mut self.buf[start..]).await?;
        self.buf.truncate(start + n);
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

/// `clients` closed-loop clients sending `GET path` with `key` for
/// `duration`, each walking `paths` from its own offset; the rate of
/// successes and their latencies.
pub(crate) async fn closed(
    base: &str,
    paths: &Arc<Vec<(String, String)>>,
    clients: usize,
    duration: Duration,
) -> (f64, Latencies) {
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let started = Instant::now();
    let workers = (0..clients).map(|w| {
        let paths = paths.clone();
        let addr = addr.to_string();
        tokio::spawn(async move {
            let mut latencies = Latencies::default();
            let mut request = Vec::with_capacity(512);
            let mut conn: Option<Conn> = None;
            let mut i = w;
            while started.elapsed() < duration {
                let (key, path) = &paths[i % paths.len()];
                i += clients;
                request.clear();
                for part in [
                    "GET ",
                    path,
                    " HTTP/1.1\r\nHost: ",
                    &addr,
                    "\r\nAuthorization: Bearer ",
                    key,
                    "\r\n\r\n",
                ] {
                    request.extend_from_slice(part.as_bytes());
                }
                let t = Instant::now();
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match Conn::open(&addr).await {
                        Ok(c) => conn.insert(c),
                        Err(_) => {
                            latencies.error();
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                match c.exchange(&request).await {
                    Ok(answer) => {
                        if (200..300).contains(&answer.status) {
                            latencies.record(t.elapsed());
                        } else {
                            if std::env::var_os("LOAD_DEBUG").is_some() {
                                let body = String::from_utf8_lossy(&c.buf);
                                let body = body.split("\r\n\r\n").nth(1).unwrap_or_default();
                                eprintln!(
                                    "{:.1}s {path}: {} {body}",
                                    started.elapsed().as_secs_f64(),
                                    answer.status
                                );
                            }
                            latencies.error();
                        }
                        if answer.close {
                            conn = None;
                        }
                    }
                    Err(e) => {
                        if std::env::var_os("LOAD_DEBUG").is_some() {
                            eprintln!("{path}: {e}");
                        }
                        latencies.error();
                        conn = None;
                    }
                }
            }
            latencies
        })
    });
    let all = crate::stats::gather(workers).await;
    (all.count() as f64 / started.elapsed().as_secs_f64(), all)
}
