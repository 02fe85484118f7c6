//! `owlet serve`'s HTTP/1.1 layer: one thread per connection, requests read one after the other
//! (keep-alive), heads parsed by `httparse`.
//!
//! It is owlet's own, rather than a server crate's, because the server must own each socket:
//! - a connection that sends nothing, or half a request head, is closed when its time is up (the
//!   whole head must arrive within `--idle-timeout`; so must each piece of a body, and an idle
//!   kept-alive connection is closed after it); a client that stops reading its answer fails the
//!   next write after the same time;
//! - the number of open connections is capped (beyond it, 503 and close, answered by one
//!   thread);
//! - a connection closed while its client may still be sending (a refused body) is closed
//!   gracefully ([`linger`]), so that the answer is not lost to a reset;
//! - a request waiting for a slot, or generating, can ask whether its client is still there
//!   ([`Request::peer_gone`], [`Body::peer_gone`]): a non-blocking peek at the socket, which
//!   reads end-of-file once the client has closed it.
//!
//! Request bodies need a `Content-Length` (every OpenAI client sends one); `Expect:
//! 100-continue` is answered when the body is first read, so a request refused before its body
//! is read (401, 429, 413) never uploads it, and its connection is closed.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The largest request head (request line and headers).
const MAX_HEAD: usize = 16 << 10;
/// The most headers in one request.
const MAX_HEADERS: usize = 64;

/// One client's connection.
pub struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
    idle: Duration,
    /// Body bytes of the current request not read yet.
    body_left: usize,
    /// `Expect: 100-continue` still to be answered.
    expect_continue: bool,
    /// The connection closes after the current response.
    close: bool,
    /// The current request was answered completely (the connection can carry the next one).
    done: bool,
}

impl Conn {
    fn peer_gone(&self) -> bool {
        if !self.r.buffer().is_empty() {
            return false;
        }
        let s = self.r.get_ref();
        if s.set_nonblocking(true).is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        let gone = match s.peek(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ),
        };
        let _ = s.set_nonblocking(false);
        gone
    }

    fn head(&mut self, status: u16, content_type: &str, length: Option<usize>) -> String {
        // A body left unread means the next request's start is unknown: close.
        if self.body_left > 0 {
            self.close = true;
        }
        let mut h = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\n",
            reason(status)
        );
        match length {
            Some(n) => h.push_str(&format!("Content-Length: {n}\r\n")),
            None => h.push_str("Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"),
        }
        if self.close {
            h.push_str("Connection: close\r\n");
        }
        h.push_str("\r\n");
        h
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

/// A request whose head was read; its body is read on demand.
pub struct Request<'c> {
    conn: &'c mut Conn,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body_len: usize,
}

impl<'c> Request<'c> {
    pub fn method(&self) -> &str {
        &self.method
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The first header of that name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_length(&self) -> usize {
        self.body_len
    }

    /// Reads the whole body into `out`, at most `max` bytes (the caller checks the length
    /// first); a client that stalls longer than the idle timeout fails it.
    pub fn read_body(&mut self, out: &mut Vec<u8>, max: usize) -> io::Result<()> {
        let c = &mut *self.conn;
        if c.expect_continue {
            c.expect_continue = false;
            c.w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            c.w.flush()?;
        }
        let n = c.body_left.min(max);
        let start = out.len();
        out.resize(start + n, 0);
        let r = c.r.read_exact(&mut out[start..]);
        if r.is_err() {
            out.truncate(start);
            c.close = true;
        } else {
            c.body_left -= n;
        }
        r
    }

    /// Whether the client closed its connection (checked without blocking).
    pub fn peer_gone(&self) -> bool {
        self.conn.peer_gone()
    }

    /// A whole response.
    pub fn respond(self, status: u16, content_type: &str, body: &[u8]) -> io::Result<()> {
        let c = self.conn;
        let head = c.head(status, content_type, Some(body.len()));
        c.w.write_all(head.as_bytes())?;
        c.w.write_all(body)?;
        c.w.flush()?;
        c.done = true;
        Ok(())
    }

    /// A 200 response whose body follows in HTTP/1.1 chunks.
    pub fn start_chunked(self, content_type: &str) -> io::Result<Body<'c>> {
        let c = self.conn;
        let head = c.head(200, content_type, None);
        c.w.write_all(head.as_bytes())?;
        c.w.flush()?;
        Ok(Body { conn: c })
    }
}

