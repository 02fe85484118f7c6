//! The C ABI: opaque model and session handles, integer status codes and a thread-local
//! error message. `include/owlet.h` is generated from this file by cbindgen
//! (`scripts/ci/header.sh`); the doc comments below become the header's comments, so they are
//! written for C callers.
//!
//! Rules every entry point follows:
//! - its body runs inside [`std::panic::catch_unwind`]: a panic never crosses the boundary, it
//!   becomes `OWLET_ERR_PANIC` with the panic message in `owlet_last_error()`;
//! - null pointers and invalid UTF-8 are `OWLET_ERR_INVALID_ARGUMENT`, never a crash;
//! - the thread-local error message is cleared when a call starts and set when it fails.
//!
//! Lifetimes: a model handle owns an `Arc<Model>`; each session clones it, so a model may be
//! freed before its sessions. A session is one `Session<'static>` built over the model that
//! the same handle keeps alive (see [`owlet_session`]). All session state sits behind a mutex,
//! so every function takes the handle by shared reference and `owlet_session_cancel` can run
//! on another thread while `owlet_session_generate` runs, without aliasing a `&mut`.

#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};

use crate::embed_cache::EmbedCache;
use crate::error::{Error, ErrorKind};
use crate::image::{self, ImageLimits};
use crate::kv_cache::KvType;
use crate::model::{CacheStatus, LoadOptions, Model, PackedCache};
use crate::prompt::{self, Role, Turn};
use crate::sampling::SamplingParams;
use crate::score::{Aspect, Scale, ScoreOptions, Scorer, Subject};
use crate::session::{GenerateOptions, Media, Session, SessionOptions, StopReason};

#[cfg(feature = "ffi-panic-test")]
pub mod panic_hook;

/// A status code: `OWLET_OK` (0) or one of the `OWLET_ERR_*` codes (all positive).
pub type owlet_status = i32;

/// Success.
pub const OWLET_OK: owlet_status = 0;
/// A null pointer, invalid UTF-8, an out-of-range parameter, or a session already busy in
/// another call.
pub const OWLET_ERR_INVALID_ARGUMENT: owlet_status = 1;
/// The model file is malformed, foreign or inconsistent, or not a model at all (a directory,
/// or a file of a checkpoint to convert with owlet-convert first).
pub const OWLET_ERR_BAD_MODEL: owlet_status = 2;
/// An image cannot be decoded, is too large, or its buffer description is wrong.
pub const OWLET_ERR_BAD_IMAGE: owlet_status = 3;
/// The prompt cannot be used: too long for the context, images on a text-only model, an
/// image-placeholder count that differs from the images added, or no prompt given.
pub const OWLET_ERR_BAD_PROMPT: owlet_status = 4;
/// Reading a file failed (missing, unreadable), or the model file changed or was truncated
/// since it was loaded: free the model and load it again.
pub const OWLET_ERR_IO: owlet_status = 5;
/// Generation was stopped by `owlet_session_cancel`.
pub const OWLET_ERR_CANCELLED: owlet_status = 6;
/// A bug: an internal invariant failed.
pub const OWLET_ERR_INTERNAL: owlet_status = 7;
/// A bug: owlet panicked inside this call. The process is intact; the session (if any) that
/// was running is unusable and should be freed.
pub const OWLET_ERR_PANIC: owlet_status = 8;

/// KV cache element type: 16-bit floats (default, half the memory).
pub const OWLET_KV_F16: i32 = 0;
/// KV cache element type: 32-bit floats.
pub const OWLET_KV_F32: i32 = 1;

/// `owlet_session_add_image_file_exif`: rotate and flip the pixels as the file's EXIF
/// orientation says (the image as photo viewers show it; what `owlet_session_add_image_file`
/// does).
pub const OWLET_EXIF_APPLY: i32 = 0;

/// `owlet_session_add_image_file_exif`: keep the pixels as stored, ignoring the EXIF
/// orientation, as upstream mPLUG-Owl2's scripts do (upstream-exact inputs).
pub const OWLET_EXIF_IGNORE: i32 = 1;

/// Why `owlet_session_generate` stopped: the model wrote its end-of-sequence token.
pub const OWLET_STOP_EOS: i32 = 0;
/// Why generation stopped: `max_tokens` were generated.
pub const OWLET_STOP_MAX_TOKENS: i32 = 1;
/// Why generation stopped: the context is full.
pub const OWLET_STOP_CONTEXT_FULL: i32 = 2;
/// Why generation stopped: the token callback returned nonzero.
pub const OWLET_STOP_CALLBACK: i32 = 3;
/// Why generation stopped: `owlet_session_cancel` was called.
pub const OWLET_STOP_CANCELLED: i32 = 4;

/// `owlet_model_packed_cache`: no packed-weight cache was asked for, or the CPU's kernel
/// variant repacks nothing (the weights are used as the file stores them).
pub const OWLET_PACKED_CACHE_UNUSED: i32 = 0;
/// `owlet_model_packed_cache`: a valid cache file was mapped; the load packed nothing.
pub const OWLET_PACKED_CACHE_HIT: i32 = 1;
/// `owlet_model_packed_cache`: the weights were packed and the cache file written (it was
/// missing, or stale, damaged or foreign and rebuilt).
pub const OWLET_PACKED_CACHE_WRITTEN: i32 = 2;
/// `owlet_model_packed_cache`: the cache folder or file could not be written; the model
/// loaded without it (packed weights in memory, as `owlet_model_load`).
pub const OWLET_PACKED_CACHE_FAILED: i32 = 3;

/// How to load a model. Get the defaults from `owlet_model_params_default()` and change
/// fields, so that code keeps working when fields are added.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct owlet_model_params {
    /// Worker threads of each session's matmuls; 0 = the default (all cores; the performance
    /// cores on ARM phones).
    pub threads: i32,
    /// `OWLET_KV_F16` or `OWLET_KV_F32`.
    pub kv_type: i32,
    /// Context length of each session; 0 = the model's.
    pub n_ctx: i32,
}

