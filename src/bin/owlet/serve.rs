//! `owlet serve`: an OpenAI-compatible HTTP server over one model and N session slots.
//!
//! The HTTP/1.1 layer is owlet's own (`serve/http.rs`, request heads parsed by `httparse`,
//! hyper's parser): a plain thread per connection, no async runtime. The work is CPU-bound
//! generation on a fixed number of sessions, so an async stack (axum + tokio + hyper, ~60
//! crates and minutes of compilation on a Pi) would buy nothing, and owning the socket gives
//! what the server needs: timeouts for idle and half-sent requests, a cap on connections, and a
//! cheap check (a non-blocking peek) of whether a client is still there.
//!
//! Flow of a chat request: authorization → admission (at most `slots + queue` requests hold or
//! wait for a slot; beyond that 429) → body (size cap, 413) → JSON and fields (400, bad base64
//! too) → remote images fetched (--allow-remote-images; 413 beyond the size cap, 422 for
//! failures) → prompt rendered and checked against the context (400) → a slot (the session
//! whose cache shares the longest prefix with the prompt; a request whose client leaves while
//! it waits is dropped at once) → images decoded one at a time (422 for data that is not an
//! image) and embedded → generation, answered whole or streamed as server-sent events.
//!
//! Before each token the generation checks that its client is still connected; one that left
//! stops it there and frees the slot.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use clap::Args;
use owlet::image::{self as oimage, AspectMode, ExifOrientation, ImageLimits, RgbImage};
use owlet::model::Model;
use owlet::prompt::{self, Role, Turn, IMAGE_TOKEN_ID};
use owlet::sampling::SamplingParams;
use owlet::score::{Aspect, Scale, ScoreOptions, Scorer, Subject};
use owlet::session::{GenerateOptions, Session, StopReason};
use serde_json::{json, Map, Value};

use super::serve_http::{self as http, Body, Request};
use super::ModelArgs;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (loopback by default: the server answers anyone who can reach it).
    #[arg(long = "host", default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one; the address is printed on the first line of stdout).
    #[arg(long = "port", default_value_t = 8080)]
    port: u16,
    /// Sessions that generate at the same time (each with its own KV cache and threads).
    #[arg(long = "slots", default_value_t = 1)]
    slots: usize,
    /// Requests that may wait for a slot; beyond them requests get 429.
    #[arg(long = "queue", default_value_t = 8)]
    queue: usize,
    /// Require `Authorization: Bearer KEY` on every route but /health (default: the
    /// OWLET_API_KEY environment variable, which, unlike an argument, other users cannot see).
    #[arg(long = "api-key")]
    api_key: Option<String>,
    /// Largest request body in MiB (base64 images included).
    #[arg(long = "max-body-mib", default_value_t = 32)]
    max_body_mib: usize,
    /// Most messages in one request.
    #[arg(long = "max-messages", default_value_t = 256)]
    max_messages: usize,
    /// Most images in one request.
    #[arg(long = "max-images", default_value_t = 8)]
    max_images: usize,
    /// Largest image in megapixels (width × height; checked from the header before decoding).
    #[arg(long = "max-image-mpx", default_value_t = 64.0)]
    max_image_mpx: f64,
    /// Accept `file://` image URLs (local files the server can read; off by default, since a
    /// client could read any image the server's user can).
    #[arg(long = "allow-file-urls")]
    allow_file_urls: bool,
    /// Fetch `http://` and `https://` image URLs (off by default: a server that fetches URLs
    /// can be turned against its own network). At most the --max-body-mib bytes per image,
    /// 3 redirects, --remote-timeout seconds.
    #[arg(long = "allow-remote-images")]
    allow_remote_images: bool,
    /// Time limit in seconds for fetching one remote image (--allow-remote-images).
    #[arg(long = "remote-timeout", default_value_t = 20)]
    remote_timeout: u64,
    /// Seconds a connection may take to send a request head (from its first byte or the end of
    /// the previous answer), and may stall while sending a body or reading an answer; an idle
    /// kept-alive connection is closed after it.
    #[arg(long = "idle-timeout", default_value_t = 30)]
    idle_timeout: u64,
    /// Aspect handling: resize, pad or crop (default: the model file's).
    #[arg(long = "image-mode")]
    image_mode: Option<String>,
}

/// A request's failure, answered as `{"error":{"message":...,"type":...}}`.
#[derive(Debug)]
struct ApiError {
    status: u16,
    kind: &'static str,
    message: String,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError {
        status: 400,
        kind: "invalid_request_error",
        message: message.into(),
    }
}

fn err(status: u16, kind: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        kind,
        message: message.into(),
    }
}

impl ApiError {
    fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "code": Value::Null}})
    }
}