/// A chunked response body being written.
pub struct Body<'c> {
    conn: &'c mut Conn,
}

impl Body<'_> {
    pub fn chunk(&mut self, data: &str) -> io::Result<()> {
        let w = &mut self.conn.w;
        if !data.is_empty() {
            write!(w, "{:x}\r\n{data}\r\n", data.len())?;
        }
        w.flush()
    }

    pub fn peer_gone(&self) -> bool {
        self.conn.peer_gone()
    }

    pub fn end(self) -> io::Result<()> {
        self.conn.w.write_all(b"0\r\n\r\n")?;
        self.conn.w.flush()?;
        self.conn.done = true;
        Ok(())
    }
}

/// Why no request could be read from a connection.
enum NoRequest {
    /// Closed, timed out before the first byte, or a read failed: close quietly.
    Quiet,
    /// Answer this status (with a JSON error) and close.
    Status(u16, String),
}

/// A request head: method, target, headers, and whether it is HTTP/1.0.
type Head = (String, String, Vec<(String, String)>, bool);

/// Reads the next request head; the whole head must arrive within the idle timeout.
fn read_head(c: &mut Conn) -> Result<Head, NoRequest> {
    let deadline = Instant::now() + c.idle;
    let mut head: Vec<u8> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(if head.is_empty() {
                NoRequest::Quiet
            } else {
                NoRequest::Status(
                    408,
                    "the request head did not arrive in time (--idle-timeout)".into(),
                )
            });
        }
        let _ = c.r.get_ref().set_read_timeout(Some(left));
        let buf = match c.r.fill_buf() {
            Ok([]) => return Err(NoRequest::Quiet),
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return Err(NoRequest::Quiet),
        };
        // Take bytes up to the end of the head ("\r\n\r\n"), leaving the body buffered.
        let before = head.len();
        let mut used = buf.len();
        head.extend_from_slice(buf);
        let from = before.saturating_sub(3);
        if let Some(p) = head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + p + 4;
            used = end - before;
            head.truncate(end);
        }
        c.r.consume(used);
        if head.ends_with(b"\r\n\r\n") {
            break;
        }
        // A client may send blank lines between requests (RFC 9112 2.2).
        while head.starts_with(b"\r\n") {
            head.drain(..2);
        }
        if head.len() > MAX_HEAD {
            return Err(NoRequest::Status(
                431,
                format!("the request head is larger than {} KiB", MAX_HEAD >> 10),
            ));
        }
    }
    let _ = c.r.get_ref().set_read_timeout(Some(c.idle));
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut hs);
    match req.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(NoRequest::Status(400, "incomplete request head".into()))
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(NoRequest::Status(
                431,
                format!("more than {MAX_HEADERS} headers"),
            ))
        }
        Err(e) => return Err(NoRequest::Status(400, format!("bad request head: {e}"))),
    }
    let method = req.method.unwrap_or("").to_string();
    let url = req.path.unwrap_or("").to_string();
    let http10 = req.version == Some(0);
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    Ok((method, url, headers, http10))
}