/// How to generate. Get the defaults from `owlet_generate_params_default()` (greedy,
/// 256 tokens).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct owlet_generate_params {
    /// Most new tokens (>= 0).
    pub max_tokens: i32,
    /// 0 = greedy; otherwise softmax temperature.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 disables.
    pub top_k: i32,
    /// Nucleus sampling mass in (0, 1]; 1 disables.
    pub top_p: f32,
    /// Repetition penalty (> 0); 1 disables.
    pub repeat_penalty: f32,
    /// Random seed: the same seed gives the same text on every machine.
    pub seed: u64,
    /// Nonzero: keep going past the end-of-sequence token.
    pub ignore_eos: i32,
}

/// Receives each generated token: its id and its text piece (UTF-8, NUL-terminated, valid
/// only during the call; empty while a multi-byte character is incomplete). Return 0 to go on,
/// nonzero to stop. Called on the thread that called `owlet_session_generate`.
pub type owlet_token_callback =
    Option<unsafe extern "C" fn(user: *mut c_void, id: i32, piece: *const c_char) -> i32>;

/// A loaded model (opaque). Immutable: it may be shared by any number of sessions on any
/// threads.
pub struct owlet_model {
    model: Arc<Model>,
    opts: SessionOptions,
}

/// One conversation over a model (opaque).
///
/// `session` borrows the model that `model` keeps alive: its `'static` lifetime is a promise
/// kept by this struct (the `Arc` is declared after `inner`, so it is dropped after the
/// session, and neither is ever moved out).
pub struct owlet_session {
    cancel: Arc<AtomicBool>,
    inner: Mutex<SessionState>,
    model: Arc<Model>,
}

/// The mutable part of a session.
struct SessionState {
    session: Session<'static>,
    /// Images and videos added since the last turn, one per `<|image|>` placeholder.
    images: Vec<Media>,
    /// The user text given by `owlet_session_prompt`, waiting for `owlet_session_generate`.
    prompt: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Errors and the catch-all wrapper
// ---------------------------------------------------------------------------------------------

thread_local! {
    /// The message of the last failed call on this thread (empty after a successful one).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    // Interior NULs cannot go into a C string: show them escaped.
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn clear_last_error() {
    LAST_ERROR.with(|e| {
        if !e.borrow().is_empty() {
            *e.borrow_mut() = CString::default();
        }
    });
}

fn status_of(kind: ErrorKind) -> owlet_status {
    match kind {
        ErrorKind::InvalidArgument => OWLET_ERR_INVALID_ARGUMENT,
        ErrorKind::BadModel => OWLET_ERR_BAD_MODEL,
        ErrorKind::BadImage => OWLET_ERR_BAD_IMAGE,
        ErrorKind::BadPrompt => OWLET_ERR_BAD_PROMPT,
        ErrorKind::Io => OWLET_ERR_IO,
        ErrorKind::Cancelled => OWLET_ERR_CANCELLED,
        ErrorKind::Internal => OWLET_ERR_INTERNAL,
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidArgument, msg)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Runs one entry point's body: clears the last error, catches panics, and turns the result
/// into a status code (recording the message on failure).
fn guard(name: &str, body: impl FnOnce() -> Result<(), Error>) -> owlet_status {
    clear_last_error();
    // The body only touches state through handles whose mutexes poison on panic, so observing
    // a half-updated value after a caught panic is impossible; AssertUnwindSafe is sound here.
    let r = catch_unwind(AssertUnwindSafe(|| {
        test_panic_point(name);
        body()
    }));
    match r {
        Ok(Ok(())) => OWLET_OK,
        Ok(Err(e)) => {
            set_last_error(e.message());
            status_of(e.kind())
        }
        Err(p) => {
            set_last_error(&format!("internal panic in {name}: {}", panic_message(&*p)));
            OWLET_ERR_PANIC
        }
    }
}

/// With the `ffi-panic-test` feature, panics when the test hook asks for it (so tests can show
/// that no entry point lets a panic escape); otherwise nothing.
#[inline]
fn test_panic_point(name: &str) {
    #[cfg(feature = "ffi-panic-test")]
    panic_hook::maybe_panic(name);
    #[cfg(not(feature = "ffi-panic-test"))]
    let _ = name;
}

// ---------------------------------------------------------------------------------------------
// Argument helpers
// ---------------------------------------------------------------------------------------------

/// A borrowed C string as UTF-8.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string valid for the call.
unsafe fn utf8_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-null, and the caller promises a NUL-terminated string alive for the call.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str()
        .map_err(|e| invalid(format!("{what} is not valid UTF-8 ({e})")))
}

/// A handle reference, or an error naming the argument.
///
/// # Safety
/// `p` is null or a live handle created by this library and not yet freed.
unsafe fn handle<'a, T>(p: *const T, what: &str) -> Result<&'a T, Error> {
    // SAFETY: the caller promises a live handle (or null, which `as_ref` maps to None).
    unsafe { p.as_ref() }.ok_or_else(|| invalid(format!("{what} is NULL")))
}

/// Writes `v` through an out-pointer that was checked to be non-null.
fn check_out<T>(p: *mut T, what: &str) -> Result<(), Error> {
    if p.is_null() {
        Err(invalid(format!("{what} (output pointer) is NULL")))
    } else {
        Ok(())
    }
}

fn session_options(p: &owlet_model_params) -> Result<SessionOptions, Error> {
    let mut o = SessionOptions::default();
    if p.threads < 0 {
        return Err(invalid(format!("threads must be >= 0 (got {})", p.threads)));
    }
    if p.threads > 0 {
        o.threads = p.threads as usize;
    }
    o.kv_type = match p.kv_type {
        OWLET_KV_F16 => KvType::F16,
        OWLET_KV_F32 => KvType::F32,
        k => {
            return Err(invalid(format!(
                "kv_type must be OWLET_KV_F16 or OWLET_KV_F32 (got {k})"
            )))
        }
    };
    o.n_ctx = match p.n_ctx {
        0 => None,
        n if n > 0 => Some(n as usize),
        n => return Err(invalid(format!("n_ctx must be >= 0 (got {n})"))),
    };
    Ok(o)
}

fn generate_options(p: &owlet_generate_params) -> Result<GenerateOptions, Error> {
    if p.max_tokens < 0 {
        return Err(invalid(format!(
            "max_tokens must be >= 0 (got {})",
            p.max_tokens
        )));
    }
    if p.top_k < 0 {
        return Err(invalid(format!("top_k must be >= 0 (got {})", p.top_k)));
    }
    let sampling = SamplingParams {
        temperature: p.temperature,
        top_k: p.top_k as usize,
        top_p: p.top_p,
        repeat_penalty: p.repeat_penalty,
        seed: p.seed,
    };
    sampling.validate().map_err(invalid)?;
    Ok(GenerateOptions {
        max_tokens: p.max_tokens as usize,
        sampling,
        ignore_eos: p.ignore_eos != 0,
    })
}

/// The bytes of a caller's pixel buffer: `stride * (height - 1) + width * bpp`.
///
/// # Safety
/// `data` is null or points to at least that many readable bytes.
unsafe fn pixel_buffer<'a>(
    data: *const u8,
    width: u32,
    height: u32,
    stride: usize,
    bpp: usize,
) -> Result<&'a [u8], Error> {
    if data.is_null() {
        return Err(invalid("pixel data is NULL"));
    }
    let bad = |m: String| Error::new(ErrorKind::BadImage, m);
    if width == 0 || height == 0 {
        return Err(bad(format!("image has zero size ({width}x{height})")));
    }
    let row = (width as usize)
        .checked_mul(bpp)
        .ok_or_else(|| bad("image row is too large".into()))?;
    if stride < row {
        return Err(bad(format!(
            "stride {stride} is smaller than a row of {width} pixels ({row} bytes)"
        )));
    }
    let len = stride
        .checked_mul(height as usize - 1)
        .and_then(|n| n.checked_add(row))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| {
            bad(format!(
                "image of {width}x{height} with stride {stride} is too large"
            ))
        })?;
    // SAFETY: non-null; the caller promises `len` readable bytes (the documented buffer size);
    // `len` fits in isize as from_raw_parts requires.
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