/// What the server shares between its request threads.
struct State {
    model: &'static Model,
    model_id: String,
    n_ctx: usize,
    /// Idle sessions; a request takes one and puts it back.
    idle: Mutex<Vec<Session<'static>>>,
    freed: Condvar,
    n_slots: usize,
    /// Requests holding or waiting for a slot.
    admitted: AtomicUsize,
    capacity: usize,
    /// Connection threads alive: a flood of connections cannot spawn unbounded threads.
    conns: &'static AtomicUsize,
    max_conns: usize,
    api_key: Option<String>,
    max_body: usize,
    max_messages: usize,
    max_images: usize,
    max_image_pixels: u64,
    allow_file_urls: bool,
    /// The HTTP client for remote images, with --allow-remote-images.
    remote: Option<ureq::Agent>,
    mode: Option<AspectMode>,
    next_id: AtomicU64,
}

/// A place among the admitted requests; dropping it gives the place back.
struct Admission<'a>(&'a State);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A session taken from the idle list; dropping it puts it back and wakes a waiter.
struct Slot<'a> {
    state: &'a State,
    session: Option<Session<'static>>,
}

impl Slot<'_> {
    fn session(&mut self) -> &mut Session<'static> {
        self.session
            .as_mut()
            .expect("a slot holds its session until dropped")
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let mut idle = self.state.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.push(s);
            self.state.freed.notify_one();
        }
    }
}

impl State {
    fn admit(&self) -> Result<Admission<'_>, ApiError> {
        let n = self.admitted.fetch_add(1, Ordering::SeqCst);
        let a = Admission(self);
        if n >= self.capacity {
            return Err(err(
                429,
                "rate_limit_error",
                format!(
                    "the server is busy: {} slot(s) and {} queued request(s) are taken; retry later",
                    self.n_slots,
                    self.capacity - self.n_slots
                ),
            ));
        }
        Ok(a)
    }

    /// Waits for an idle session, preferring the one whose cache shares the longest prefix with
    /// `ids` (its conversation is being continued); `None` once `gone()` says that the client
    /// left (checked every 20 ms while waiting).
    fn slot(&self, ids: &[i64], gone: impl Fn() -> bool) -> Option<Slot<'_>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while idle.is_empty() {
            idle = self
                .freed
                .wait_timeout(idle, Duration::from_millis(20))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if idle.is_empty() && gone() {
                return None;
            }
        }
        let best = (0..idle.len())
            .max_by_key(|&i| {
                idle[i]
                    .cached_ids()
                    .iter()
                    .zip(ids)
                    .take_while(|(a, b)| a == b)
                    .count()
            })
            .unwrap_or(0);
        let session = idle.swap_remove(best);
        Some(Slot {
            state: self,
            session: Some(session),
        })
    }
}

pub fn run(a: ServeArgs) -> Result<(), String> {
    if a.slots == 0 {
        return Err("--slots must be at least 1".into());
    }
    if a.max_body_mib == 0 || a.max_body_mib > 4096 {
        return Err("--max-body-mib must be between 1 and 4096".into());
    }
    if a.idle_timeout == 0 || a.idle_timeout > 3600 {
        return Err("--idle-timeout must be between 1 and 3600 seconds".into());
    }
    if a.remote_timeout == 0 || a.remote_timeout > 600 {
        return Err("--remote-timeout must be between 1 and 600 seconds".into());
    }
    let mode = super::aspect(&a.image_mode)?;
    if !(a.max_image_mpx > 0.0 && a.max_image_mpx <= 1024.0) {
        return Err(format!(
            "--max-image-mpx {} must be above 0 and at most 1024",
            a.max_image_mpx
        ));
    }
    let api_key = a
        .api_key
        .clone()
        .or_else(|| std::env::var("OWLET_API_KEY").ok())
        .filter(|k| !k.is_empty());
    if api_key
        .as_ref()
        .is_some_and(|k| k.chars().any(|c| c.is_control() || c == ' '))
    {
        return Err("--api-key: the key must not hold spaces or control characters".into());
    }
    let path = a
        .model
        .model
        .clone()
        .unwrap_or_else(|| super::bundled(super::DEFAULT_MODEL));
    let model_id = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "owlet".into());
    // The model lives as long as the process; sessions borrow it from every thread.
    let model: &'static Model = Box::leak(Box::new(super::load_model_cached(
        &a.model.model,
        &a.model.packed_cache,
    )?));
    // The threads are shared out between the slots.
    let total = super::threads(a.model.threads).unwrap_or_else(owlet::threads::default_threads);
    let mut margs = a.model.clone();
    margs.threads = Some((total / a.slots).max(1));
    let mut sessions = Vec::with_capacity(a.slots);
    for _ in 0..a.slots {
        sessions.push(super::session(model, &margs)?);
    }
    let n_ctx = sessions[0].n_ctx();
    let capacity = a.slots.saturating_add(a.queue);
    let state: &'static State = Box::leak(Box::new(State {
        model,
        model_id,
        n_ctx,
        idle: Mutex::new(sessions),
        freed: Condvar::new(),
        n_slots: a.slots,
        admitted: AtomicUsize::new(0),
        capacity,
        conns: Box::leak(Box::new(AtomicUsize::new(0))),
        max_conns: capacity.saturating_add(64),
        api_key: api_key.clone(),
        max_body: a.max_body_mib << 20,
        max_messages: a.max_messages,
        max_images: a.max_images,
        max_image_pixels: (a.max_image_mpx * 1e6) as u64,
        allow_file_urls: a.allow_file_urls,
        remote: a
            .allow_remote_images
            .then(|| remote_agent(a.remote_timeout)),
        mode,
        next_id: AtomicU64::new(1),
    }));
    let listener = TcpListener::bind((a.host.as_str(), a.port))
        .map_err(|e| format!("--host {} --port {}: cannot listen: {e}", a.host, a.port))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("--host {} --port {}: {e}", a.host, a.port))?;
    // The first line of stdout is the address (tests and scripts read it).
    println!("owlet serve: listening on http://{addr}");
    let _ = std::io::stdout().flush();
    eprintln!(
        "owlet serve: model {} ({} slot(s), queue {}, context {n_ctx}){}{}",
        path.display(),
        a.slots,
        a.queue,
        if api_key.is_some() {
            ", API key required"
        } else {
            ""
        },
        if a.allow_remote_images {
            ", fetches http(s) image URLs"
        } else {
            ""
        }
    );
    let handler: &'static _ = Box::leak(Box::new(move |rq: Request<'_>| handle(state, rq)));
    http::serve(
        listener,
        Duration::from_secs(a.idle_timeout),
        state.max_conns,
        state.conns,
        handler,
    );
    Ok(())
}

