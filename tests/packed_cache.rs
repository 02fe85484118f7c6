//! The packed-weight cache file (`owlet::model::packed_cache`): the first load writes it, the
//! next maps it without packing, logits are bitwise the same with and without it, and a file
//! that is corrupted, truncated, stale or foreign is rebuilt rather than trusted.
//!
//! x86 AVX2 repacks nothing, so these tests use the hidden `generic-packed` variant (the
//! generic kernels with a portable packing) unless the CPU's own variant packs (aarch64 with
//! dot product or i8mm, AVX-512): the cache code is the same for every variant.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use owlet::kernels::{self, generic_packed::GENERIC_PACKED, Kernels};
use owlet::kv_cache::KvType;
use owlet::model::packed_cache::{self, FORMAT_VERSION};
use owlet::model::{CacheStatus, LoadOptions, Model, PackedCache};
use owlet::session::{Session, SessionOptions};

#[path = "common/scratch.rs"]
mod scratch;
use scratch::TempDir;

fn data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/llamacpp-tiny")
        .join(file)
}

/// A test's scratch folder (removed when the test ends) with a private copy of a Q4_K_M model
/// (Q4_K and Q6_K matrices, both packed), which tests touch and rewrite, and `cache`, the
/// folder its tests give as [`PackedCache::Dir`].
struct Scratch {
    dir: TempDir,
    model: PathBuf,
    cache: PathBuf,
}

fn scratch(name: &str) -> Scratch {
    let dir = TempDir::new(env!("CARGO_TARGET_TMPDIR"), "owlet-pcache", name);
    let model = dir.join("tiny-q4km.gguf");
    fs::copy(data("tiny-Q4_K_M.gguf"), &model).unwrap();
    let cache = dir.join("c");
    Scratch { dir, model, cache }
}

/// [`scratch`] after a first load has written the cache; also returns the cache file.
fn written(name: &str) -> (Scratch, PathBuf) {
    let t = scratch(name);
    drop(load(&t.model, PackedCache::Dir(t.cache.clone())));
    let f = cache_file(&t.cache);
    (t, f)
}

fn variant() -> &'static Kernels {
    let k = kernels::select().unwrap();
    if k.packings.is_empty() {
        &GENERIC_PACKED
    } else {
        k
    }
}

fn load(model: &Path, cache: PackedCache) -> Model {
    load_with(variant(), model, cache)
}

fn load_with(kernels: &'static Kernels, model: &Path, cache: PackedCache) -> Model {
    Model::load_with_options(
        model,
        &LoadOptions {
            kernels: Some(kernels),
            packed_cache: cache,
        },
    )
    .unwrap()
}

/// Flips the bits `mask` of byte `at` of file `f`.
fn flip(f: &Path, at: usize, mask: u8) {
    let mut b = fs::read(f).unwrap();
    b[at] ^= mask;
    fs::write(f, &b).unwrap();
}

/// File `f` opened for writing (to cut it or set its modification time).
fn writable(f: &Path) -> fs::File {
    fs::File::options().write(true).open(f).unwrap()
}