impl owlet_session {
    /// Locks the session state; a second concurrent call (or a call from inside the token
    /// callback) is refused rather than deadlocking.
    fn state(&self) -> Result<std::sync::MutexGuard<'_, SessionState>, Error> {
        match self.inner.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::WouldBlock) => Err(invalid(
                "the session is busy in another call (sessions are not reentrant)",
            )),
            Err(TryLockError::Poisoned(_)) => Err(Error::new(
                ErrorKind::Internal,
                "the session is unusable after an internal panic; free it",
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Library
// ---------------------------------------------------------------------------------------------

/// The library version, e.g. "0.1.0" (static string). Thread-safe.
#[no_mangle]
pub extern "C" fn owlet_version() -> *const c_char {
    static VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"",
        };
    let mut out = c"".as_ptr();
    guard("owlet_version", || {
        out = VERSION.as_ptr();
        Ok(())
    });
    out
}

/// The message of the last failed call on this thread ("" if the last call succeeded). Never
/// NULL. Valid until the next owlet call on the same thread. Thread-safe (per-thread state).
#[no_mangle]
pub extern "C" fn owlet_last_error() -> *const c_char {
    let r = catch_unwind(|| {
        test_panic_point("owlet_last_error");
        LAST_ERROR.with(|e| e.borrow().as_ptr())
    });
    r.unwrap_or(c"internal panic in owlet_last_error".as_ptr())
}

/// Default model parameters: all cores, f16 KV cache, the model's context length.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn owlet_model_params_default() -> owlet_model_params {
    guard("owlet_model_params_default", || Ok(()));
    default_model_params()
}

fn default_model_params() -> owlet_model_params {
    owlet_model_params {
        threads: 0,
        kv_type: OWLET_KV_F16,
        n_ctx: 0,
    }
}

/// Default generation parameters: greedy, 256 tokens, no penalty, seed 0. Thread-safe.
#[no_mangle]
pub extern "C" fn owlet_generate_params_default() -> owlet_generate_params {
    guard("owlet_generate_params_default", || Ok(()));
    default_generate_params()
}

fn default_generate_params() -> owlet_generate_params {
    let d = GenerateOptions::default();
    owlet_generate_params {
        max_tokens: i32::try_from(d.max_tokens).unwrap_or(i32::MAX),
        temperature: d.sampling.temperature,
        top_k: i32::try_from(d.sampling.top_k).unwrap_or(0),
        top_p: d.sampling.top_p,
        repeat_penalty: d.sampling.repeat_penalty,
        seed: d.sampling.seed,
        ignore_eos: 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// Memory-maps and validates a GGUF model. `params` may be NULL for the defaults. On success
/// `*out` is a new handle to free with `owlet_model_free`; on failure `*out` is set to NULL.
/// Thread-safe.
///
/// The weights are read from the mapped file for as long as the model is loaded, so the file
/// must not be modified, truncated or rewritten in place until `owlet_model_free` (replacing
/// it by renaming another file over it is safe). Every call that computes checks the file's
/// length and modification time first and fails with OWLET_ERR_IO if they changed; a file
/// truncated while a call is reading it raises SIGBUS, which the app must prevent (keep the
/// model where nothing else writes it, e.g. copied into app-private storage) or handle.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `params` is NULL or points to an
/// `owlet_model_params`; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn owlet_model_load(
    path: *const c_char,
    params: *const owlet_model_params,
    out: *mut *mut owlet_model,
) -> owlet_status {
    // SAFETY: the caller's contract, which is `owlet_model_load_cached`'s with no cache folder.
    guard("owlet_model_load", || unsafe {
        load_model_into(path, std::ptr::null(), params, out)
    })
}

/// `owlet_model_load` with a packed-weight cache in the folder `cache_dir` (created if
/// missing; UTF-8; NULL = no cache, exactly `owlet_model_load`). Where the CPU's kernel
/// variant repacks weights at load (ARM with dot product or i8mm, AVX-512), the first load
/// writes the packed weights to a file in that folder and later loads map it read-only: the
/// load packs nothing and the packed weights are file pages the OS can drop and share between
/// processes, instead of anonymous memory. A cache file that is stale (the model changed),
/// truncated, damaged or made for another CPU variant or owlet version is detected and
/// rebuilt, never trusted. A cache that cannot be used does not fail the load: the model loads
/// as with `owlet_model_load` and `owlet_model_packed_cache` says OWLET_PACKED_CACHE_FAILED
/// (pass the app's private cache folder, e.g. Android `getCacheDir()`, iOS `Library/Caches`).
/// Same file contract as `owlet_model_load`; cache files must not be modified either. Several
/// processes may share a folder. Thread-safe.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `cache_dir` is NULL or a NUL-terminated string;
/// `params` is NULL or points to an `owlet_model_params`; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn owlet_model_load_cached(
    path: *const c_char,
    cache_dir: *const c_char,
    params: *const owlet_model_params,
    out: *mut *mut owlet_model,
) -> owlet_status {
    // SAFETY: the caller's contract, as documented above.
    guard("owlet_model_load_cached", || unsafe {
        load_model_into(path, cache_dir, params, out)
    })
}

