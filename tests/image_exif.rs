//! EXIF orientation: photos are decoded as viewers show them by default, and as stored with
//! `ExifOrientation::Ignore` (upstream-exact). The JPEGs are made here: a 48×32 image of six
//! 16×16 cells of distinct colours (one chroma block each, so that the colours survive JPEG),
//! with an `APP1` EXIF segment holding one Orientation tag spliced in after `SOI`.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};
use owlet::image::{decode, decode_with, ExifOrientation, ImageLimits, RgbImage};

const W: usize = 48;
const H: usize = 32;
const CELL: usize = 16;

/// The cell colours, row by row (3 cells a row, 2 rows).
const COLOURS: [[u8; 3]; 6] = [
    [255, 0, 0],
    [0, 255, 0],
    [0, 0, 255],
    [255, 255, 0],
    [255, 0, 255],
    [0, 255, 255],
];

/// The stored pixels: cell (c, r) is `COLOURS[r * 3 + c]`.
fn stored_rgb() -> Vec<u8> {
    let mut data = Vec::with_capacity(W * H * 3);
    for y in 0..H {
        for x in 0..W {
            data.extend_from_slice(&COLOURS[(y / CELL) * 3 + x / CELL]);
        }
    }
    data
}

/// A TIFF structure with one IFD entry, Orientation (0x0112, SHORT) = `o`.
fn tiff_orientation(o: u16, big_endian: bool) -> Vec<u8> {
    let u16b = |v: u16| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u32b = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut t = if big_endian {
        b"MM".to_vec()
    } else {
        b"II".to_vec()
    };
    t.extend(u16b(42));
    t.extend(u32b(8)); // the IFD follows the header
    t.extend(u16b(1)); // one entry
    t.extend(u16b(0x0112));
    t.extend(u16b(3)); // SHORT
    t.extend(u32b(1));
    t.extend(u16b(o));
    t.extend([0, 0]); // the value field's unused half
    t.extend(u32b(0)); // no next IFD
    t
}

/// The test image as a JPEG whose EXIF orientation is `o` (no EXIF at all for `None`).
fn jpeg(o: Option<u16>, big_endian: bool) -> Vec<u8> {
    let mut plain = Vec::new();
    JpegEncoder::new_with_quality(&mut plain, 100)
        .write_image(&stored_rgb(), W as u32, H as u32, ExtendedColorType::Rgb8)
        .unwrap();
    let Some(o) = o else {
        return plain;
    };
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend(tiff_orientation(o, big_endian));
    let mut out = plain[..2].to_vec(); // SOI
    out.extend([0xFF, 0xE1]);
    out.extend((payload.len() as u16 + 2).to_be_bytes());
    out.extend(payload);
    out.extend(&plain[2..]);
    out
}

/// Where EXIF orientation `o` shows the stored image's first row and first column (TIFF 6.0,
/// tag 274): (row 0 on a side, not at the top or bottom; row 0 at the top or left; column 0
/// at the left or top).
fn layout(o: u16) -> (bool, bool, bool) {
    match o {
        1 => (false, true, true),   // row 0 top, column 0 left
        2 => (false, true, false),  // top, right
        3 => (false, false, false), // bottom, right
        4 => (false, false, true),  // bottom, left
        5 => (true, true, true),    // row 0 left, column 0 top
        6 => (true, false, true),   // right, top
        7 => (true, false, false),  // right, bottom
        8 => (true, true, false),   // left, bottom
        _ => unreachable!(),
    }
}

/// Where stored pixel (x, y) is shown under orientation `o`, and the shown size.
fn shown_at(o: u16, x: usize, y: usize) -> (usize, usize) {
    let (sideways, row0_first, col0_first) = layout(o);
    let along_rows = if row0_first { y } else { H - 1 - y };
    let along_cols = if col0_first { x } else { W - 1 - x };
    if sideways {
        (along_rows, along_cols)
    } else {
        (along_cols, along_rows)
    }
}

/// The palette colour nearest to the pixel at (x, y) (JPEG is lossy, the cells are far apart).
fn colour_at(img: &RgbImage, x: usize, y: usize) -> [u8; 3] {
    let i = (y * img.width as usize + x) * 3;
    let px = &img.data[i..i + 3];
    let dist = |c: &[u8; 3]| -> i32 {
        c.iter()
            .zip(px)
            .map(|(&a, &b)| (a as i32 - b as i32).pow(2))
            .sum()
    };
    *COLOURS.iter().min_by_key(|c| dist(c)).unwrap()
}

/// Every cell's centre of the stored image is shown where orientation `o` puts it.
#[track_caller]
fn assert_shown_as(img: &RgbImage, o: u16) {
    let (sideways, _, _) = layout(o);
    let (w, h) = if sideways { (H, W) } else { (W, H) };
    assert_eq!(
        (img.width as usize, img.height as usize),
        (w, h),
        "orientation {o}"
    );
    for r in 0..H / CELL {
        for c in 0..W / CELL {
            let (x, y) = (c * CELL + CELL / 2, r * CELL + CELL / 2);
            let (sx, sy) = shown_at(o, x, y);
            assert_eq!(
                colour_at(img, sx, sy),
                COLOURS[r * 3 + c],
                "orientation {o}: cell ({c}, {r}) shown at ({sx}, {sy})"
            );
        }
    }
}