/// What one request did, for its log line.
#[derive(Default)]
struct Log {
    tokens_in: usize,
    tokens_out: usize,
    ttft_ms: Option<f64>,
    /// Prompt positions taken from the slot's KV cache.
    reused: usize,
    stop: &'static str,
}

fn handle(st: &'static State, rq: Request<'_>) {
    let t0 = Instant::now();
    let id = st.next_id.fetch_add(1, Ordering::Relaxed);
    let method = rq.method().to_string();
    // The path is the client's: escaped in the log line, so that it cannot forge lines.
    let path = rq.url().split('?').next().unwrap_or("").to_string();
    let shown: String = path.escape_debug().take(200).collect();
    let mut log = Log::default();
    let status = match route(st, rq, id, t0, &method, &path, &mut log) {
        Ok(status) => status,
        Err(b) => {
            let (rq, e) = *b;
            log.stop = "error";
            let _ = respond_json(rq, e.status, &e.body());
            if e.status >= 500 {
                eprintln!("owlet serve: request {id}: {}", e.message);
            }
            e.status
        }
    };
    let ms = |d: f64| format!("{d:.1}");
    eprintln!(
        "owlet serve: id={id} {method} {shown} status={status} tokens_in={} reused={} tokens_out={} ttft_ms={} total_ms={} stop={}",
        log.tokens_in,
        log.reused,
        log.tokens_out,
        log.ttft_ms.map_or_else(|| "-".to_string(), ms),
        ms(t0.elapsed().as_secs_f64() * 1e3),
        if log.stop.is_empty() { "-" } else { log.stop }
    );
}

/// A status sent, or the request back with the error to answer it with.
type Routed<'c> = Result<u16, Box<(Request<'c>, ApiError)>>;