/// The body of `owlet_model_load` and `owlet_model_load_cached` (`cache_dir` NULL = no cache):
/// checks the arguments, loads the model and hands out its handle.
///
/// # Safety
/// As `owlet_model_load_cached`.
unsafe fn load_model_into(
    path: *const c_char,
    cache_dir: *const c_char,
    params: *const owlet_model_params,
    out: *mut *mut owlet_model,
) -> Result<(), Error> {
    check_out(out, "out")?;
    // SAFETY: checked non-null; the caller promises it is writable.
    unsafe { *out = std::ptr::null_mut() };
    // SAFETY: the caller's contract for `path`.
    let path = unsafe { utf8_arg(path, "path") }?;
    let packed_cache = if cache_dir.is_null() {
        PackedCache::Off
    } else {
        // SAFETY: the caller's contract for `cache_dir`.
        let d = unsafe { utf8_arg(cache_dir, "cache_dir") }?;
        if d.is_empty() {
            return Err(invalid("cache_dir is empty (pass NULL for no cache)"));
        }
        PackedCache::Dir(d.into())
    };
    // SAFETY: the caller promises `params` is NULL or valid.
    let p = unsafe { params.as_ref() }
        .copied()
        .unwrap_or_else(default_model_params);
    let opts = session_options(&p)?;
    let model = Model::load_with_options(
        Path::new(path),
        &LoadOptions {
            kernels: None,
            packed_cache,
        },
    )?;
    let h = Box::new(owlet_model {
        model: Arc::new(model),
        opts,
    });
    // SAFETY: checked non-null above.
    unsafe { *out = Box::into_raw(h) };
    Ok(())
}

/// What the model's load did with its packed-weight cache: one of the
/// `OWLET_PACKED_CACHE_*` values; -1 if `model` is NULL. Thread-safe.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn owlet_model_packed_cache(model: *const owlet_model) -> i32 {
    let mut out = -1;
    guard("owlet_model_packed_cache", || {
        // SAFETY: the caller's contract.
        let m = unsafe { handle(model, "model") }?;
        out = match m.model.load_report().cache {
            CacheStatus::Unused => OWLET_PACKED_CACHE_UNUSED,
            CacheStatus::Hit => OWLET_PACKED_CACHE_HIT,
            CacheStatus::Written => OWLET_PACKED_CACHE_WRITTEN,
            CacheStatus::Failed => OWLET_PACKED_CACHE_FAILED,
        };
        Ok(())
    });
    out
}

/// The kernel variant the model uses ("generic", "avx2", "neon", "neon-dotprod", ...;
/// static string). NULL if `model` is NULL. Thread-safe.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn owlet_model_kernels(model: *const owlet_model) -> *const c_char {
    let mut out: *const c_char = std::ptr::null();
    guard("owlet_model_kernels", || {
        // SAFETY: the caller's contract.
        let m = unsafe { handle(model, "model") }?;
        // Kernel names are short static ASCII; keep one C copy per name for the process.
        static NAMES: Mutex<Vec<CString>> = Mutex::new(Vec::new());
        let name = m.model.kernels().name;
        let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = names.iter().find(|c| c.to_bytes() == name.as_bytes()) {
            out = c.as_ptr();
        } else {
            let c =
                CString::new(name).map_err(|_| Error::new(ErrorKind::Internal, "kernel name"))?;
            // The CString's heap buffer does not move when the Vec grows.
            out = c.as_ptr();
            names.push(c);
        }
        Ok(())
    });
    out
}

