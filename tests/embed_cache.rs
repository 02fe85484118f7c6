//! The image-embedding cache on the demo model: an image seen before is not re-encoded (in
//! memory, and across "runs" through a folder), hits give the embedding bitwise, keys tell
//! modes and models apart, damaged entries are detected and rewritten, concurrent writers never
//! leave a torn file, and the folder stays under its cap, least recently used first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use owlet::embed_cache::{self, EmbedCache, EmbedKey, Hit};
use owlet::image::{self, AspectMode, ImageLimits, RgbImage};
use owlet::model::Model;
use owlet::session::{Session, SessionOptions};

#[path = "common/scratch.rs"]
mod scratch;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn scratch(name: &str) -> PathBuf {
    scratch::run_dir(env!("CARGO_TARGET_TMPDIR"), "owlet-embcache", Some(name))
}

fn model() -> Model {
    Model::load(&repo("models/owl2-tiny-a-f16.gguf")).unwrap()
}

fn coffee() -> RgbImage {
    image::load(
        &repo("tests/data/assets/coffee.png"),
        &ImageLimits::default(),
    )
    .unwrap()
}

fn session<'m>(m: &'m Model, cache: Option<Arc<EmbedCache>>) -> Session<'m> {
    let mut s = Session::new(
        m,
        SessionOptions {
            threads: 2,
            ..SessionOptions::default()
        },
    )
    .unwrap();
    s.set_embed_cache(cache);
    s
}

/// The embedding computed with no cache at all.
fn uncached(m: &Model, img: &RgbImage) -> Vec<f32> {
    session(m, None).embed_image(img, None).unwrap().rows
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn a_repeated_image_is_not_re_encoded_in_a_process() {
    let m = model();
    let img = coffee();
    let want = uncached(&m, &img);
    let c = Arc::new(EmbedCache::memory(64 << 20));
    let a = session(&m, Some(Arc::clone(&c)));
    assert_eq!(a.embed_image(&img, None).unwrap().rows, want);
    assert_eq!((c.stats().misses, c.stats().memory_hits), (1, 0));
    // Again, and from another session sharing the cache: hits, bitwise the same rows.
    assert_eq!(a.embed_image(&img, None).unwrap().rows, want);
    let b = session(&m, Some(Arc::clone(&c)));
    assert_eq!(b.embed_image(&img, None).unwrap().rows, want);
    assert_eq!((c.stats().misses, c.stats().memory_hits), (1, 2));
    // Another preprocessing mode is another key.
    b.embed_image(&img, Some(AspectMode::Crop)).unwrap();
    assert_eq!(c.stats().misses, 2);
    // Sessions start with the process-wide cache.
    let d = session(&m, Some(EmbedCache::process()));
    let fresh = Session::new(&m, SessionOptions::default()).unwrap();
    assert!(Arc::ptr_eq(
        fresh.embed_cache().unwrap(),
        d.embed_cache().unwrap()
    ));
}

#[test]
fn keys_separate_pixels_modes_and_models() {
    let m = model();
    let id = embed_cache::vision_identity(&m);
    assert_eq!(
        id,
        embed_cache::vision_identity(&model()),
        "stable per file"
    );
    let px = vec![0.5f32; 12];
    let k = EmbedKey::new(&id, "pad", 2, &px);
    assert_eq!(k, EmbedKey::new(&id, "pad", 2, &px));
    assert_ne!(k, EmbedKey::new(&id, "resize", 2, &px));
    let mut other = px.clone();
    other[11] = 0.25;
    assert_ne!(k, EmbedKey::new(&id, "pad", 2, &other));
    let mut id2 = id;
    id2[0] ^= 1;
    assert_ne!(k, EmbedKey::new(&id2, "pad", 2, &px));
}

#[test]
fn a_folder_keeps_embeddings_across_runs_and_rewrites_damaged_ones() {
    let m = model();
    let img = coffee();
    let want = uncached(&m, &img);
    let dir = scratch("runs");
    let run = || -> (Vec<f32>, embed_cache::CacheStats) {
        // A fresh cache object: memory empty, as in a new process.
        let c = Arc::new(EmbedCache::with_dir(64 << 20, &dir, 1 << 30).unwrap());
        let rows = session(&m, Some(Arc::clone(&c)))
            .embed_image(&img, None)
            .unwrap()
            .rows;
        (rows, c.stats())
    };
    let (rows, st) = run();
    assert_eq!(rows, want);
    assert_eq!((st.misses, st.disk_writes), (1, 1));
    let files = entries(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].extension().unwrap() == "emb");
    let good = std::fs::read(&files[0]).unwrap();

    let (rows, st) = run();
    assert_eq!(rows, want);
    assert_eq!((st.disk_hits, st.misses, st.disk_writes), (1, 0, 0));

    // A flipped bit in the payload, a truncated file, an empty file, a flipped checksum byte:
    // each is detected, ignored (the embedding is recomputed) and rewritten whole.
    let n = good.len();
    let damaged: Vec<Vec<u8>> = vec![
        {
            let mut b = good.clone();
            b[n / 2] ^= 0x10;
            b
        },
        good[..n - 100].to_vec(),
        Vec::new(),
        {
            let mut b = good.clone();
            b[n - 1] ^= 1;
            b
        },
    ];
    for bad in damaged {
        std::fs::write(&files[0], &bad).unwrap();
        let (rows, st) = run();
        assert_eq!(rows, want);
        assert_eq!((st.corrupt, st.misses, st.disk_writes), (1, 1, 1));
        assert_eq!(std::fs::read(&files[0]).unwrap(), good, "rewritten");
    }
}

