//! The packed-weight cache file (`owlet::model::packed_cache`): the first load writes it, the
//! next maps it without packing, logits are bitwise the same with and without it, and a file
//! that is corrupted, truncated, stale or foreign is rebuilt rather than trusted.
//!
//! x86 AVX2 repacks nothing, so these tests use the hidden `generic-packed` variant (the
//! generic kernels with a portable packing) unless the CPU's own variant packs (aarch64 with
//! dot product or i8mm, AVX-512): the cache code is the same for every variant.

use std::fs;
use std::path::{Path, PathBuf};

use owlet::kernels::{self, generic_packed::GENERIC_PACKED, Kernels};
use owlet::kv_cache::KvType;
use owlet::model::packed_cache::{self, FORMAT_VERSION};
use owlet::model::{CacheStatus, LoadOptions, Model, PackedCache};
use owlet::session::{Session, SessionOptions};

fn data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/llamacpp-tiny")
        .join(file)
}

/// A fresh scratch folder with a private copy of a Q4_K_M model (Q4_K and Q6_K matrices,
/// both packed): tests touch and rewrite their copy.
fn scratch(name: &str) -> (PathBuf, PathBuf) {
    let d = std::env::temp_dir().join(format!("owlet-pcache-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    let model = d.join("tiny-q4km.gguf");
    fs::copy(data("tiny-Q4_K_M.gguf"), &model).unwrap();
    (d.clone(), model)
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
    Model::load_with_options(
        model,
        &LoadOptions {
            kernels: Some(variant()),
            packed_cache: cache,
        },
    )
    .unwrap()
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
    let (dir, model) = scratch("hit");
    let cache = dir.join("cache");
    let plain = load(&model, PackedCache::Off);
    assert_eq!(plain.load_report().cache, CacheStatus::Unused);
    let n = plain.load_report().packed_tensors;
    assert!(n > 0, "{:?}", plain.load_report());
    let want = logits(&plain);

    let first = load(&model, PackedCache::Dir(cache.clone()));
    let r = first.load_report();
    assert_eq!(r.cache, CacheStatus::Written, "{r:?}");
    assert_eq!((r.packed_tensors, r.mapped_tensors), (n, n));
    assert!(r.messages.is_empty(), "{r:?}");
    let file = cache_file(&cache);
    assert_eq!(r.cache_file.as_deref(), Some(file.as_path()));
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("tiny-q4km-") && name.ends_with(&format!(".{}.owlpack", variant().name)),
        "{name}"
    );
    assert_eq!(logits(&first), want);

    let second = load(&model, PackedCache::Dir(cache.clone()));
    let r = second.load_report();
    assert_eq!(r.cache, CacheStatus::Hit, "{r:?}");
    assert_eq!((r.packed_tensors, r.mapped_tensors), (0, n));
    assert_eq!(logits(&second), want);
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(&cache).unwrap().count(), 1);

    // Beside the model: the same file name in the model's folder.
    let beside = load(&model, PackedCache::BesideModel);
    assert_eq!(beside.load_report().cache, CacheStatus::Written);
    assert_eq!(
        beside.load_report().cache_file.as_deref(),
        Some(dir.join(&name).as_path())
    );
    assert_eq!(logits(&beside), want);
    drop((plain, first, second, beside));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupted_header_is_rebuilt() {
    let (dir, model) = scratch("corrupt");
    drop(load(&model, PackedCache::Dir(dir.join("c"))));
    let f = cache_file(&dir.join("c"));
    let mut b = fs::read(&f).unwrap();
    b[70] ^= 0x40; // inside the tensor table
    fs::write(&f, &b).unwrap();
    expect_rebuilt(&model, &dir.join("c"), "checksum");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn corrupted_packed_data_fails_the_spot_check() {
    let (dir, model) = scratch("data");
    let c = dir.join("c");
    drop(load(&model, PackedCache::Dir(c.clone())));
    let f = cache_file(&c);
    let mut b = fs::read(&f).unwrap();
    let n = b.len();
    b[n - 1] ^= 0x01; // the last group of the last tensor
    fs::write(&f, &b).unwrap();
    expect_rebuilt(&model, &c, "differ");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_truncated_cache_is_rebuilt() {
    let (dir, model) = scratch("trunc");
    let c = dir.join("c");
    drop(load(&model, PackedCache::Dir(c.clone())));
    let f = cache_file(&c);
    let len = fs::metadata(&f).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len - 1000)
        .unwrap();
    expect_rebuilt(&model, &c, "truncated");
    // Cut inside the header too.
    let f = cache_file(&c);
    fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(40)
        .unwrap();
    expect_rebuilt(&model, &c, "truncated");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_changed_or_touched_model_rebuilds_the_cache() {
    let (dir, model) = scratch("stale");
    let c = dir.join("c");
    drop(load(&model, PackedCache::Dir(c.clone())));
    // Touched: same bytes, new modification time.
    let f = fs::File::options().write(true).open(&model).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(f);
    expect_rebuilt(&model, &c, "stale");
    // Replaced by another model (same path, same size class).
    let want = logits(&load(&model, PackedCache::Off));
    fs::copy(data("tiny-Q4_0.gguf"), &model).unwrap();
    let m = load(&model, PackedCache::Dir(c.clone()));
    assert_eq!(m.load_report().cache, CacheStatus::Written);
    assert_eq!(m.load_report().messages.len(), 1);
    let other = logits(&m);
    assert_ne!(other, want);
    assert_eq!(other, logits(&load(&model, PackedCache::Off)));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_foreign_variant_or_version_is_rebuilt() {
    let (dir, model) = scratch("foreign");
    let c = dir.join("c");
    drop(load(&model, PackedCache::Dir(c.clone())));
    let f = cache_file(&c);
    // Another variant's name, same length, with a valid checksum.
    forge_header(&f, |b| {
        let at = 58;
        let n = u16::from_le_bytes([b[56], b[57]]) as usize;
        for x in &mut b[at..at + n] {
            *x = b'x';
        }
    });
    expect_rebuilt(&model, &c, "kernel variant");
    // Another format version.
    let f = cache_file(&c);
    forge_header(&f, |b| {
        b[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes())
    });
    expect_rebuilt(&model, &c, "format version");
    // Not a cache file at all.
    fs::write(cache_file(&c), b"hello, this is not a cache file").unwrap();
    expect_rebuilt(&model, &c, "magic");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn an_unwritable_folder_loads_without_the_cache() {
    let (dir, model) = scratch("unwritable");
    let want = logits(&load(&model, PackedCache::Off));
    // A folder under a regular file cannot be created, even by root.
    let blocker = dir.join("file");
    fs::write(&blocker, b"x").unwrap();
    let m = load(&model, PackedCache::Dir(blocker.join("cache")));
    let r = m.load_report();
    assert_eq!(r.cache, CacheStatus::Failed, "{r:?}");
    assert_eq!(r.mapped_tensors, 0);
    assert!(r.packed_tensors > 0);
    assert_eq!(r.messages.len(), 1);
    assert!(r.messages[0].contains("without the cache"), "{r:?}");
    assert_eq!(logits(&m), want);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_dead_writers_temporary_file_is_swept() {
    let (dir, model) = scratch("sweep");
    let c = dir.join("c");
    fs::create_dir_all(&c).unwrap();
    let stale = c.join(".x.generic-packed.owlpack.999999.0.tmp");
    fs::write(&stale, b"partial").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    // A live writer's file (locked) is left alone.
    let live = c.join(".y.generic-packed.owlpack.999999.1.tmp");
    fs::write(&live, b"partial").unwrap();
    let held = fs::File::options().write(true).open(&live).unwrap();
    held.set_modified(old).unwrap();
    held.lock().unwrap();
    let m = load(&model, PackedCache::Dir(c.clone()));
    assert_eq!(m.load_report().cache, CacheStatus::Written);
    assert!(!stale.exists());
    assert!(live.exists());
    drop(held);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_variant_without_packing_never_touches_the_folder() {
    let (dir, model) = scratch("nopack");
    let c = dir.join("c");
    let m = Model::load_with_options(
        &model,
        &LoadOptions {
            kernels: Some(&kernels::GENERIC),
            packed_cache: PackedCache::Dir(c.clone()),
        },
    )
    .unwrap();
    assert_eq!(m.load_report().cache, CacheStatus::Unused);
    assert!(!c.exists());
    let _ = fs::remove_dir_all(&dir);
}

/// Loads racing on an empty folder each write their own temporary file and rename it: all
/// succeed with the same logits, a later load hits, and no temporary file is left.
#[test]
fn concurrent_first_loads_never_tear_the_file() {
    let (dir, model) = scratch("race");
    let c = dir.join("c");
    let want = logits(&load(&model, PackedCache::Off));
    let got: Vec<Vec<u32>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| logits(&load(&model, PackedCache::Dir(c.clone())))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(got.iter().all(|g| *g == want));
    let m = load(&model, PackedCache::Dir(c.clone()));
    assert_eq!(m.load_report().cache, CacheStatus::Hit);
    assert_eq!(fs::read_dir(&c).unwrap().count(), 1);
    let _ = fs::remove_dir_all(&dir);
}