fn fail((rq, e): (Request<'_>, ApiError)) -> Routed<'_> {
    Err(Box::new((rq, e)))
}

fn route<'c>(
    st: &'static State,
    rq: Request<'c>,
    id: u64,
    t0: Instant,
    method: &str,
    path: &str,
    log: &mut Log,
) -> Routed<'c> {
    if method == "GET" && path == "/health" {
        let busy = st.n_slots - st.idle.lock().map_or(0, |v| v.len());
        let body = json!({
            "status": "ok",
            "slots": st.n_slots,
            "slots_busy": busy,
            "requests_admitted": st.admitted.load(Ordering::SeqCst),
        });
        return Ok(respond_json(rq, 200, &body));
    }
    if let Some(key) = &st.api_key {
        let given = rq.header("Authorization").map(|v| v.trim().to_string());
        let want = format!("Bearer {key}");
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), want.as_bytes())) {
            return fail((
                rq,
                err(
                    401,
                    "authentication_error",
                    "missing or wrong API key: send the header `Authorization: Bearer KEY`",
                ),
            ));
        }
    }
    match (method, path) {
        ("GET", "/v1/models") => {
            let body = json!({"object": "list", "data": [{
                "id": st.model_id, "object": "model", "created": 0, "owned_by": "owlet",
                "context_length": st.n_ctx,
            }]});
            Ok(respond_json(rq, 200, &body))
        }
        ("POST", "/v1/chat/completions") => chat(st, rq, id, t0, log),
        ("POST", "/v1/score") => score(st, rq, log),
        (_, "/v1/models" | "/v1/chat/completions" | "/v1/score" | "/health") => fail((
            rq,
            err(
                405,
                "invalid_request_error",
                format!("{method} is not allowed on {path}"),
            ),
        )),
        _ => fail((
            rq,
            err(
                404,
                "invalid_request_error",
                format!(
                    "no route {path}: this server has GET /health, GET /v1/models, POST /v1/chat/completions and POST /v1/score"
                ),
            ),
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn respond_json(rq: Request<'_>, status: u16, body: &Value) -> u16 {
    let _ = rq.respond(status, "application/json", body.to_string().as_bytes());
    status
}

/// The request body as JSON, within the size limit.
fn read_json(st: &State, rq: &mut Request<'_>) -> Result<Value, ApiError> {
    let too_big = || {
        err(
            413,
            "invalid_request_error",
            format!(
                "the request body is larger than {} MiB (--max-body-mib)",
                st.max_body >> 20
            ),
        )
    };
    if rq.body_length() > st.max_body {
        return Err(too_big());
    }
    let mut body = Vec::new();
    rq.read_body(&mut body, st.max_body)
        .map_err(|e| bad(format!("reading the request body: {e}")))?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("the body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(bad("the body must be a JSON object"));
    }
    Ok(v)
}

/// One chat request, checked and decoded.
struct ChatRequest {
    turns: Vec<Turn>,
    images: Vec<ImageSource>,
    max_tokens: Option<usize>,
    sampling: SamplingParams,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
    ignore_eos: bool,
}

fn opt_f32(o: &Map<String, Value>, key: &str, default: f32) -> Result<f32, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .map(|x| x as f32)
            .ok_or_else(|| bad(format!("`{key}` must be a number"))),
    }
}

fn opt_bool(o: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| bad(format!("`{key}` must be true or false"))),
    }
}

fn parse_chat(st: &State, body: &Value) -> Result<ChatRequest, ApiError> {
    let o = body
        .as_object()
        .ok_or_else(|| bad("the body must be a JSON object"))?;
    let messages = o
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("`messages` must be an array of messages"))?;
    if messages.is_empty() {
        return Err(bad("`messages` is empty"));
    }
    if messages.len() > st.max_messages {
        return Err(bad(format!(
            "{} messages is more than the {} allowed (--max-messages)",
            messages.len(),
            st.max_messages
        )));
    }
    let mut turns = Vec::new();
    let mut images = Vec::new();
    // mPLUG-Owl2's template has no system prompt: system text goes in front of the next user
    // message.
    let mut system = String::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("messages[{i}].role must be a string")))?;
        let mut texts = Vec::new();
        let mut n_images = 0;
        match m.get("content") {
            Some(Value::String(s)) => texts.push(s.clone()),
            Some(Value::Null) | None if role == "assistant" => {}
            Some(Value::Array(parts)) => {
                for (j, p) in parts.iter().enumerate() {
                    let at = format!("messages[{i}].content[{j}]");
                    match p.get("type").and_then(Value::as_str) {
                        Some("text") => texts.push(
                            p.get("text")
                                .and_then(Value::as_str)
                                .ok_or_else(|| bad(format!("{at}.text must be a string")))?
                                .to_string(),
                        ),
                        Some("image_url") => {
                            if role != "user" {
                                return Err(bad(format!(
                                    "{at}: only user messages can hold images"
                                )));
                            }
                            let url = match p.get("image_url") {
                                Some(Value::String(s)) => s.as_str(),
                                Some(v) => {
                                    v.get("url").and_then(Value::as_str).ok_or_else(|| {
                                        bad(format!("{at}.image_url.url must be a string"))
                                    })?
                                }
                                None => return Err(bad(format!("{at}.image_url is missing"))),
                            };
                            if images.len() >= st.max_images {
                                return Err(bad(format!(
                                    "more than {} images in one request (--max-images)",
                                    st.max_images
                                )));
                            }
                            images.push(load_url(st, url, &at)?);
                            n_images += 1;
                        }
                        Some(t) => {
                            return Err(bad(format!(
                                "{at}.type {t:?} is not supported (text or image_url)"
                            )))
                        }
                        None => return Err(bad(format!("{at}.type must be a string"))),
                    }
                }
            }
            _ => {
                return Err(bad(format!(
                    "messages[{i}].content must be a string or an array of content parts"
                )))
            }
        }
        let text = texts.join("\n");
        match role {
            "system" | "developer" => {
                if !system.is_empty() {
                    system.push('\n');
                }
                system.push_str(&text);
            }
            "user" => {
                let text = if system.is_empty() {
                    text
                } else {
                    format!("{}\n{text}", std::mem::take(&mut system))
                };
                turns.push(Turn {
                    role: Role::User,
                    text,
                    images: n_images,
                });
            }
            "assistant" => turns.push(Turn {
                role: Role::Assistant,
                text,
                images: 0,
            }),
            r => {
                return Err(bad(format!(
                    "messages[{i}].role {r:?} is not supported (system, user or assistant)"
                )))
            }
        }
    }
    if turns.last().map(|t| t.role) != Some(Role::User) {
        return Err(bad("the last message must be the user's"));
    }
    if let Some(n) = o.get("n").filter(|v| !v.is_null()) {
        if n.as_u64() != Some(1) {
            return Err(bad("`n` must be 1: one answer per request"));
        }
    }
    let max_tokens = match o
        .get("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| o.get("max_tokens").filter(|v| !v.is_null()))
    {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => return Err(bad("`max_tokens` must be a positive integer")),
        },
    };
    let seed = match o.get("seed") {
        None | Some(Value::Null) => {
            // OpenAI samples differently each time unless a seed is given.
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            t ^ st.next_id.load(Ordering::Relaxed).rotate_left(32)
        }
        Some(v) => v
            .as_i64()
            .map(|s| s as u64)
            .or_else(|| v.as_u64())
            .ok_or_else(|| bad("`seed` must be an integer"))?,
    };
    let temperature = opt_f32(o, "temperature", 1.0)?;
    if !(0.0..=2.0).contains(&temperature) {
        return Err(bad(format!(
            "`temperature` {temperature} must be between 0 and 2"
        )));
    }
    let sampling = SamplingParams {
        temperature,
        top_k: 0,
        top_p: opt_f32(o, "top_p", 1.0)?,
        repeat_penalty: 1.0,
        seed,
    };
    sampling
        .validate()
        .map_err(|e| bad(format!("sampling settings: {e}")))?;
    let stop = match o.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("`stop` must be a string or an array of strings"))?,
        Some(_) => return Err(bad("`stop` must be a string or an array of strings")),
    };
    if stop.len() > 4 || stop.iter().any(|s| s.is_empty() || s.len() > 256) {
        return Err(bad(
            "`stop` takes at most 4 sequences of 1 to 256 bytes each",
        ));
    }
    let stream = opt_bool(o, "stream")?;
    let include_usage = match o.get("stream_options") {
        Some(Value::Object(so)) => opt_bool(so, "include_usage")?,
        _ => false,
    };
    Ok(ChatRequest {
        turns,
        images,
        max_tokens,
        sampling,
        stop,
        stream,
        include_usage,
        ignore_eos: opt_bool(o, "ignore_eos")?,
    })
}