/// Frees a model handle. Sessions created from it stay valid (they keep the model alive).
/// NULL is ignored. Not to be called twice on the same handle.
///
/// # Safety
/// `model` is NULL or a live handle from `owlet_model_load`, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn owlet_model_free(model: *mut owlet_model) {
    guard("owlet_model_free", || {
        if !model.is_null() {
            // SAFETY: the caller hands back ownership of a handle made by Box::into_raw.
            drop(unsafe { Box::from_raw(model) });
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------------------------

/// Creates a conversation over `model` with the model's load parameters (threads, KV type,
/// context). `*out` gets a handle to free with `owlet_session_free` (NULL on failure).
/// Thread-safe: any number of sessions may run at once on one model.
///
/// # Safety
/// `model` is NULL or a live handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn owlet_session_new(
    model: *const owlet_model,
    out: *mut *mut owlet_session,
) -> owlet_status {
    guard("owlet_session_new", || {
        check_out(out, "out")?;
        // SAFETY: checked non-null; the caller promises it is writable.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: the caller's contract.
        let m = unsafe { handle(model, "model") }?;
        let model = Arc::clone(&m.model);
        // SAFETY: the Model lives in the Arc's heap allocation, which does not move and is not
        // freed while `owlet_session::model` holds a reference count. The session that borrows
        // it is stored in the same struct, declared before `model`, so it is dropped first, and
        // the `'static` reference never leaves the struct (SessionState is private).
        let model_ref: &'static Model = unsafe { &*Arc::as_ptr(&model) };
        let session = Session::new(model_ref, m.opts.clone())?;
        let h = Box::new(owlet_session {
            cancel: session.cancel_handle(),
            inner: Mutex::new(SessionState {
                session,
                images: Vec::new(),
                prompt: None,
            }),
            model,
        });
        // SAFETY: checked non-null above.
        unsafe { *out = Box::into_raw(h) };
        Ok(())
    })
}

/// Adds an image (JPEG or PNG file) to the next user turn. The file is decoded now (size
/// limits: 16384 px per side, 64 Mpx, 256 MiB; its EXIF orientation applied, see
/// `owlet_session_add_image_file_exif` for the alternative); it is encoded by the next
/// `owlet_session_generate`. Not thread-safe per session (a concurrent call on the same session
/// fails with OWLET_ERR_INVALID_ARGUMENT).
///
/// # Safety
/// `session` is NULL or a live handle; `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn owlet_session_add_image_file(
    session: *const owlet_session,
    path: *const c_char,
) -> owlet_status {
    guard("owlet_session_add_image_file", || {
        // SAFETY: the caller's contract.
        let s = unsafe { handle(session, "session") }?;
        // SAFETY: the caller's contract.
        let path = unsafe { utf8_arg(path, "path") }?;
        let mut st = s.state()?;
        check_vision(&s.model)?;
        let img = image::load(Path::new(path), &ImageLimits::default())?;
        st.images.push(Media::Image(img));
        Ok(())
    })
}

/// `owlet_session_add_image_file` with a choice of EXIF orientation handling: `exif` is
/// `OWLET_EXIF_APPLY` or `OWLET_EXIF_IGNORE` (anything else is OWLET_ERR_INVALID_ARGUMENT).
/// Same limits and threading rule as `owlet_session_add_image_file`.
///
/// # Safety
/// `session` is NULL or a live handle; `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn owlet_session_add_image_file_exif(
    session: *const owlet_session,
    path: *const c_char,
    exif: i32,
) -> owlet_status {
    guard("owlet_session_add_image_file_exif", || {
        let exif = match exif {
            OWLET_EXIF_APPLY => image::ExifOrientation::Apply,
            OWLET_EXIF_IGNORE => image::ExifOrientation::Ignore,
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "exif is {other}: expected OWLET_EXIF_APPLY (0) or OWLET_EXIF_IGNORE (1)"
                    ),
                ))
            }
        };
        // SAFETY: the caller's contract.
        let s = unsafe { handle(session, "session") }?;
        // SAFETY: the caller's contract.
        let path = unsafe { utf8_arg(path, "path") }?;
        let mut st = s.state()?;
        check_vision(&s.model)?;
        let img = image::load_with(Path::new(path), &ImageLimits::default(), exif)?;
        st.images.push(Media::Image(img));
        Ok(())
    })
}

/// Adds an image from 8-bit RGB pixels (rows top to bottom, `stride` bytes apart,
/// `stride >= width * 3`; the buffer holds `stride * (height - 1) + width * 3` bytes). The
/// pixels are copied. Same threading rule as `owlet_session_add_image_file`.
///
/// # Safety
/// `session` is NULL or a live handle; `data` is NULL or points to that many readable bytes.
#[no_mangle]
pub unsafe extern "C" fn owlet_session_add_image_rgb(
    session: *const owlet_session,
    data: *const u8,
    width: u32,
    height: u32,
    stride: usize,
) -> owlet_status {
    guard("owlet_session_add_image_rgb", || {
        // SAFETY: the caller's contract.
        let s = unsafe { handle(session, "session") }?;
        // SAFETY: the caller's contract for `data`.
        let buf = unsafe { pixel_buffer(data, width, height, stride, 3) }?;
        let mut st = s.state()?;
        check_vision(&s.model)?;
        let row = width as usize * 3;
        let mut packed = Vec::with_capacity(row * height as usize);
        for y in 0..height as usize {
            packed.extend_from_slice(&buf[y * stride..y * stride + row]);
        }
        st.images
            .push(Media::Image(image::from_rgb(width, height, &packed)?));
        Ok(())
    })
}

/// Adds an image from 8-bit RGBA pixels (alpha is dropped, not blended; rows `stride` bytes
/// apart, `stride >= width * 4`; the buffer holds `stride * (height - 1) + width * 4` bytes).
/// Same threading rule as `owlet_session_add_image_file`.
///
/// # Safety
/// `session` is NULL or a live handle; `data` is NULL or points to that many readable bytes.
#[no_mangle]
pub unsafe extern "C" fn owlet_session_add_image_rgba(
    session: *const owlet_session,
    data: *const u8,
    width: u32,
    height: u32,
    stride: usize,
) -> owlet_status {
    guard("owlet_session_add_image_rgba", || {
        // SAFETY: the caller's contract.
        let s = unsafe { handle(session, "session") }?;
        // SAFETY: the caller's contract for `data`.
        let buf = unsafe { pixel_buffer(data, width, height, stride, 4) }?;
        let mut st = s.state()?;
        check_vision(&s.model)?;
        st.images
            .push(Media::Image(image::from_rgba(width, height, stride, buf)?));
        Ok(())
    })
}

/// One video frame: 8-bit RGB pixels, rows top to bottom `stride` bytes apart (`stride` 0
/// means `width * 3`, tightly packed).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct owlet_frame {
    pub rgb: *const u8,
    pub width: u32,
    pub height: u32,
    pub stride: usize,
}

