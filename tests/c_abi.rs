//! The C ABI called as C would call it: status codes, last-error messages, null and non-UTF-8
//! arguments, image buffers, token callbacks, cancellation from another thread, reentrancy,
//! handle lifetimes, and (with `--features ffi-panic-test`) a forced panic in every entry point.
//! The answers are compared with the Rust API's on the tiny fixture model.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::PathBuf;
use std::ptr::{null, null_mut};

use owlet::ffi::*;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The tiny f16 model: `OWLET_TINY_MODEL` if set (cross-target runs), the committed one, or a
/// fresh conversion of the fixture checkpoint (built once per test binary into the target dir).
fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("OWLET_TINY_MODEL") {
        return PathBuf::from(p);
    }
    let committed = repo("models/owl2-tiny-a-f16.gguf");
    if committed.exists() {
        return committed;
    }
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c_abi-owl2-tiny-a-f16.gguf");
            let status = std::process::Command::new(env!("CARGO"))
                .args(["run", "-q", "-p", "owlet-convert", "--"])
                .arg(repo("tests/data/owl2-tiny-a/checkpoint"))
                .arg("-o")
                .arg(&out)
                .args(["--type", "f16", "--vision-type", "f16"])
                .status()
                .expect("run owlet-convert");
            assert!(status.success(), "owlet-convert failed");
            out
        })
        .clone()
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn last_error() -> String {
    // SAFETY: owlet_last_error never returns NULL and the string lives until our next call.
    unsafe { CStr::from_ptr(owlet_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn load() -> *mut owlet_model {
    let path = cstr(model_path().to_str().unwrap());
    let mut params = owlet_model_params_default();
    params.threads = 2;
    let mut m = null_mut();
    let rc = unsafe { owlet_model_load(path.as_ptr(), &params, &mut m) };
    assert_eq!(rc, OWLET_OK, "{}", last_error());
    assert!(!m.is_null());
    m
}

fn new_session(m: *const owlet_model) -> *mut owlet_session {
    let mut s = null_mut();
    let rc = unsafe { owlet_session_new(m, &mut s) };
    assert_eq!(rc, OWLET_OK, "{}", last_error());
    s
}

/// What the token callback saw.
#[derive(Default)]
struct Collected {
    ids: Vec<i32>,
    text: String,
    /// Stop (return 1) after this many tokens, if set.
    stop_after: Option<usize>,
    /// The session, to call back into it from the callback.
    session: Option<*const owlet_session>,
    /// Cancel the session from inside the callback after this many tokens.
    cancel_after: Option<usize>,
    /// Status of a reentrant `owlet_session_prompt` made from inside the callback.
    reentrant_status: Option<i32>,
    /// Another thread to hand the first token to (it cancels, then answers).
    handoff: Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>,
}

unsafe extern "C" fn collect(user: *mut c_void, id: i32, piece: *const c_char) -> i32 {
    // SAFETY: the tests pass a live &mut Collected as `user`; `piece` is valid for the call.
    let c = unsafe { &mut *(user as *mut Collected) };
    c.ids.push(id);
    c.text
        .push_str(&unsafe { CStr::from_ptr(piece) }.to_string_lossy());
    if let Some(s) = c.session {
        if c.reentrant_status.is_none() {
            let p = cstr("again");
            c.reentrant_status = Some(unsafe { owlet_session_prompt(s, p.as_ptr()) });
        }
        if c.cancel_after == Some(c.ids.len()) {
            assert_eq!(unsafe { owlet_session_cancel(s) }, OWLET_OK);
        }
    }
    if let Some((tx, rx)) = &c.handoff {
        if c.ids.len() == 1 {
            tx.send(()).unwrap();
            rx.recv().unwrap();
        }
    }
    i32::from(c.stop_after == Some(c.ids.len()))
}

fn greedy(max_tokens: i32) -> owlet_generate_params {
    let mut p = owlet_generate_params_default();
    p.max_tokens = max_tokens;
    p.ignore_eos = 1;
    p
}

/// Runs one prompt turn through the C ABI; returns (status, stop reason, what was collected).
fn run_turn(
    s: *const owlet_session,
    prompt: &str,
    params: &owlet_generate_params,
    mut c: Collected,
) -> (i32, i32, Collected) {
    let p = cstr(prompt);
    assert_eq!(
        unsafe { owlet_session_prompt(s, p.as_ptr()) },
        OWLET_OK,
        "{}",
        last_error()
    );
    let mut stop = -1;
    let rc = unsafe {
        owlet_session_generate(
            s,
            params,
            Some(collect),
            &mut c as *mut Collected as *mut c_void,
            &mut stop,
        )
    };
    (rc, stop, c)
}

/// The same turn through the Rust API.
fn rust_reference(images: &[owlet::image::RgbImage], prompt: &str, max_tokens: usize) -> Vec<i32> {
    use owlet::session::{GenerateOptions, Session, SessionOptions};
    let m = owlet::model::Model::load(&model_path()).unwrap();
    let mut s = Session::new(
        &m,
        SessionOptions {
            threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let opts = GenerateOptions {
        max_tokens,
        ignore_eos: true,
        ..Default::default()
    };
    let g = s
        .chat(prompt, images, None, &opts, &mut |_, _| true)
        .unwrap();
    g.ids.iter().map(|&i| i as i32).collect()
}

fn coffee() -> owlet::image::RgbImage {
    owlet::image::load(&repo("tests/data/assets/coffee.png"), &Default::default()).unwrap()
}

#[test]
fn version_and_defaults() {
    let v = unsafe { CStr::from_ptr(owlet_version()) }.to_str().unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    let p = owlet_model_params_default();
    assert_eq!((p.threads, p.kv_type, p.n_ctx), (0, OWLET_KV_F16, 0));
    let g = owlet_generate_params_default();
    assert_eq!(
        (g.max_tokens, g.temperature, g.top_k, g.top_p, g.ignore_eos),
        (256, 0.0, 0, 1.0, 0)
    );
    assert_eq!(last_error(), "");
}

#[test]
fn null_and_bad_arguments_are_errors() {
    let mut m = null_mut();
    assert_eq!(
        unsafe { owlet_model_load(null(), null(), &mut m) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("path is NULL"), "{}", last_error());
    let path = cstr(model_path().to_str().unwrap());
    assert_eq!(
        unsafe { owlet_model_load(path.as_ptr(), null(), null_mut()) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("out"), "{}", last_error());
    // Invalid UTF-8.
    let bad = [b'm', 0xff, 0xfe, b'x', 0];
    assert_eq!(
        unsafe { owlet_model_load(bad.as_ptr() as *const c_char, null(), &mut m) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("UTF-8"), "{}", last_error());
    assert!(m.is_null());
    // Out-of-range parameters.
    let mut p = owlet_model_params_default();
    p.kv_type = 7;
    assert_eq!(
        unsafe { owlet_model_load(path.as_ptr(), &p, &mut m) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("kv_type"), "{}", last_error());
    // A missing file and a file that is not a model: errors naming the path.
    let missing = cstr("/nonexistent/owl.gguf");
    let rc = unsafe { owlet_model_load(missing.as_ptr(), null(), &mut m) };
    assert!(rc == OWLET_ERR_IO || rc == OWLET_ERR_BAD_MODEL, "{rc}");
    assert!(
        last_error().contains("/nonexistent/owl.gguf"),
        "{}",
        last_error()
    );
    let png = cstr(repo("tests/data/assets/coffee.png").to_str().unwrap());
    assert_eq!(
        unsafe { owlet_model_load(png.as_ptr(), null(), &mut m) },
        OWLET_ERR_BAD_MODEL
    );
    assert!(m.is_null());
    // Null handles everywhere.
    let mut s = null_mut();
    assert_eq!(
        unsafe { owlet_session_new(null(), &mut s) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        unsafe { owlet_session_prompt(null(), path.as_ptr()) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        unsafe { owlet_session_add_image_file(null(), path.as_ptr()) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        unsafe { owlet_session_add_image_rgb(null(), [0u8; 3].as_ptr(), 1, 1, 3) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        unsafe { owlet_session_add_image_rgba(null(), [0u8; 4].as_ptr(), 1, 1, 4) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        unsafe { owlet_session_generate(null(), null(), None, null_mut(), null_mut()) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        unsafe { owlet_session_cancel(null()) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        unsafe { owlet_session_reset(null()) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    assert!(unsafe { owlet_model_kernels(null()) }.is_null());
    unsafe { owlet_model_free(null_mut()) };
    unsafe { owlet_session_free(null_mut()) };
    assert_eq!(last_error(), "");
}

#[test]
fn image_file_and_buffers_give_the_rust_api_answer() {
    let img = coffee();
    let prompt = "Describe the image.";
    let want = rust_reference(std::slice::from_ref(&img), prompt, 6);
    assert_eq!(want.len(), 6);

    let m = load();
    let k = unsafe { CStr::from_ptr(owlet_model_kernels(m)) }
        .to_str()
        .unwrap();
    assert!(!k.is_empty());
    let (w, h) = (img.width, img.height);
    // RGB rows padded to a stride of 3w + 5, RGBA rows padded to 4w + 8.
    let rgb_stride = w as usize * 3 + 5;
    let mut rgb = vec![0xAAu8; rgb_stride * h as usize];
    let rgba_stride = w as usize * 4 + 8;
    let mut rgba = vec![0x55u8; rgba_stride * h as usize];
    for y in 0..h as usize {
        for x in 0..w as usize {
            let px = &img.data[(y * w as usize + x) * 3..][..3];
            rgb[y * rgb_stride + x * 3..][..3].copy_from_slice(px);
            rgba[y * rgba_stride + x * 4..][..3].copy_from_slice(px);
            rgba[y * rgba_stride + x * 4 + 3] = 17; // alpha is dropped, not blended
        }
    }
    let file = cstr(repo("tests/data/assets/coffee.png").to_str().unwrap());
    // coffee.png has no EXIF orientation: both settings give the same pixels.
    for how in ["file", "file-exif-apply", "file-exif-ignore", "rgb", "rgba"] {
        let s = new_session(m);
        let rc = unsafe {
            match how {
                "file" => owlet_session_add_image_file(s, file.as_ptr()),
                "file-exif-apply" => {
                    owlet_session_add_image_file_exif(s, file.as_ptr(), OWLET_EXIF_APPLY)
                }
                "file-exif-ignore" => {
                    owlet_session_add_image_file_exif(s, file.as_ptr(), OWLET_EXIF_IGNORE)
                }
                "rgb" => owlet_session_add_image_rgb(s, rgb.as_ptr(), w, h, rgb_stride),
                _ => owlet_session_add_image_rgba(s, rgba.as_ptr(), w, h, rgba_stride),
            }
        };
        assert_eq!(rc, OWLET_OK, "{how}: {}", last_error());
        let (rc, stop, c) = run_turn(s, prompt, &greedy(6), Collected::default());
        assert_eq!(rc, OWLET_OK, "{how}: {}", last_error());
        assert_eq!(stop, OWLET_STOP_MAX_TOKENS);
        assert_eq!(c.ids, want, "{how}");
        unsafe { owlet_session_free(s) };
    }
    unsafe { owlet_model_free(m) };
}

#[test]
fn bad_images_and_prompts() {
    let m = load();
    let s = new_session(m);
    // Stride smaller than a row, zero size, a file that is not an image, a missing file.
    assert_eq!(
        unsafe { owlet_session_add_image_rgb(s, [0u8; 12].as_ptr(), 2, 2, 5) },
        OWLET_ERR_BAD_IMAGE
    );
    assert!(last_error().contains("stride"), "{}", last_error());
    assert_eq!(
        unsafe { owlet_session_add_image_rgba(s, [0u8; 4].as_ptr(), 0, 1, 4) },
        OWLET_ERR_BAD_IMAGE
    );
    assert_eq!(
        unsafe { owlet_session_add_image_rgb(s, null(), 1, 1, 3) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    let not_image = cstr(repo("Cargo.toml").to_str().unwrap());
    assert_eq!(
        unsafe { owlet_session_add_image_file(s, not_image.as_ptr()) },
        OWLET_ERR_BAD_IMAGE
    );
    assert!(last_error().contains("Cargo.toml"), "{}", last_error());
    let missing = cstr("/nonexistent.png");
    assert_eq!(
        unsafe { owlet_session_add_image_file(s, missing.as_ptr()) },
        OWLET_ERR_IO
    );
    let png = cstr(repo("tests/data/assets/coffee.png").to_str().unwrap());
    assert_eq!(
        unsafe { owlet_session_add_image_file_exif(s, png.as_ptr(), 2) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("exif is 2"), "{}", last_error());
    // Generate without a prompt.
    let mut stop = -1;
    assert_eq!(
        unsafe { owlet_session_generate(s, null(), None, null_mut(), &mut stop) },
        OWLET_ERR_BAD_PROMPT
    );
    assert!(
        last_error().contains("owlet_session_prompt"),
        "{}",
        last_error()
    );
    // Two placeholders but no image.
    let p = cstr("<|image|><|image|> what?");
    assert_eq!(
        unsafe { owlet_session_prompt(s, p.as_ptr()) },
        OWLET_ERR_BAD_PROMPT
    );
    // Invalid UTF-8 prompt.
    let bad = [0xC3u8, 0x28, 0];
    assert_eq!(
        unsafe { owlet_session_prompt(s, bad.as_ptr() as *const c_char) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    // Bad sampling parameters.
    let ok = cstr("hi");
    assert_eq!(unsafe { owlet_session_prompt(s, ok.as_ptr()) }, OWLET_OK);
    let mut g = greedy(2);
    g.top_p = 0.0;
    assert_eq!(
        unsafe { owlet_session_generate(s, &g, None, null_mut(), null_mut()) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("top-p"), "{}", last_error());
    // The prompt survives a refused call: generating now works.
    assert_eq!(
        unsafe { owlet_session_generate(s, &greedy(2), None, null_mut(), null_mut()) },
        OWLET_OK
    );
    unsafe { owlet_session_free(s) };
    unsafe { owlet_model_free(m) };
}

#[test]
fn callback_stop_reentrancy_reset_and_multi_turn() {
    let m = load();
    let s = new_session(m);
    // The callback stops after 2 tokens; a reentrant call from it is refused (busy).
    let c = Collected {
        stop_after: Some(2),
        session: Some(s),
        ..Default::default()
    };
    let (rc, stop, c) = run_turn(s, "Tell me a story about a small owl.", &greedy(10), c);
    assert_eq!(rc, OWLET_OK, "{}", last_error());
    assert_eq!(stop, OWLET_STOP_CALLBACK);
    assert_eq!(c.ids.len(), 2);
    assert_eq!(c.reentrant_status, Some(OWLET_ERR_INVALID_ARGUMENT));
    let first_two = c.ids.clone();

    // A second turn continues the conversation; after reset the first turn is reproduced.
    let (rc, _, c2) = run_turn(s, "And then?", &greedy(3), Collected::default());
    assert_eq!(rc, OWLET_OK, "{}", last_error());
    assert_eq!(c2.ids.len(), 3);
    assert_eq!(unsafe { owlet_session_reset(s) }, OWLET_OK);
    let (rc, _, c3) = run_turn(
        s,
        "Tell me a story about a small owl.",
        &greedy(2),
        Collected::default(),
    );
    assert_eq!(rc, OWLET_OK);
    assert_eq!(c3.ids, first_two);
    assert_eq!(
        c3.ids,
        rust_reference(&[], "Tell me a story about a small owl.", 2)
    );
    unsafe { owlet_session_free(s) };
    unsafe { owlet_model_free(m) };
}

#[test]
fn cancel_from_the_callback_and_from_another_thread() {
    let m = load();
    let s = new_session(m);
    let c = Collected {
        session: Some(s),
        cancel_after: Some(3),
        ..Default::default()
    };
    let (rc, stop, c) = run_turn(s, "Count.", &greedy(20), c);
    assert_eq!(rc, OWLET_ERR_CANCELLED);
    assert_eq!(stop, OWLET_STOP_CANCELLED);
    assert_eq!(c.ids.len(), 3);

    // Another thread cancels while the generating thread waits inside the first callback;
    // generation stops before the second token.
    let (to_canceller, from_generator) = std::sync::mpsc::channel();
    let (to_generator, from_canceller) = std::sync::mpsc::channel();
    let addr = s as usize;
    let canceller = std::thread::spawn(move || {
        from_generator.recv().unwrap();
        let rc = unsafe { owlet_session_cancel(addr as *const owlet_session) };
        to_generator.send(()).unwrap();
        rc
    });
    let c = Collected {
        handoff: Some((to_canceller, from_canceller)),
        ..Default::default()
    };
    let (rc, stop, c) = run_turn(s, "Count again.", &greedy(20), c);
    assert_eq!(canceller.join().unwrap(), OWLET_OK);
    assert_eq!(rc, OWLET_ERR_CANCELLED);
    assert_eq!(stop, OWLET_STOP_CANCELLED);
    assert_eq!(c.ids.len(), 1);
    // The session stays usable, and a stale cancel does not hit the next generation.
    assert_eq!(unsafe { owlet_session_cancel(s) }, OWLET_OK);
    let (rc, stop, c) = run_turn(s, "Go on.", &greedy(2), Collected::default());
    assert_eq!(
        (rc, stop, c.ids.len()),
        (OWLET_OK, OWLET_STOP_MAX_TOKENS, 2)
    );
    unsafe { owlet_session_free(s) };
    unsafe { owlet_model_free(m) };
}

#[test]
fn sessions_outlive_their_model_handle_and_run_in_parallel() {
    let m = load();
    let sessions: Vec<usize> = (0..3).map(|_| new_session(m) as usize).collect();
    unsafe { owlet_model_free(m) };
    let want = rust_reference(&[], "Hello owl.", 3);
    let handles: Vec<_> = sessions
        .into_iter()
        .map(|addr| {
            std::thread::spawn(move || {
                let s = addr as *const owlet_session;
                let (rc, _, c) = run_turn(s, "Hello owl.", &greedy(3), Collected::default());
                assert_eq!(rc, OWLET_OK, "{}", last_error());
                unsafe { owlet_session_free(addr as *mut owlet_session) };
                c.ids
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), want);
    }
}

/// Every exported function, forced to panic inside: the process survives, the call reports
/// OWLET_ERR_PANIC (or its documented fallback value) and the message names the function.
#[cfg(feature = "ffi-panic-test")]
#[test]
fn a_panic_in_every_entry_point_is_caught() {
    use owlet::ffi::panic_hook::set_force_panic;

    let m = load();
    let s = new_session(m);
    let path = cstr(model_path().to_str().unwrap());
    let text = cstr("hi");
    let px = [0u8; 4];
    let expect = |name: &str| {
        let e = last_error();
        assert!(
            e.contains("internal panic") && e.contains(name),
            "{name}: {e}"
        );
    };
    type Call<'a> = Box<dyn Fn() -> i32 + 'a>;
    let statuses: Vec<(&str, Call)> = vec![
        (
            "owlet_model_load",
            Box::new(|| unsafe {
                let mut out = null_mut();
                let rc = owlet_model_load(path.as_ptr(), null(), &mut out);
                assert!(out.is_null());
                rc
            }),
        ),
        (
            "owlet_model_load_cached",
            Box::new(|| unsafe {
                let mut out = null_mut();
                let rc = owlet_model_load_cached(path.as_ptr(), null(), null(), &mut out);
                assert!(out.is_null());
                rc
            }),
        ),
        (
            "owlet_session_new",
            Box::new(|| unsafe {
                let mut out = null_mut();
                owlet_session_new(m, &mut out)
            }),
        ),
        (
            "owlet_session_add_image_file",
            Box::new(|| unsafe { owlet_session_add_image_file(s, path.as_ptr()) }),
        ),
        (
            "owlet_session_add_image_file_exif",
            Box::new(|| unsafe {
                owlet_session_add_image_file_exif(s, path.as_ptr(), OWLET_EXIF_IGNORE)
            }),
        ),
        (
            "owlet_session_add_image_rgb",
            Box::new(|| unsafe { owlet_session_add_image_rgb(s, px.as_ptr(), 1, 1, 3) }),
        ),
        (
            "owlet_session_add_image_rgba",
            Box::new(|| unsafe { owlet_session_add_image_rgba(s, px.as_ptr(), 1, 1, 4) }),
        ),
        (
            "owlet_session_add_video_rgb",
            Box::new(|| unsafe {
                let f = owlet_frame {
                    rgb: px.as_ptr(),
                    width: 1,
                    height: 1,
                    stride: 0,
                };
                owlet_session_add_video_rgb(s, &f, 1)
            }),
        ),
        (
            "owlet_video_frame_indices",
            Box::new(|| unsafe {
                let mut n = 0;
                owlet_video_frame_indices(30, 10.0, 1.0, 0, null_mut(), 0, &mut n)
            }),
        ),
        (
            "owlet_session_prompt",
            Box::new(|| unsafe { owlet_session_prompt(s, text.as_ptr()) }),
        ),
        (
            "owlet_session_generate",
            Box::new(|| unsafe { owlet_session_generate(s, null(), None, null_mut(), null_mut()) }),
        ),
        (
            "owlet_session_cancel",
            Box::new(|| unsafe { owlet_session_cancel(s) }),
        ),
        (
            "owlet_session_reset",
            Box::new(|| unsafe { owlet_session_reset(s) }),
        ),
    ];
    for (name, call) in &statuses {
        set_force_panic(true);
        let rc = call();
        set_force_panic(false);
        assert_eq!(rc, OWLET_ERR_PANIC, "{name}");
        expect(name);
    }

    // Functions without a status: a documented fallback value and the message.
    set_force_panic(true);
    let v = owlet_version();
    let p = owlet_model_params_default();
    let g = owlet_generate_params_default();
    let k = unsafe { owlet_model_kernels(m) };
    let pc = unsafe { owlet_model_packed_cache(m) };
    let e = unsafe { CStr::from_ptr(owlet_last_error()) }
        .to_str()
        .unwrap()
        .to_string();
    set_force_panic(false);
    assert!(!v.is_null());
    assert_eq!(p.kv_type, OWLET_KV_F16);
    assert_eq!(g.max_tokens, 256);
    assert!(k.is_null());
    assert_eq!(pc, -1);
    assert!(e.contains("internal panic in owlet_last_error"), "{e}");
    for (name, free) in [("owlet_session_free", true), ("owlet_model_free", false)] {
        set_force_panic(true);
        // The forced panic fires before anything is freed: the handles stay valid.
        unsafe {
            if free {
                owlet_session_free(s)
            } else {
                owlet_model_free(m)
            }
        };
        set_force_panic(false);
        expect(name);
    }

    // The handles still work (the panics happened before any state was touched).
    let (rc, _, c) = run_turn(s, "Still alive?", &greedy(2), Collected::default());
    assert_eq!(rc, OWLET_OK, "{}", last_error());
    assert_eq!(c.ids.len(), 2);
    unsafe { owlet_session_free(s) };
    unsafe { owlet_model_free(m) };
}

/// Every `extern "C" fn` in src/ffi is declared in the checked-in header, and every function
/// the header declares exists (a check that needs no cbindgen; scripts/ci/header.sh compares
/// the whole header with cbindgen's output).
#[test]
fn header_declares_every_exported_function() {
    let src = std::fs::read_to_string(repo("src/ffi/mod.rs")).unwrap();
    let header = std::fs::read_to_string(repo("include/owlet.h")).unwrap();
    let exported: Vec<&str> = src
        .split("extern \"C\" fn ")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .collect();
    assert!(exported.len() >= 15, "{exported:?}");
    for name in &exported {
        assert!(
            header.contains(&format!(" {name}(")) || header.contains(&format!("*{name}(")),
            "{name} is exported but not in include/owlet.h (run scripts/ci/header.sh --write)"
        );
    }
    // Identifiers right before a '(' outside comments: the declared functions.
    let code: String = header
        .lines()
        .filter(|l| !l.trim_start().starts_with("//") && !l.trim_start().starts_with('*'))
        .collect::<Vec<_>>()
        .join("\n");
    let declared: Vec<&str> = code
        .split('(')
        .filter_map(|before| {
            before
                .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
        })
        .filter(|n| n.starts_with("owlet_"))
        .collect();
    for name in &declared {
        assert!(
            exported.contains(name),
            "the header declares {name}, which src/ffi does not export"
        );
    }
    assert_eq!(
        declared.len(),
        exported.len(),
        "{declared:?} vs {exported:?}"
    );
}

/// The model file contract for apps: a file truncated after loading gives OWLET_ERR_IO naming
/// it (not a SIGBUS), and a checkpoint folder instead of a model says how to convert it.
#[test]
fn a_changed_model_file_and_a_checkpoint_folder_are_errors() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("c_abi-changed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("live.gguf");
    std::fs::copy(model_path(), &copy).unwrap();
    let path = cstr(copy.to_str().unwrap());
    let mut m = null_mut();
    assert_eq!(
        unsafe { owlet_model_load(path.as_ptr(), null(), &mut m) },
        OWLET_OK,
        "{}",
        last_error()
    );
    let s = new_session(m);
    let (rc, _, _) = run_turn(s, "Hello", &greedy(2), Collected::default());
    assert_eq!(rc, OWLET_OK, "{}", last_error());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&copy)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let (rc, _, c) = run_turn(s, "Again", &greedy(2), Collected::default());
    assert_eq!(rc, OWLET_ERR_IO, "{}", last_error());
    assert!(c.ids.is_empty());
    let e = last_error();
    assert!(
        e.contains(copy.to_str().unwrap()) && e.contains("changed or was truncated while in use"),
        "{e}"
    );
    unsafe {
        owlet_session_free(s);
        owlet_model_free(m);
    }

    let ckpt = cstr(repo("tests/data/owl2-tiny-a/checkpoint").to_str().unwrap());
    assert_eq!(
        unsafe { owlet_model_load(ckpt.as_ptr(), null(), &mut m) },
        OWLET_ERR_BAD_MODEL
    );
    assert!(m.is_null());
    assert!(last_error().contains("owlet-convert"), "{}", last_error());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A frame of a test video: a gradient that moves from frame to frame.
fn video_frame(i: u32) -> owlet::image::RgbImage {
    let (w, h) = (40u32, 30u32);
    let mut data = Vec::new();
    for y in 0..h {
        for x in 0..w {
            data.extend([
                ((x * 6 + i * 50) % 256) as u8,
                ((y * 8 + i * 70) % 256) as u8,
                (i * 80 % 256) as u8,
            ]);
        }
    }
    owlet::image::from_rgb(w, h, &data).unwrap()
}

#[test]
fn a_video_added_as_frames_gives_the_rust_api_answer_and_score() {
    use owlet::score::{Aspect, ScoreOptions, Scorer, Subject};
    use owlet::session::{GenerateOptions, Media, Session, SessionOptions};

    let frames: Vec<_> = (0..3).map(video_frame).collect();
    // The second frame with padded rows, to exercise the stride.
    let padded: Vec<u8> = frames[1]
        .data
        .chunks(40 * 3)
        .flat_map(|row| row.iter().copied().chain([7u8; 5]))
        .collect();
    let c_frames = [
        owlet_frame {
            rgb: frames[0].data.as_ptr(),
            width: 40,
            height: 30,
            stride: 0,
        },
        owlet_frame {
            rgb: padded.as_ptr(),
            width: 40,
            height: 30,
            stride: 40 * 3 + 5,
        },
        owlet_frame {
            rgb: frames[2].data.as_ptr(),
            width: 40,
            height: 30,
            stride: 120,
        },
    ];

    // Rust: the same frames as one video in a chat turn, and as a scored video.
    let m = owlet::model::Model::load(&model_path()).unwrap();
    let opts = SessionOptions {
        threads: 2,
        ..Default::default()
    };
    let mut rs = Session::new(&m, opts.clone()).unwrap();
    let g = rs
        .chat_media(
            "What happens in the video?",
            &[Media::Video(frames.clone())],
            None,
            &GenerateOptions {
                max_tokens: 4,
                ignore_eos: true,
                ..Default::default()
            },
            &mut |_, _| true,
        )
        .unwrap();
    let want: Vec<i32> = g.ids.iter().map(|&i| i as i32).collect();
    let mut ss = Session::new(&m, opts).unwrap();
    let want_score = Scorer::new(&mut ss, ScoreOptions::task(Aspect::Quality, Subject::Video))
        .unwrap()
        .score_video(&frames)
        .unwrap();

    let cm = load();
    let s = new_session(cm);
    let rc = unsafe { owlet_session_add_video_rgb(s, c_frames.as_ptr(), 3) };
    assert_eq!(rc, OWLET_OK, "{}", last_error());
    let (rc, _, c) = run_turn(
        s,
        "What happens in the video?",
        &greedy(4),
        Collected::default(),
    );
    assert_eq!(rc, OWLET_OK, "{}", last_error());
    assert_eq!(c.ids, want);

    let rc = unsafe { owlet_session_add_video_rgb(s, c_frames.as_ptr(), 3) };
    assert_eq!(rc, OWLET_OK, "{}", last_error());
    let mut p = owlet_score_params_default();
    p.subject = OWLET_SCORE_VIDEO;
    let (mut score, mut probs) = (0f64, [0f64; 5]);
    let rc = unsafe { owlet_session_score(s, &p, &mut score, probs.as_mut_ptr()) };
    assert_eq!(rc, OWLET_OK, "{}", last_error());
    assert_eq!(score, want_score.score);
    assert_eq!(probs, want_score.probs);

    // Bad arguments: status codes and one-line messages naming the frame.
    let rc = unsafe { owlet_session_add_video_rgb(s, null(), 3) };
    assert_eq!(rc, OWLET_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("frames is NULL"), "{}", last_error());
    let rc = unsafe { owlet_session_add_video_rgb(s, c_frames.as_ptr(), 0) };
    assert_eq!(rc, OWLET_ERR_BAD_IMAGE);
    let mut bad = c_frames;
    bad[1].rgb = null();
    let rc = unsafe { owlet_session_add_video_rgb(s, bad.as_ptr(), 3) };
    assert_eq!(rc, OWLET_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("frame 1 of 3"), "{}", last_error());
    let mut bad = c_frames;
    bad[2].stride = 10;
    let rc = unsafe { owlet_session_add_video_rgb(s, bad.as_ptr(), 3) };
    assert_eq!(rc, OWLET_ERR_BAD_IMAGE);
    assert!(last_error().contains("frame 2 of 3"), "{}", last_error());
    let rc = unsafe { owlet_session_add_video_rgb(null(), c_frames.as_ptr(), 3) };
    assert_eq!(rc, OWLET_ERR_INVALID_ARGUMENT);
    unsafe { owlet_session_free(s) };

    // Too many frames for a small context: the error names the frame count.
    let mut params = owlet_model_params_default();
    params.threads = 1;
    params.n_ctx = (3 * m.config.image_tokens + 20) as i32;
    let path = cstr(model_path().to_str().unwrap());
    let mut small = null_mut();
    assert_eq!(
        unsafe { owlet_model_load(path.as_ptr(), &params, &mut small) },
        OWLET_OK
    );
    let s = new_session(small);
    let many: Vec<owlet_frame> = (0..8).map(|i| c_frames[i % 3]).collect();
    assert_eq!(
        unsafe { owlet_session_add_video_rgb(s, many.as_ptr(), many.len()) },
        OWLET_OK
    );
    let (rc, _, _) = run_turn(s, "Describe.", &greedy(2), Collected::default());
    assert_eq!(rc, OWLET_ERR_BAD_PROMPT);
    assert!(last_error().contains("8 frames"), "{}", last_error());
    unsafe { owlet_session_free(s) };
    unsafe { owlet_model_free(small) };
    unsafe { owlet_model_free(cm) };
}

#[test]
fn video_frame_indices_are_q_aligns() {
    let mut out = [0usize; 16];
    let mut n = 0usize;
    // 10 s at 30 fps, one per second: 0, 30, ..., 270.
    let rc = unsafe { owlet_video_frame_indices(300, 30.0, 1.0, 0, out.as_mut_ptr(), 16, &mut n) };
    assert_eq!(rc, OWLET_OK, "{}", last_error());
    assert_eq!(n, 10);
    assert_eq!(out[..10], [0, 30, 60, 90, 120, 150, 180, 210, 240, 270]);
    // Sizing call, a cap, a short buffer.
    let rc = unsafe { owlet_video_frame_indices(300, 30.0, 1.0, 4, null_mut(), 0, &mut n) };
    assert_eq!((rc, n), (OWLET_OK, 4));
    let rc = unsafe { owlet_video_frame_indices(300, 30.0, 2.0, 0, out.as_mut_ptr(), 2, &mut n) };
    assert_eq!((rc, n, out[..2].to_vec()), (OWLET_OK, 20, vec![0, 15]));
    // Bad numbers and pointers.
    let rc = unsafe { owlet_video_frame_indices(300, 0.0, 1.0, 0, null_mut(), 0, &mut n) };
    assert_eq!(rc, OWLET_ERR_INVALID_ARGUMENT);
    let rc = unsafe { owlet_video_frame_indices(300, 30.0, 1.0, 0, null_mut(), 4, &mut n) };
    assert_eq!(rc, OWLET_ERR_INVALID_ARGUMENT);
    let rc = unsafe { owlet_video_frame_indices(300, 30.0, 1.0, 0, null_mut(), 0, null_mut()) };
    assert_eq!(rc, OWLET_ERR_INVALID_ARGUMENT);
}

/// `owlet_model_load_cached`: NULL cache folder = `owlet_model_load`; argument errors; a
/// quantized model through a cache folder: written then mapped where the CPU's kernel variant
/// packs, untouched where it does not; an unwritable folder still loads. (The cache's own
/// checks are tests/packed_cache.rs.)
#[test]
fn packed_weight_cache_through_the_c_abi() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("c_abi-packed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("tiny-q4km.gguf");
    std::fs::copy(repo("tests/data/llamacpp-tiny/tiny-Q4_K_M.gguf"), &model).unwrap();
    let path = cstr(model.to_str().unwrap());
    let cache = dir.join("cache");
    let cache_c = cstr(cache.to_str().unwrap());
    let load_cached = |dir: *const c_char| {
        let mut m = null_mut();
        let rc = unsafe { owlet_model_load_cached(path.as_ptr(), dir, null(), &mut m) };
        assert_eq!(rc, OWLET_OK, "{}", last_error());
        assert!(!m.is_null());
        let status = unsafe { owlet_model_packed_cache(m) };
        unsafe { owlet_model_free(m) };
        status
    };

    // Argument errors.
    let mut m = null_mut();
    assert_eq!(
        unsafe { owlet_model_load_cached(null(), cache_c.as_ptr(), null(), &mut m) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("path"));
    let empty = cstr("");
    assert_eq!(
        unsafe { owlet_model_load_cached(path.as_ptr(), empty.as_ptr(), null(), &mut m) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("cache_dir"), "{}", last_error());
    let bad = [0xffu8, 0xfe, 0];
    assert_eq!(
        unsafe {
            owlet_model_load_cached(path.as_ptr(), bad.as_ptr() as *const c_char, null(), &mut m)
        },
        OWLET_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("UTF-8"));
    assert!(m.is_null());
    assert_eq!(
        unsafe { owlet_model_load_cached(path.as_ptr(), cache_c.as_ptr(), null(), null_mut()) },
        OWLET_ERR_INVALID_ARGUMENT
    );
    assert_eq!(unsafe { owlet_model_packed_cache(null()) }, -1);

    // No folder: the plain load.
    assert_eq!(load_cached(null()), OWLET_PACKED_CACHE_UNUSED);
    let packs = !owlet::kernels::select().unwrap().packings.is_empty();
    if packs {
        assert_eq!(load_cached(cache_c.as_ptr()), OWLET_PACKED_CACHE_WRITTEN);
        assert_eq!(load_cached(cache_c.as_ptr()), OWLET_PACKED_CACHE_HIT);
    } else {
        assert_eq!(load_cached(cache_c.as_ptr()), OWLET_PACKED_CACHE_UNUSED);
        assert!(!cache.exists(), "a variant without packing wrote a cache");
    }
    // A folder that cannot be created: the model still loads.
    std::fs::write(dir.join("file"), b"x").unwrap();
    let under_file = cstr(dir.join("file/cache").to_str().unwrap());
    let want = if packs {
        OWLET_PACKED_CACHE_FAILED
    } else {
        OWLET_PACKED_CACHE_UNUSED
    };
    assert_eq!(load_cached(under_file.as_ptr()), want);
    let _ = std::fs::remove_dir_all(&dir);
}