/// Serves one connection until it closes, fails or times out.
fn serve_conn<F>(stream: TcpStream, idle: Duration, handle: &F)
where
    F: Fn(Request<'_>) + Sync,
{
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(idle));
    let _ = stream.set_write_timeout(Some(idle));
    let Ok(w) = stream.try_clone() else { return };
    let mut c = Conn {
        r: BufReader::with_capacity(64 << 10, stream),
        w,
        idle,
        body_left: 0,
        expect_continue: false,
        close: false,
        done: false,
    };
    loop {
        let (method, url, headers, http10) = match read_head(&mut c) {
            Ok(h) => h,
            Err(NoRequest::Quiet) => break,
            Err(NoRequest::Status(status, message)) => {
                c.close = true;
                let body = error_body(&message);
                let head = c.head(status, "application/json", Some(body.len()));
                let _ =
                    c.w.write_all(head.as_bytes())
                        .and_then(|_| c.w.write_all(body.as_bytes()));
                break;
            }
        };
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let connection = get("connection").unwrap_or_default();
        c.close = if http10 {
            !connection.contains("keep-alive")
        } else {
            connection.contains("close")
        };
        c.done = false;
        c.expect_continue = get("expect").is_some_and(|v| v == "100-continue");
        let length = get("content-length");
        let refuse = if get("transfer-encoding").is_some() {
            Some((
                411,
                "request bodies need a Content-Length (chunked uploads are not supported)",
            ))
        } else {
            match length.as_deref().map(str::parse::<usize>) {
                None => {
                    c.body_left = 0;
                    None
                }
                Some(Ok(n)) => {
                    c.body_left = n;
                    None
                }
                Some(Err(_)) => Some((400, "bad Content-Length")),
            }
        };
        if let Some((status, message)) = refuse {
            c.close = true;
            let body = error_body(message);
            let head = c.head(status, "application/json", Some(body.len()));
            let _ =
                c.w.write_all(head.as_bytes())
                    .and_then(|_| c.w.write_all(body.as_bytes()));
            break;
        }
        let body_len = c.body_left;
        handle(Request {
            conn: &mut c,
            method,
            url,
            headers,
            body_len,
        });
        if c.close || !c.done || c.body_left > 0 {
            break;
        }
    }
    let _ = c.w.flush();
    linger(c.r.get_ref());
}

/// Closes a connection whose client may still be sending (a body the server refused to read,
/// a request after a 503): the answer is followed by end-of-file, then what the client sends
/// is read and dropped until it closes too, at most 2 s and 64 MiB. Closing a socket with
/// unread data would reset it, and a reset can destroy the answer before the client reads it.
fn linger(s: &TcpStream) {
    let _ = s.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut r = s;
    let mut buf = [0u8; 16 << 10];
    let mut total = 0usize;
    while total < 64 << 20 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = s.shutdown(Shutdown::Both);
}

fn error_body(message: &str) -> String {
    serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "code": null}})
        .to_string()
}

/// A live connection thread; dropping it counts the connection out (even on a panic).
struct Live<'a>(&'a AtomicUsize);

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts connections for ever: each on its own thread, at most `max_conns` at once (beyond
/// that: 503 and close).
pub fn serve<F>(
    listener: TcpListener,
    idle: Duration,
    max_conns: usize,
    live: &'static AtomicUsize,
    handle: &'static F,
) where
    F: Fn(Request<'_>) + Sync,
{
    // Connections beyond the cap are answered 503 by one thread, up to 64 waiting for it
    // (beyond those, closed at once), so that a flood cannot start threads.
    let (refuse, refused) = std::sync::mpsc::sync_channel::<TcpStream>(64);
    let _ = std::thread::Builder::new()
        .name("owlet-refuse".into())
        .spawn(move || {
            for mut stream in refused {
                let body = error_body("too many open connections; retry later");
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = write!(
                    stream,
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                linger(&stream);
            }
        });
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if live.fetch_add(1, Ordering::SeqCst) >= max_conns {
            live.fetch_sub(1, Ordering::SeqCst);
            let _ = refuse.try_send(stream);
            continue;
        }
        let spawned = std::thread::Builder::new()
            .name("owlet-conn".into())
            .spawn(move || {
                let _live = Live(live);
                serve_conn(stream, idle, handle);
            });
        if let Err(e) = spawned {
            live.fetch_sub(1, Ordering::SeqCst);
            eprintln!("owlet serve: cannot start a connection thread: {e}");
        }
    }
}