/// Adds a video as `n_frames` frames in order (already sampled: see
/// `owlet_video_frame_indices` for the frames Q-Align samples, one per second). Like an
/// image it fills one `<|image|>` placeholder of the next turn: each frame is encoded like an
/// image and the frames' embeddings are concatenated in that one slot, as mPLUG-Owl2 and
/// Q-Align feed a video, so the turn takes `n_frames` times an image's positions. The pixels
/// are copied. A turn whose frames do not fit the context fails in `owlet_session_generate` /
/// `owlet_session_score` with OWLET_ERR_BAD_PROMPT naming the frame count. Same threading
/// rule as `owlet_session_add_image_file`.
///
/// # Safety
/// `session` is NULL or a live handle; `frames` is NULL or points to `n_frames` readable
/// `owlet_frame`s, each of whose `rgb` is NULL or points to
/// `stride * (height - 1) + width * 3` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn owlet_session_add_video_rgb(
    session: *const owlet_session,
    frames: *const owlet_frame,
    n_frames: usize,
) -> owlet_status {
    guard("owlet_session_add_video_rgb", || {
        // SAFETY: the caller's contract.
        let s = unsafe { handle(session, "session") }?;
        if frames.is_null() {
            return Err(invalid("frames is NULL"));
        }
        if n_frames == 0 {
            return Err(Error::new(
                ErrorKind::BadImage,
                "the video has no frames (n_frames is 0)",
            ));
        }
        if n_frames > isize::MAX as usize / std::mem::size_of::<owlet_frame>() {
            return Err(invalid(format!("n_frames {n_frames} is too large")));
        }
        // SAFETY: non-null; the caller promises `n_frames` readable frames; the size fits isize.
        let list = unsafe { std::slice::from_raw_parts(frames, n_frames) };
        let mut st = s.state()?;
        check_vision(&s.model)?;
        let mut video = Vec::with_capacity(n_frames);
        for (i, f) in list.iter().enumerate() {
            let name = |e: Error| {
                Error::new(
                    e.kind(),
                    format!("frame {i} of {n_frames}: {}", e.message()),
                )
            };
            let stride = if f.stride == 0 {
                (f.width as usize).saturating_mul(3)
            } else {
                f.stride
            };
            // SAFETY: the caller's contract for each frame's `rgb`.
            let buf = unsafe { pixel_buffer(f.rgb, f.width, f.height, stride, 3) }.map_err(name)?;
            let row = f.width as usize * 3;
            let mut packed = Vec::new();
            if packed.try_reserve_exact(row * f.height as usize).is_err() {
                return Err(Error::new(
                    ErrorKind::BadImage,
                    format!("out of memory copying frame {i} of the video's {n_frames}"),
                ));
            }
            for y in 0..f.height as usize {
                packed.extend_from_slice(&buf[y * stride..y * stride + row]);
            }
            video.push(image::from_rgb(f.width, f.height, &packed).map_err(name)?);
        }
        st.images.push(Media::Video(video));
        Ok(())
    })
}

/// The frames Q-Align samples from a video of `n_frames` frames at `fps` frames per second:
/// `(int)(step * i)` for `i` below `(int)(n_frames / step)`, `step = fps / rate` (`rate`: frames
/// kept per second; Q-Align's is 1; a rate above `fps` keeps every frame), then at most
/// `max_frames` of them chosen evenly (0: no cap). A clip shorter than one step keeps frame 0.
/// Writes up to `capacity` indices to `out` (which may be NULL when `capacity` is 0) and the
/// full count to `*n_out`, so a first call with `capacity` 0 sizes the buffer. Thread-safe.
///
/// # Safety
/// `out` is NULL or points to `capacity` writable `size_t`; `n_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn owlet_video_frame_indices(
    n_frames: usize,
    fps: f64,
    rate: f64,
    max_frames: usize,
    out: *mut usize,
    capacity: usize,
    n_out: *mut usize,
) -> owlet_status {
    guard("owlet_video_frame_indices", || {
        check_out(n_out, "n_out")?;
        if out.is_null() && capacity > 0 {
            return Err(invalid("out is NULL but capacity is not 0"));
        }
        let sampling = crate::video::Sampling {
            rate,
            max_frames: (max_frames > 0).then_some(max_frames),
        };
        let idx = crate::video::sample(n_frames, fps, &sampling)?;
        let k = idx.len().min(capacity);
        if k > 0 {
            // SAFETY: non-null (checked when capacity > 0); the caller promises `capacity`
            // writable elements and `k <= capacity`.
            unsafe { std::ptr::copy_nonoverlapping(idx.as_ptr(), out, k) };
        }
        // SAFETY: checked non-null; the caller promises it is writable.
        unsafe { *n_out = idx.len() };
        Ok(())
    })
}

fn check_vision(m: &Model) -> Result<(), Error> {
    if m.has_vision() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::BadPrompt,
            "this model is text-only: it cannot take images",
        ))
    }
}

/// Sets the next user turn's text (UTF-8). The images added since the last turn go in front
/// of it, or where the text has `<|image|>` placeholders (their count must equal the images').
/// The turn is run by the next `owlet_session_generate`; calling this again replaces the text.
/// Same threading rule as `owlet_session_add_image_file`.
///
/// # Safety
/// `session` is NULL or a live handle; `utf8` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn owlet_session_prompt(
    session: *const owlet_session,
    utf8: *const c_char,
) -> owlet_status {
    guard("owlet_session_prompt", || {
        // SAFETY: the caller's contract.
        let s = unsafe { handle(session, "session") }?;
        // SAFETY: the caller's contract.
        let text = unsafe { utf8_arg(utf8, "prompt") }?;
        let mut st = s.state()?;
        // Check the placeholders now, so the error comes from the call that caused it.
        let turn = Turn {
            role: Role::User,
            text: text.to_string(),
            images: st.images.len(),
        };
        prompt::render_chat(std::slice::from_ref(&turn), true)?;
        st.prompt = Some(text.to_string());
        Ok(())
    })
}