#[test]
fn concurrent_writers_never_leave_a_torn_entry() {
    let dir = scratch("race");
    let key = EmbedKey([7; 32]);
    let rows: Arc<Vec<f32>> = Arc::new((0..300_000).map(|i| i as f32).collect());
    let writing = std::sync::atomic::AtomicUsize::new(3);
    std::thread::scope(|s| {
        // Writers: separate cache objects (as separate processes would have).
        for _ in 0..3 {
            let (dir, rows, writing) = (&dir, Arc::clone(&rows), &writing);
            s.spawn(move || {
                let c = EmbedCache::with_dir(0, dir, 1 << 30).unwrap();
                for _ in 0..15 {
                    c.put(&key, Arc::clone(&rows));
                }
                writing.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        // Readers, as long as anyone writes: whenever the entry exists it is whole.
        for _ in 0..2 {
            let (dir, rows, writing) = (&dir, Arc::clone(&rows), &writing);
            s.spawn(move || {
                let c = EmbedCache::with_dir(0, dir, 1 << 30).unwrap();
                let mut seen = 0;
                while writing.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                    if let Some((r, hit)) = c.get(&key, rows.len()) {
                        assert_eq!(hit, Hit::Disk);
                        assert!(r[..] == rows[..]);
                        seen += 1;
                    }
                }
                assert_eq!(
                    c.stats().corrupt,
                    0,
                    "a reader saw a torn entry ({seen} whole)"
                );
            });
        }
    });
    let files = entries(&dir);
    assert_eq!(files.len(), 1, "no temporary files left: {files:?}");
    let c = EmbedCache::with_dir(0, &dir, 1 << 30).unwrap();
    assert!(c.get(&key, rows.len()).is_some());
}

#[test]
fn two_processes_share_a_folder() {
    let dir = scratch("procs");
    let d = dir.to_str().unwrap().to_string();
    let png = repo("tests/data/assets/coffee.png");
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_owlet"))
            .args([
                "run",
                "-n",
                "1",
                "-t",
                "1",
                "--embed-cache",
                &d,
                "-p",
                "Hi",
                "--image",
            ])
            .arg(&png)
            .arg("-m")
            .arg(repo("models/owl2-tiny-a-f16.gguf"))
            .output()
            .unwrap()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.status.success() && b.status.success());
    assert_eq!(a.stdout, b.stdout);
    let files = entries(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    // The entry is whole and holds what the library computes.
    let m = model();
    let c = Arc::new(EmbedCache::with_dir(0, &dir, 1 << 30).unwrap());
    let rows = session(&m, Some(Arc::clone(&c)))
        .embed_image(&coffee(), None)
        .unwrap()
        .rows;
    assert_eq!(c.stats().disk_hits, 1);
    assert_eq!(rows, uncached(&m, &coffee()));
}

#[test]
fn the_folder_stays_under_its_cap_least_recently_used_first() {
    let dir = scratch("lru");
    let rows = Arc::new(vec![1.0f32; 1000]); // each entry ~4 KiB
    let key = |i: u8| EmbedKey([i; 32]);
    let entry = 8 + 4 + 8 + 32 + 4000 + 32;
    let c = EmbedCache::with_dir(0, &dir, 3 * entry as u64).unwrap();
    let pause = || std::thread::sleep(std::time::Duration::from_millis(30));
    for i in 0..3 {
        c.put(&key(i), Arc::clone(&rows));
        pause();
    }
    assert_eq!(entries(&dir).len(), 3);
    assert!(c.get(&key(0), 1000).is_some()); // 0 becomes the most recently used
    pause();
    c.put(&key(3), Arc::clone(&rows)); // over the cap: 1 goes
    let names: Vec<String> = entries(&dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy()[..2].to_string())
        .collect();
    assert_eq!(names, ["00", "02", "03"]);
}

#[test]
fn the_default_folder_follows_xdg() {
    // Only reads the variables; the CLI passes the result to EmbedCache::shared_dir.
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        assert_eq!(
            embed_cache::default_dir().unwrap(),
            PathBuf::from(x).join("owlet/embeddings")
        );
    } else if let Some(h) = std::env::var_os("HOME") {
        assert_eq!(
            embed_cache::default_dir().unwrap(),
            PathBuf::from(h).join(".cache/owlet/embeddings")
        );
    }
}