fn logits(m: &Model) -> Vec<u32> {
    let mut s = Session::new(
        m,
        SessionOptions {
            threads: 2,
            kv_type: KvType::F32,
            n_ctx: None,
        },
    )
    .unwrap();
    s.prefill(&[1, 450, 100, 200, 300, 29], &[], true, None)
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

/// The one `.owlpack` file in `dir`.
fn cache_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "owlpack"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// Loads once more and checks that the damaged cache was reported (one line containing
/// `why`), rebuilt, and then serves a clean hit.
fn expect_rebuilt(model: &Path, dir: &Path, why: &str) {
    let m = load(model, PackedCache::Dir(dir.to_path_buf()));
    let r = m.load_report();
    assert_eq!(r.cache, CacheStatus::Written, "{r:?}");
    assert!(r.packed_tensors > 0);
    assert_eq!(r.messages.len(), 1, "{r:?}");
    assert!(!r.messages[0].contains('\n'));
    assert!(
        r.messages[0].contains(why) && r.messages[0].contains("rebuilding"),
        "{:?}",
        r.messages
    );
    let again = load(model, PackedCache::Dir(dir.to_path_buf()));
    assert_eq!(again.load_report().cache, CacheStatus::Hit);
    assert!(again.load_report().messages.is_empty());
}

/// Patches `f`'s header with `edit`, then recomputes its checksum (a well-formed header that
/// says something else).
fn forge_header(f: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut b = fs::read(f).unwrap();
    let h = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
    edit(&mut b);
    let sum = packed_cache::sha256_for_tests(&b[..h - 32]);
    b[h - 32..h].copy_from_slice(&sum);
    fs::write(f, b).unwrap();
}

#[test]
fn first_load_writes_the_cache_second_maps_it_with_the_same_logits() {
    let t = scratch("hit");
    let (dir, model, cache) = (&t.dir, &t.model, &t.cache);
    let plain = load(model, PackedCache::Off);
    assert_eq!(plain.load_report().cache, CacheStatus::Unused);
    let n = plain.load_report().packed_tensors;
    assert!(n > 0, "{:?}", plain.load_report());
    let want = logits(&plain);

    let first = load(model, PackedCache::Dir(cache.clone()));
    let r = first.load_report();
    assert_eq!(r.cache, CacheStatus::Written, "{r:?}");
    assert_eq!((r.packed_tensors, r.mapped_tensors), (n, n));
    assert!(r.messages.is_empty(), "{r:?}");
    let file = cache_file(cache);
    assert_eq!(r.cache_file.as_deref(), Some(file.as_path()));
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("tiny-q4km-") && name.ends_with(&format!(".{}.owlpack", variant().name)),
        "{name}"
    );
    assert_eq!(logits(&first), want);

    let second = load(model, PackedCache::Dir(cache.clone()));
    let r = second.load_report();
    assert_eq!(r.cache, CacheStatus::Hit, "{r:?}");
    assert_eq!((r.packed_tensors, r.mapped_tensors), (0, n));
    assert_eq!(logits(&second), want);
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(cache).unwrap().count(), 1);

    // Beside the model: the same file name in the model's folder.
    let beside = load(model, PackedCache::BesideModel);
    assert_eq!(beside.load_report().cache, CacheStatus::Written);
    assert_eq!(
        beside.load_report().cache_file.as_deref(),
        Some(dir.join(&name).as_path())
    );
    assert_eq!(logits(&beside), want);
}

#[test]
fn a_corrupted_header_is_rebuilt() {
    let (t, f) = written("corrupt");
    flip(&f, 70, 0x40); // inside the tensor table
    expect_rebuilt(&t.model, &t.cache, "checksum");
}

#[test]
fn corrupted_packed_data_fails_the_spot_check() {
    let (t, f) = written("data");
    let n = fs::metadata(&f).unwrap().len() as usize;
    flip(&f, n - 1, 0x01); // the last group of the last tensor
    expect_rebuilt(&t.model, &t.cache, "differ");
}

#[test]
fn a_truncated_cache_is_rebuilt() {
    let (t, f) = written("trunc");
    let len = fs::metadata(&f).unwrap().len();
    writable(&f).set_len(len - 1000).unwrap();
    expect_rebuilt(&t.model, &t.cache, "truncated");
    // Cut inside the header too.
    writable(&cache_file(&t.cache)).set_len(40).unwrap();
    expect_rebuilt(&t.model, &t.cache, "truncated");
}