/// Runs the pending user turn (`owlet_session_prompt` plus the images added since the last
/// turn) and generates the answer, calling `callback(user, id, piece)` for each token (the
/// end-of-sequence token is not passed). `params` may be NULL for the defaults; `callback` may
/// be NULL; `stop_reason` may be NULL, else it receives an `OWLET_STOP_*` value. The answer
/// joins the conversation, so the next turn continues it (the KV cache is reused).
/// Returns OWLET_ERR_CANCELLED if `owlet_session_cancel` stopped it (the partial answer is
/// kept). Same threading rule as `owlet_session_add_image_file`; the callback runs on this
/// thread and must not call functions on this session except `owlet_session_cancel`.
///
/// # Safety
/// `session` is NULL or a live handle; `params` NULL or valid; `stop_reason` NULL or
/// writable; `callback` NULL or a function safe to call with `user`.
#[no_mangle]
pub unsafe extern "C" fn owlet_session_generate(
    session: *const owlet_session,
    params: *const owlet_generate_params,
    callback: owlet_token_callback,
    user: *mut c_void,
    stop_reason: *mut i32,
) -> owlet_status {
    guard("owlet_session_generate", || {
        // SAFETY: the caller's contract.
        let s = unsafe { handle(session, "session") }?;
        // SAFETY: the caller promises `params` is NULL or valid.
        let p = unsafe { params.as_ref() }
            .copied()
            .unwrap_or_else(default_generate_params);
        let opts = generate_options(&p)?;
        let mut guard = s.state()?;
        let st = &mut *guard;
        let Some(text) = st.prompt.clone() else {
            return Err(Error::new(
                ErrorKind::BadPrompt,
                "no prompt: call owlet_session_prompt before owlet_session_generate",
            ));
        };
        let mut on_token = |id: u32, piece: &str| -> bool {
            let Some(cb) = callback else { return true };
            // A NUL byte (a byte-fallback token) cannot go into a C string: drop it.
            let c = CString::new(piece.replace('\0', "")).unwrap_or_default();
            // SAFETY: the caller promises `cb` may be called with `user`; `c` outlives the call.
            let r = unsafe { cb(user, id as i32, c.as_ptr()) };
            r == 0
        };
        let images = std::mem::take(&mut st.images);
        let result = st
            .session
            .chat_media(&text, &images, None, &opts, &mut on_token);
        let g = match result {
            Ok(g) => g,
            Err(e) => {
                // Keep the turn's inputs so the caller can fix the options and retry.
                st.images = images;
                return Err(e);
            }
        };
        st.prompt = None;
        let reason = match g.stop {
            StopReason::Eos => OWLET_STOP_EOS,
            StopReason::MaxTokens => OWLET_STOP_MAX_TOKENS,
            StopReason::ContextFull => OWLET_STOP_CONTEXT_FULL,
            StopReason::Callback => OWLET_STOP_CALLBACK,
            StopReason::Cancelled => OWLET_STOP_CANCELLED,
        };
        if !stop_reason.is_null() {
            // SAFETY: non-null and the caller promises it is writable.
            unsafe { *stop_reason = reason };
        }
        if g.stop == StopReason::Cancelled {
            return Err(Error::new(ErrorKind::Cancelled, "generation was cancelled"));
        }
        Ok(())
    })
}

/// Asks a running `owlet_session_generate` on this session to stop before its next token.
/// Thread-safe: meant to be called from another thread (or from the token callback). A cancel
/// that arrives when no generation runs is forgotten when the next one starts.
///
/// # Safety
/// `session` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn owlet_session_cancel(session: *const owlet_session) -> owlet_status {
    guard("owlet_session_cancel", || {
        // SAFETY: the caller's contract. Only the atomic flag is touched, never the mutex.
        let s = unsafe { handle(session, "session") }?;
        s.cancel.store(true, Ordering::Relaxed);
        Ok(())
    })
}

/// Forgets the conversation: history, KV cache, pending prompt and images. Same threading rule
/// as `owlet_session_add_image_file`.
///
/// # Safety
/// `session` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn owlet_session_reset(session: *const owlet_session) -> owlet_status {
    guard("owlet_session_reset", || {
        // SAFETY: the caller's contract.
        let s = unsafe { handle(session, "session") }?;
        let mut st = s.state()?;
        st.session.reset();
        st.images.clear();
        st.prompt = None;
        Ok(())
    })
}