#[test]
fn every_exif_orientation_is_applied_by_default() {
    let limits = ImageLimits::default();
    for o in 1..=8u16 {
        for big_endian in [false, true] {
            let img = decode(&jpeg(Some(o), big_endian), &limits).unwrap();
            assert_shown_as(&img, o);
            let img =
                decode_with(&jpeg(Some(o), big_endian), &limits, ExifOrientation::Apply).unwrap();
            assert_shown_as(&img, o);
        }
    }
}

#[test]
fn ignore_keeps_the_stored_pixels() {
    let limits = ImageLimits::default();
    let plain = decode(&jpeg(None, false), &limits).unwrap();
    assert_shown_as(&plain, 1);
    for o in 1..=8u16 {
        let img = decode_with(&jpeg(Some(o), false), &limits, ExifOrientation::Ignore).unwrap();
        // The EXIF segment changes no pixel.
        assert_eq!(img, plain, "orientation {o}");
    }
}

#[test]
fn invalid_orientations_leave_the_pixels_as_stored() {
    let limits = ImageLimits::default();
    let plain = decode(&jpeg(None, false), &limits).unwrap();
    for o in [0u16, 9, 255, 0xFFFF] {
        let img = decode(&jpeg(Some(o), false), &limits).unwrap();
        assert_eq!(img, plain, "orientation {o}");
    }
    // A truncated TIFF structure.
    let mut bytes = jpeg(None, false);
    let app1 = [
        0xFF, 0xE1, 0, 12, b'E', b'x', b'i', b'f', 0, 0, b'I', b'I', 42, 0,
    ];
    bytes.splice(2..2, app1);
    assert_eq!(decode(&bytes, &limits).unwrap(), plain);
}

#[test]
fn exif_handling_parses_from_its_names() {
    assert_eq!(
        "apply".parse::<ExifOrientation>().unwrap(),
        ExifOrientation::Apply
    );
    assert_eq!(
        " Ignore ".parse::<ExifOrientation>().unwrap(),
        ExifOrientation::Ignore
    );
    assert_eq!(ExifOrientation::default(), ExifOrientation::Apply);
    let e = "sideways".parse::<ExifOrientation>().unwrap_err();
    assert!(e.to_string().contains("apply or ignore"), "{e}");
}

// ---- the CLI's --exif ----------------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_owlet");

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("owlet-exif-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `owlet pixels` of `image` with `extra` arguments; the .npy bytes.
fn pixels(image: &Path, out: &Path, extra: &[&str]) -> Vec<u8> {
    let o = Command::new(BIN)
        .arg("pixels")
        .arg("--image")
        .arg(image)
        .args(["--size", "32", "--image-mode", "pad", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out).unwrap()
}

#[test]
fn cli_exif_flag() {
    let dir = temp("cli");
    let rotated = dir.join("rotated.jpg");
    std::fs::write(&rotated, jpeg(Some(6), false)).unwrap();
    // The same pixels as the decoder shows them, and as stored, in PNGs (no EXIF).
    let limits = ImageLimits::default();
    let write_png = |name: &str, img: &RgbImage| {
        let p = dir.join(name);
        let mut bytes = Vec::new();
        PngEncoder::new(&mut bytes)
            .write_image(&img.data, img.width, img.height, ExtendedColorType::Rgb8)
            .unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let shown = write_png(
        "shown.png",
        &decode(&jpeg(Some(6), false), &limits).unwrap(),
    );
    let stored = write_png(
        "stored.png",
        &decode_with(&jpeg(Some(6), false), &limits, ExifOrientation::Ignore).unwrap(),
    );
    let out = dir.join("px.npy");
    let default = pixels(&rotated, &out, &[]);
    let applied = pixels(&rotated, &out, &["--exif", "apply"]);
    let ignored = pixels(&rotated, &out, &["--exif", "ignore"]);
    assert!(default == applied, "the default is not apply");
    assert!(
        applied == pixels(&shown, &out, &[]),
        "apply: not the shown pixels"
    );
    assert!(
        ignored == pixels(&stored, &out, &[]),
        "ignore: not the stored pixels"
    );
    assert!(applied != ignored);

    // run, chat and logits take the flag too, and refuse a wrong value naming it.
    for cmd in ["run", "chat", "logits"] {
        let o = Command::new(BIN)
            .args([cmd, "--exif", "sideways"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains("--exif") && err.contains("apply or ignore"),
            "{cmd}: {err}"
        );
    }
    let o = Command::new(BIN)
        .args(["chat", "--exif", "ignore"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