/// An image as the request gave it. It is decoded only once the request has a slot, one image
/// at a time, so that queued requests hold their compressed bytes only: the memory in use stays
/// below `(slots + queue) × --max-body-mib` plus one decoded image per slot.
struct ImageSource {
    /// Where it is in the request, for errors (`messages[0].content[1]`).
    at: String,
    data: ImageData,
}

enum ImageData {
    Bytes(Vec<u8>),
    File(PathBuf),
    /// An http(s) URL, fetched into `Bytes` before the request waits for a slot.
    Remote(String),
}

/// The client for --allow-remote-images: a time limit per fetch, at most 3 redirects, every
/// status received as a response (so that its code can be named), rustls for https.
fn remote_agent(timeout_s: u64) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(timeout_s)))
        .max_redirects(3)
        .http_status_as_error(false)
        .user_agent(concat!("owlet/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

impl ImageSource {
    /// Fetches a remote image's bytes: at most --max-body-mib (413 beyond, found while reading,
    /// so a larger or endless body is never held), 422 when the URL cannot be fetched.
    fn fetch(&mut self, st: &State) -> Result<(), ApiError> {
        let ImageData::Remote(url) = &self.data else {
            return Ok(());
        };
        let Some(agent) = &st.remote else {
            return Err(bad(format!("{}: remote image URLs are off", self.at)));
        };
        let at = &self.at;
        let shown: String = url.escape_debug().take(200).collect();
        let failed = |what: String| {
            err(
                422,
                "invalid_request_error",
                format!("{at}: cannot fetch the image URL {shown}: {what}"),
            )
        };
        let resp = agent.get(url.as_str()).call().map_err(|e| {
            failed(match e {
                ureq::Error::Timeout(_) => "timed out (--remote-timeout)".to_string(),
                ureq::Error::TooManyRedirects => "more than 3 redirects".to_string(),
                e => e.to_string(),
            })
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(failed(format!(
                "the server answered HTTP {}",
                status.as_u16()
            )));
        }
        let max = st.max_body;
        let too_big = || {
            err(
                413,
                "invalid_request_error",
                format!(
                    "{at}: the image at {shown} is larger than {} MiB (--max-body-mib)",
                    max >> 20
                ),
            )
        };
        let declared = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        resp.into_body()
            .into_with_config()
            .limit(u64::MAX)
            .reader()
            .take(max as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| failed(format!("reading its body: {e}")))?;
        if bytes.len() > max {
            return Err(too_big());
        }
        self.data = ImageData::Bytes(bytes);
        Ok(())
    }

    fn decode(&self, st: &State) -> Result<RgbImage, ApiError> {
        let limits = ImageLimits {
            max_file_bytes: st.max_body as u64,
            max_pixels: st.max_image_pixels,
            ..ImageLimits::default()
        };
        match &self.data {
            ImageData::Bytes(b) => oimage::decode_with(b, &limits, ExifOrientation::Apply),
            ImageData::File(p) => oimage::load_with(p, &limits, ExifOrientation::Apply),
            ImageData::Remote(_) => {
                return Err(err(
                    500,
                    "server_error",
                    format!("{}: the remote image was not fetched", self.at),
                ))
            }
        }
        .map_err(|e| {
            err(
                422,
                "invalid_request_error",
                format!("{}: not a usable image: {e}", self.at),
            )
        })
    }
}

/// Checks an image URL and takes its bytes: `data:image/...;base64,...`, `file://` with
/// --allow-file-urls, `http(s)://` with --allow-remote-images (fetched later, [`ImageSource::fetch`]).
fn load_url(st: &State, url: &str, at: &str) -> Result<ImageSource, ApiError> {
    let source = |data| ImageSource {
        at: at.to_string(),
        data,
    };
    if let Some(rest) = url.strip_prefix("data:") {
        let Some((meta, data)) = rest.split_once(',') else {
            return Err(bad(format!(
                "{at}: a data URL needs a comma before its data"
            )));
        };
        if !meta.ends_with(";base64") {
            return Err(bad(format!(
                "{at}: only base64 data URLs are accepted (data:image/png;base64,...)"
            )));
        }
        let engine = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let clean: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let bytes = engine
            .decode(clean.as_bytes())
            .map_err(|e| bad(format!("{at}: bad base64 in the data URL: {e}")))?;
        return Ok(source(ImageData::Bytes(bytes)));
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !st.allow_file_urls {
            return Err(bad(format!(
                "{at}: file:// URLs are refused unless the server runs with --allow-file-urls"
            )));
        }
        return Ok(source(ImageData::File(PathBuf::from(path))));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        if st.remote.is_none() {
            return Err(bad(format!(
                "{at}: this server does not fetch http(s) image URLs unless it runs with --allow-remote-images; send the image as a data URL (data:image/jpeg;base64,...)"
            )));
        }
        return Ok(source(ImageData::Remote(url.to_string())));
    }
    Err(bad(format!(
        "{at}: the image URL must be a data URL (data:image/jpeg;base64,...)"
    )))
}

/// Holds back text that could still become a stop sequence and finds the first one.
struct StopScan<'a> {
    stop: &'a [String],
    /// Bytes of the answer already released.
    sent: usize,
    /// Where the first stop sequence starts, once seen.
    hit: Option<usize>,
}

impl StopScan<'_> {
    /// The text (`text[sent..]`) that can be released now.
    fn release(&mut self, text: &str) -> (usize, usize) {
        let start = self.sent;
        if self.stop.is_empty() {
            self.sent = text.len();
            return (start, self.sent);
        }
        let longest = self.stop.iter().map(String::len).max().unwrap_or(0);
        let mut from = start.saturating_sub(longest);
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        let hit = self
            .stop
            .iter()
            .filter_map(|s| text[from..].find(s.as_str()).map(|p| p + from))
            .min();
        if let Some(p) = hit {
            self.hit = Some(p);
            self.sent = p.max(start);
            return (start, self.sent);
        }
        let mut end = text.len().saturating_sub(longest - 1).max(start);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.sent = end.max(start);
        (start, self.sent)
    }
}

/// One server-sent event.
fn event(out: &mut Body<'_>, data: &str) -> std::io::Result<()> {
    out.chunk(&format!("data: {data}\n\n"))
}

/// Closes a stream of server-sent events with `[DONE]`.
fn done(mut out: Body<'_>) -> std::io::Result<()> {
    event(&mut out, "[DONE]")?;
    out.end()
}

fn chat<'c>(
    st: &'static State,
    mut rq: Request<'c>,
    id: u64,
    t0: Instant,
    log: &mut Log,
) -> Routed<'c> {
    let _admission = match st.admit() {
        Ok(a) => a,
        Err(e) => return fail((rq, e)),
    };
    let mut req = match read_json(st, &mut rq).and_then(|b| parse_chat(st, &b)) {
        Ok(r) => r,
        Err(e) => return fail((rq, e)),
    };
    // Remote images are fetched before the request waits for a slot.
    for src in &mut req.images {
        if let Err(e) = src.fetch(st) {
            return fail((rq, e));
        }
    }
    // The prompt, rendered and tokenized as `owlet run` and `owlet chat` do.
    let tok = st.model.tokenizer();
    let ids = match prompt::render_chat(&req.turns, true) {
        Ok(segs) => prompt::tokenize_segments(tok, &segs),
        Err(e) => return fail((rq, bad(e.to_string()))),
    };
    let n_img = st.model.config.image_tokens;
    let positions: usize = ids
        .iter()
        .map(|&i| if i == IMAGE_TOKEN_ID { n_img } else { 1 })
        .sum();
    log.tokens_in = positions;
    if positions >= st.n_ctx {
        return fail((
            rq,
            bad(format!(
                "the conversation needs {positions} positions but the context holds {} (leaving room for at least one token)",
                st.n_ctx
            )),
        ));
    }
    let room = st.n_ctx - positions;
    let max_tokens = match req.max_tokens {
        Some(n) if n > room => {
            return fail((
                rq,
                bad(format!(
                    "max_tokens {n} plus the conversation's {positions} positions exceed the context of {}; ask for at most {room}",
                    st.n_ctx
                )),
            ))
        }
        Some(n) => n,
        None => room,
    };
    let opts = GenerateOptions {
        max_tokens,
        sampling: req.sampling.clone(),
        ignore_eos: req.ignore_eos,
    };
    let Some(mut slot) = st.slot(&ids, || rq.peer_gone()) else {
        // The client left while its request waited: it never runs.
        log.stop = "client_gone";
        return Ok(499);
    };
    let session = slot.session();
    let mut embs = Vec::with_capacity(req.images.len());
    for (k, src) in req.images.iter().enumerate() {
        let img = match src.decode(st) {
            Ok(img) => img,
            Err(e) => return fail((rq, e)),
        };
        match session.embed_image(&img, st.mode) {
            Ok(e) => embs.push(e),
            Err(e) => {
                return fail((
                    rq,
                    err(422, "invalid_request_error", format!("image {k}: {e}")),
                ))
            }
        }
    }
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cid = format!("chatcmpl-{id}");
    let chunk = |delta: Value, finish: Value| {
        json!({"id": cid, "object": "chat.completion.chunk", "created": created,
               "model": st.model_id,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let mut rq = Some(rq);
    let mut out: Option<Body<'c>> = None;
    let mut gone = false;
    let mut text = String::new();
    let mut scan = StopScan {
        stop: &req.stop,
        sent: 0,
        hit: None,
    };
    let mut ttft = None;
    let result = {
        let mut on_token = |_id: u32, piece: &str| {
            if ttft.is_none() {
                ttft = Some(t0.elapsed().as_secs_f64() * 1e3);
            }
            text.push_str(piece);
            let (a, b) = scan.release(&text);
            if !req.stream {
                // A whole answer is sent at the end; until then, check that its client waits.
                gone = rq.as_ref().is_none_or(|r| r.peer_gone());
                return !gone && scan.hit.is_none();
            }
            // A stream starts with the first token, once the prompt was accepted.
            if out.is_none() {
                let started = rq.take().map(|rq| {
                    let mut o = rq.start_chunked("text/event-stream")?;
                    event(
                        &mut o,
                        &chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                    )?;
                    Ok::<_, std::io::Error>(o)
                });
                match started {
                    Some(Ok(o)) => out = Some(o),
                    _ => gone = true,
                }
            }
            if let Some(o) = out.as_mut().filter(|_| !gone) {
                gone = o.peer_gone()
                    || (b > a
                        && event(o, &chunk(json!({"content": &text[a..b]}), Value::Null)).is_err());
            }
            !gone && scan.hit.is_none()
        };
        session.chat_conversation(&req.turns, embs, &opts, &mut on_token)
    };
    log.reused = session.reused_positions();
    drop(slot);
    log.ttft_ms = ttft;
    let gen = match result {
        Ok(g) => g,
        Err(e) => {
            let e = match e.kind() {
                owlet::error::ErrorKind::BadPrompt | owlet::error::ErrorKind::InvalidArgument => {
                    bad(e.to_string())
                }
                _ => err(500, "server_error", e.to_string()),
            };
            if let Some(rq) = rq.take() {
                return fail((rq, e));
            }
            // Past the first token of a stream the status is sent: the error goes in the body.
            if let Some(mut o) = out {
                let _ = event(&mut o, &e.body().to_string()).and_then(|_| done(o));
            }
            log.stop = "error";
            return Ok(e.status);
        }
    };
    let eos = gen.stop == StopReason::Eos;
    log.tokens_out = gen.ids.len() - usize::from(eos);
    let finish = if scan.hit.is_some() || eos {
        "stop"
    } else {
        "length"
    };
    log.stop = if gone {
        "client_gone"
    } else if scan.hit.is_some() {
        "stop_sequence"
    } else {
        match gen.stop {
            StopReason::Eos => "eos",
            StopReason::MaxTokens => "max_tokens",
            StopReason::ContextFull => "context_full",
            StopReason::Callback | StopReason::Cancelled => "cancelled",
        }
    };
    let content = match scan.hit {
        Some(p) => &text[..p],
        None => &text[..],
    };
    // `cached_tokens`: the prompt positions taken from the slot's KV cache, as OpenAI counts
    // its prompt caching.
    let usage = json!({"prompt_tokens": positions, "completion_tokens": log.tokens_out,
                       "total_tokens": positions + log.tokens_out,
                       "prompt_tokens_details": {"cached_tokens": log.reused}});
    if gone {
        return Ok(499);
    }
    if req.stream {
        // An answer that ended before its first token (EOS at once) starts here.
        let mut o = match out {
            Some(o) => o,
            None => match rq.take().map(|rq| rq.start_chunked("text/event-stream")) {
                Some(Ok(mut o)) => {
                    let _ = event(
                        &mut o,
                        &chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                    );
                    o
                }
                _ => return Ok(499),
            },
        };
        let rest = &content[scan.sent.min(content.len())..];
        let mut ok =
            rest.is_empty() || event(&mut o, &chunk(json!({"content": rest}), Value::Null)).is_ok();
        ok = ok && event(&mut o, &chunk(json!({}), json!(finish))).is_ok();
        if req.include_usage {
            let u = json!({"id": cid, "object": "chat.completion.chunk", "created": created,
                           "model": st.model_id, "choices": [], "usage": usage});
            ok = ok && event(&mut o, &u.to_string()).is_ok();
        }
        ok = ok && done(o).is_ok();
        return Ok(if ok { 200 } else { 499 });
    }
    let body = json!({
        "id": cid, "object": "chat.completion", "created": created, "model": st.model_id,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": finish}],
        "usage": usage,
    });
    match rq.take() {
        Some(rq) => Ok(respond_json(rq, 200, &body)),
        None => Ok(499),
    }
}

/// `POST /v1/score`: `{"image": URL, "task": "quality"|"aesthetics", "scale": "1-5"|"0-1"}`
/// → `{"score": x, "probs": {"excellent": ..., ...}}`, Q-Align's scorer.
fn score<'c>(st: &'static State, mut rq: Request<'c>, log: &mut Log) -> Routed<'c> {
    let _admission = match st.admit() {
        Ok(a) => a,
        Err(e) => return fail((rq, e)),
    };
    let parsed = read_json(st, &mut rq).and_then(|b| {
        let o = b
            .as_object()
            .ok_or_else(|| bad("the body must be a JSON object"))?;
        let url = match o.get("image") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v
                .get("url")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad("`image` must be a data URL or {\"url\": ...}"))?,
            None => return Err(bad("`image` is missing (a data URL)")),
        };
        let mut img = load_url(st, &url, "image")?;
        img.fetch(st)?;
        let s = |k: &str, d: &str| match o.get(k) {
            None | Some(Value::Null) => Ok(d.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(bad(format!("`{k}` must be a string"))),
        };
        let aspect: Aspect = s("task", "quality")?
            .parse()
            .map_err(|e: owlet::Error| bad(format!("`task`: {e}")))?;
        let scale: Scale = s("scale", "1-5")?
            .parse()
            .map_err(|e: owlet::Error| bad(format!("`scale`: {e}")))?;
        let mut opts = ScoreOptions::task(aspect, Subject::Image);
        opts.scale = scale;
        Ok((img, opts))
    });
    let (img, opts) = match parsed {
        Ok(p) => p,
        Err(e) => return fail((rq, e)),
    };
    let Some(mut slot) = st.slot(&[], || rq.peer_gone()) else {
        log.stop = "client_gone";
        return Ok(499);
    };
    let img = match img.decode(st) {
        Ok(img) => img,
        Err(e) => return fail((rq, e)),
    };
    let result = Scorer::new(slot.session(), opts.clone()).and_then(|mut s| {
        log.tokens_in = s.prompt_ids().len();
        s.score_image(&img)
    });
    drop(slot);
    match result {
        Ok(sc) => {
            let probs: Map<String, Value> = opts
                .levels
                .iter()
                .zip(sc.probs)
                .map(|(w, p)| (w.clone(), json!(p)))
                .collect();
            Ok(respond_json(
                rq,
                200,
                &json!({"object": "score", "model": st.model_id, "score": sc.score, "probs": probs}),
            ))
        }
        Err(e) => {
            let status = match e.kind() {
                owlet::error::ErrorKind::BadImage => 422,
                owlet::error::ErrorKind::BadPrompt | owlet::error::ErrorKind::InvalidArgument => {
                    400
                }
                _ => 500,
            };
            fail((
                rq,
                err(
                    status,
                    if status == 500 {
                        "server_error"
                    } else {
                        "invalid_request_error"
                    },
                    e.to_string(),
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StopScan;

    #[test]
    fn stop_sequences_are_held_back_and_cut() {
        let stop = vec!["END".to_string()];
        let mut s = StopScan {
            stop: &stop,
            sent: 0,
            hit: None,
        };
        let mut text = String::from("hello E");
        assert_eq!(s.release(&text), (0, 5));
        text.push('N');
        assert_eq!(s.release(&text), (5, 6));
        text.push_str("D more");
        assert_eq!(s.release(&text), (6, 6));
        assert_eq!(s.hit, Some(6));
    }
}