/// Frees a session. NULL is ignored. Must not run while another thread uses the session.
///
/// # Safety
/// `session` is NULL or a live handle from `owlet_session_new`, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn owlet_session_free(session: *mut owlet_session) {
    guard("owlet_session_free", || {
        if !session.is_null() {
            // SAFETY: the caller hands back ownership of a handle made by Box::into_raw.
            drop(unsafe { Box::from_raw(session) });
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Scoring (Q-Align)
// ---------------------------------------------------------------------------------------------

/// Score task: rate quality ("How would you rate the quality of this image?").
pub const OWLET_SCORE_QUALITY: i32 = 0;
/// Score task: rate aesthetics.
pub const OWLET_SCORE_AESTHETICS: i32 = 1;
/// The prompt calls the input an image.
pub const OWLET_SCORE_IMAGE: i32 = 0;
/// The prompt calls the input a video.
pub const OWLET_SCORE_VIDEO: i32 = 1;
/// Score range 1..5 (level weights 5, 4, 3, 2, 1).
pub const OWLET_SCALE_1_5: i32 = 0;
/// Score range 0..1 (level weights 1, 0.75, 0.5, 0.25, 0).
pub const OWLET_SCALE_0_1: i32 = 1;

/// How to score. Get the defaults from `owlet_score_params_default()` (image quality, 1..5,
/// Q-Align's prompt and level words).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct owlet_score_params {
    /// `OWLET_SCORE_QUALITY` or `OWLET_SCORE_AESTHETICS`.
    pub task: i32,
    /// `OWLET_SCORE_IMAGE` or `OWLET_SCORE_VIDEO`: the word the prompt uses.
    pub subject: i32,
    /// `OWLET_SCALE_1_5` or `OWLET_SCALE_0_1`.
    pub scale: i32,
    /// NULL, or a raw prompt (UTF-8, no chat template) with exactly one `<|image|>`, used
    /// instead of the task's (for other fine-tunes).
    pub prompt: *const c_char,
    /// NULL, or an array of five level words (UTF-8), best first, used instead of
    /// "excellent", "good", "fair", "poor", "bad".
    pub levels: *const *const c_char,
}

/// Default scoring parameters: image quality on 1..5 with Q-Align's prompt and level words.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn owlet_score_params_default() -> owlet_score_params {
    guard("owlet_score_params_default", || Ok(()));
    default_score_params()
}

fn default_score_params() -> owlet_score_params {
    owlet_score_params {
        task: OWLET_SCORE_QUALITY,
        subject: OWLET_SCORE_IMAGE,
        scale: OWLET_SCALE_1_5,
        prompt: std::ptr::null(),
        levels: std::ptr::null(),
    }
}

/// The library's options for C parameters.
///
/// # Safety
/// `p.prompt` is NULL or a NUL-terminated string; `p.levels` is NULL or points to five
/// pointers, each NULL or a NUL-terminated string.
unsafe fn score_options(p: &owlet_score_params) -> Result<ScoreOptions, Error> {
    let aspect = match p.task {
        OWLET_SCORE_QUALITY => Aspect::Quality,
        OWLET_SCORE_AESTHETICS => Aspect::Aesthetics,
        t => {
            return Err(invalid(format!(
                "score task must be OWLET_SCORE_QUALITY or OWLET_SCORE_AESTHETICS (got {t})"
            )))
        }
    };
    let subject = match p.subject {
        OWLET_SCORE_IMAGE => Subject::Image,
        OWLET_SCORE_VIDEO => Subject::Video,
        t => {
            return Err(invalid(format!(
                "score subject must be OWLET_SCORE_IMAGE or OWLET_SCORE_VIDEO (got {t})"
            )))
        }
    };
    let mut o = ScoreOptions::task(aspect, subject);
    o.scale = match p.scale {
        OWLET_SCALE_1_5 => Scale::OneToFive,
        OWLET_SCALE_0_1 => Scale::ZeroToOne,
        t => {
            return Err(invalid(format!(
                "score scale must be OWLET_SCALE_1_5 or OWLET_SCALE_0_1 (got {t})"
            )))
        }
    };
    if !p.prompt.is_null() {
        // SAFETY: the caller's contract for `prompt`.
        o.prompt = unsafe { utf8_arg(p.prompt, "score prompt") }?.to_string();
    }
    if !p.levels.is_null() {
        for (i, level) in o.levels.iter_mut().enumerate() {
            // SAFETY: the caller promises five readable pointers at `levels`.
            let w = unsafe { *p.levels.add(i) };
            // SAFETY: the caller's contract for each level word.
            *level = unsafe { utf8_arg(w, &format!("level word {i}")) }?.to_string();
        }
    }
    Ok(o)
}

/// Scores the image added since the last turn (`owlet_session_add_image_*`; exactly one) or
/// the video (`owlet_session_add_video_rgb`, with `params.subject = OWLET_SCORE_VIDEO` for
/// Q-Align's video prompt: its frames fill the one slot) the way Q-Align does: the image (each
/// frame) is padded to a square with the processor's mean colour, the prompt is run, and the
/// softmax over the five level words' logits at its last position gives `*score` (their
/// expectation) and, if `probs` is not NULL, the five probabilities (best level first; `probs`
/// holds 5 doubles). `params` may be NULL for the defaults. On success the image is consumed; the prompt's text before the image stays in the KV cache, so scoring many
/// images one after the other computes it once. The session's conversation is left alone but
/// its next turn recomputes its prompt. Same threading rule as `owlet_session_add_image_file`.
///
/// # Safety
/// `session` is NULL or a live handle; `params` NULL or valid (see `owlet_score_params`);
/// `score` NULL or writable; `probs` NULL or 5 writable doubles.
#[no_mangle]
pub unsafe extern "C" fn owlet_session_score(
    session: *const owlet_session,
    params: *const owlet_score_params,
    score: *mut f64,
    probs: *mut f64,
) -> owlet_status {
    guard("owlet_session_score", || {
        check_out(score, "score")?;
        // SAFETY: the caller's contract.
        let s = unsafe { handle(session, "session") }?;
        // SAFETY: the caller promises `params` is NULL or valid.
        let p = unsafe { params.as_ref() }
            .copied()
            .unwrap_or_else(default_score_params);
        // SAFETY: the caller's contract for the strings `params` points to.
        let opts = unsafe { score_options(&p) }?;
        let mut guard = s.state()?;
        let st = &mut *guard;
        if st.images.len() != 1 {
            return Err(Error::new(
                ErrorKind::BadPrompt,
                format!(
                    "owlet_session_score takes exactly one image or video ({} added since the last turn)",
                    st.images.len()
                ),
            ));
        }
        let mut scorer = Scorer::new(&mut st.session, opts)?;
        let r = match &st.images[0] {
            Media::Image(img) => scorer.score_image(img)?,
            Media::Video(frames) => scorer.score_video(frames)?,
        };
        st.images.clear();
        // SAFETY: checked non-null above; the caller promises it is writable.
        unsafe { *score = r.score };
        if !probs.is_null() {
            // SAFETY: non-null; the caller promises 5 writable doubles.
            unsafe { std::ptr::copy_nonoverlapping(r.probs.as_ptr(), probs, 5) };
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Image-embedding cache
// ---------------------------------------------------------------------------------------------

/// Makes the session keep image embeddings in the folder `dir` (created if missing; UTF-8), so
/// that an image seen before (same pixels after preprocessing, same model) is not encoded
/// again, in this process or a later one. The folder is trimmed to `max_bytes` (0 = 1 GiB) by
/// deleting the least recently used entries; damaged entries are detected and rewritten, and
/// several processes may share a folder. Sessions on the same folder share one cache (the
/// first call for a folder sets its cap). `dir` NULL goes back to the default: a cache in
/// memory only, shared by the whole process. Same threading rule as
/// `owlet_session_add_image_file`.
///
/// # Safety
/// `session` is NULL or a live handle; `dir` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn owlet_session_set_embed_cache(
    session: *const owlet_session,
    dir: *const c_char,
    max_bytes: u64,
) -> owlet_status {
    guard("owlet_session_set_embed_cache", || {
        // SAFETY: the caller's contract.
        let s = unsafe { handle(session, "session") }?;
        let cache = if dir.is_null() {
            EmbedCache::process()
        } else {
            // SAFETY: the caller's contract for `dir`.
            let d = unsafe { utf8_arg(dir, "dir") }?;
            if d.is_empty() {
                return Err(invalid(
                    "dir is empty (pass NULL for the memory-only cache)",
                ));
            }
            let cap = if max_bytes == 0 {
                crate::embed_cache::DEFAULT_DISK_BYTES
            } else {
                max_bytes
            };
            EmbedCache::shared_dir(Path::new(d), cap)?
        };
        s.state()?.session.set_embed_cache(Some(cache));
        Ok(())
    })
}