#[test]
fn a_changed_or_touched_model_rebuilds_the_cache() {
    let (t, _) = written("stale");
    let (model, c) = (&t.model, &t.cache);
    // Touched: same bytes, new modification time.
    writable(model)
        .set_modified(SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    expect_rebuilt(model, c, "stale");
    // Replaced by another model (same path, same size class).
    let want = logits(&load(model, PackedCache::Off));
    fs::copy(data("tiny-Q4_0.gguf"), model).unwrap();
    let m = load(model, PackedCache::Dir(c.clone()));
    assert_eq!(m.load_report().cache, CacheStatus::Written);
    assert_eq!(m.load_report().messages.len(), 1);
    let other = logits(&m);
    assert_ne!(other, want);
    assert_eq!(other, logits(&load(model, PackedCache::Off)));
}

#[test]
fn a_foreign_variant_or_version_is_rebuilt() {
    let (t, f) = written("foreign");
    let (model, c) = (&t.model, &t.cache);
    // Another variant's name, same length, with a valid checksum.
    forge_header(&f, |b| {
        let at = 58;
        let n = u16::from_le_bytes([b[56], b[57]]) as usize;
        for x in &mut b[at..at + n] {
            *x = b'x';
        }
    });
    expect_rebuilt(model, c, "kernel variant");
    // Another format version.
    let f = cache_file(c);
    forge_header(&f, |b| {
        b[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes())
    });
    expect_rebuilt(model, c, "format version");
    // Not a cache file at all.
    fs::write(cache_file(c), b"hello, this is not a cache file").unwrap();
    expect_rebuilt(model, c, "magic");
}

#[test]
fn an_unwritable_folder_loads_without_the_cache() {
    let t = scratch("unwritable");
    let want = logits(&load(&t.model, PackedCache::Off));
    // A folder under a regular file cannot be created, even by root.
    let blocker = t.dir.join("file");
    fs::write(&blocker, b"x").unwrap();
    let m = load(&t.model, PackedCache::Dir(blocker.join("cache")));
    let r = m.load_report();
    assert_eq!(r.cache, CacheStatus::Failed, "{r:?}");
    assert_eq!(r.mapped_tensors, 0);
    assert!(r.packed_tensors > 0);
    assert_eq!(r.messages.len(), 1);
    assert!(r.messages[0].contains("without the cache"), "{r:?}");
    assert_eq!(logits(&m), want);
}

#[test]
fn a_dead_writers_temporary_file_is_swept() {
    let t = scratch("sweep");
    let c = &t.cache;
    fs::create_dir_all(c).unwrap();
    let stale = c.join(".x.generic-packed.owlpack.999999.0.tmp");
    fs::write(&stale, b"partial").unwrap();
    let old = SystemTime::now() - Duration::from_secs(120);
    writable(&stale).set_modified(old).unwrap();
    // A live writer's file (locked) is left alone.
    let live = c.join(".y.generic-packed.owlpack.999999.1.tmp");
    fs::write(&live, b"partial").unwrap();
    let held = writable(&live);
    held.set_modified(old).unwrap();
    held.lock().unwrap();
    let m = load(&t.model, PackedCache::Dir(c.clone()));
    assert_eq!(m.load_report().cache, CacheStatus::Written);
    assert!(!stale.exists());
    assert!(live.exists());
    drop(held);
}

#[test]
fn a_variant_without_packing_never_touches_the_folder() {
    let t = scratch("nopack");
    let m = load_with(
        &kernels::GENERIC,
        &t.model,
        PackedCache::Dir(t.cache.clone()),
    );
    assert_eq!(m.load_report().cache, CacheStatus::Unused);
    assert!(!t.cache.exists());
}

/// Loads racing on an empty folder each write their own temporary file and rename it: all
/// succeed with the same logits, a later load hits, and no temporary file is left.
#[test]
fn concurrent_first_loads_never_tear_the_file() {
    let t = scratch("race");
    let (model, c) = (&t.model, &t.cache);
    let want = logits(&load(model, PackedCache::Off));
    let got: Vec<Vec<u32>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| logits(&load(model, PackedCache::Dir(c.clone())))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(got.iter().all(|g| *g == want));
    let m = load(model, PackedCache::Dir(c.clone()));
    assert_eq!(m.load_report().cache, CacheStatus::Hit);
    assert_eq!(fs::read_dir(c).unwrap().count(), 1);
}
