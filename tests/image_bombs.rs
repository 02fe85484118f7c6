//! Decompression bombs and absurd dimensions: refused from the header before pixel memory is
//! allocated, measured with a counting allocator (peak extra heap < 64 MiB); and degenerate
//! 1×1 / 1×10000 *files* (not just buffers, see `tests/image_preprocess.rs`) decoded and
//! preprocessed in every aspect mode.

use std::time::{Duration, Instant};

use owlet::image::{decode, preprocess, AspectMode, ImageLimits, Preprocess};

// ------------------------------------------------------------------ counting allocator

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::peak_extra;

const BOMB_HEAP: usize = 64 << 20;

/// Decodes under the default limits; must fail with `want`, within the heap and time budget.
#[track_caller]
fn refused(label: &str, bytes: &[u8], want: &str) {
    let t = Instant::now();
    let (r, extra) = peak_extra(|| decode(bytes, &ImageLimits::default()));
    let took = t.elapsed();
    match r {
        Ok(img) => panic!("{label}: decoded {}x{}", img.width, img.height),
        Err(e) => assert!(e.message().contains(want), "{label}: {e} lacks {want:?}"),
    }
    assert!(extra < BOMB_HEAP, "{label}: peak extra heap {extra} B");
    assert!(took < Duration::from_secs(2), "{label}: took {took:?}");
}

// ------------------------------------------------------------------ PNG by hand

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], body: &[u8]) {
    out.extend((body.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend(kind);
    out.extend(body);
    let crc = crc32(&out[start..]);
    out.extend(crc.to_be_bytes());
}

/// Signature + IHDR (`depth` bits, colour type `ct`) + one IDAT with `zlib` + IEND.
fn png(w: u32, h: u32, depth: u8, ct: u8, zlib: &[u8]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([depth, ct, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", zlib);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// LSB-first bit writer for a raw deflate stream.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u32, bits: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }
    /// A fixed-Huffman code (`bits` long, most significant bit first in the stream).
    fn code(&mut self, code: u32, bits: u32) {
        let rev = code.reverse_bits() >> (32 - bits);
        self.put(rev, bits);
    }
    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// A zlib stream that inflates to `n` zero bytes (n ≥ 1): one literal 0, then back-references
/// of length 258 at distance 1 (13 bits each with the fixed Huffman table), so about
/// n / 160 bytes of output. The Adler-32 is not computed (decoders stop long before it).
fn zlib_zeros(n: u64) -> Vec<u8> {
    let mut b = Bits::default();
    b.put(1, 1); // BFINAL
    b.put(1, 2); // BTYPE = fixed Huffman
    b.code(0b0011_0000, 8); // literal 0
    let mut left = n - 1;
    while left >= 258 {
        b.code(0b1100_0101, 8); // length symbol 285 = 258
        b.code(0, 5); // distance code 0 = 1
        left -= 258;
    }
    for _ in 0..left {
        b.code(0b0011_0000, 8);
    }
    b.code(0, 7); // end of block (symbol 256)
    let mut z = vec![0x78, 0x01];
    z.extend(b.finish());
    z.extend([0, 0, 0, 0]);
    z
}

// ------------------------------------------------------------------ bombs

#[test]
fn zlib_bomb_png_of_20000_squared_is_refused_from_the_header() {
    // 20000 rows of (filter byte + 60000 zero bytes): 1.2 GB inflated from ~7.5 MB.
    let raw = 20_000u64 * (1 + 20_000 * 3);
    let bomb = png(20_000, 20_000, 8, 2, &zlib_zeros(raw));
    assert!(bomb.len() < 10 << 20, "{} bytes", bomb.len());
    refused("zlib bomb 20000x20000", &bomb, "20000x20000");
}

#[test]
fn header_only_bombs_are_refused_before_pixel_allocation() {
    let empty = zlib_zeros(1);
    refused(
        "PNG IHDR 65535x65535",
        &png(65_535, 65_535, 8, 2, &empty),
        "65535x65535",
    );
    refused(
        "PNG IHDR 2^31 wide",
        &png(1 << 31, 1, 8, 2, &empty),
        "2147483648x1",
    );
    // Within the side limits and the pixel budget, but a ~100-byte file cannot hold the
    // 512 MiB of 16-bit RGBA it declares: deflate cannot compress better than 1032:1.
    refused(
        "PNG 16-bit RGBA 8192x8192 header only",
        &png(8192, 8192, 16, 6, &empty),
        "too small",
    );
    refused(
        "PNG 8-bit RGB 8000x8000 header only",
        &png(8000, 8000, 8, 2, &empty),
        "too small",
    );
    // JPEG: SOI, SOF0 claiming 65500x65500 (one component), EOI.
    let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x0B, 0x08];
    jpeg.extend(65_500u16.to_be_bytes());
    jpeg.extend(65_500u16.to_be_bytes());
    jpeg.extend([0x01, 0x01, 0x11, 0x00, 0xFF, 0xD9]);
    refused("JPEG SOF 65500x65500", &jpeg, "65500x65500");
    // The same behind an APP0 segment and fill bytes.
    let mut padded = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00, 0xFF, 0xFF];
    padded.extend(&jpeg[2..]);
    refused("JPEG SOF behind APP0", &padded, "65500x65500");
    // Progressive SOF2.
    let mut prog = jpeg.clone();
    prog[3] = 0xC2;
    refused("JPEG SOF2 65500x65500", &prog, "65500x65500");
}

#[test]
fn a_bomb_under_small_declared_dimensions_inflates_only_what_it_needs() {
    // 64x64 RGB declared, 1.2 GB of zeros in the IDAT: the decoder stops after the 12,352
    // bytes it needs (or refuses the excess); either way memory stays small.
    let bomb = png(64, 64, 8, 2, &zlib_zeros(1_200_000_000));
    let (r, extra) = peak_extra(|| decode(&bomb, &ImageLimits::default()));
    if let Ok(img) = r {
        assert_eq!((img.width, img.height), (64, 64));
    }
    assert!(extra < BOMB_HEAP, "peak extra heap {extra}");
}

// ------------------------------------------------------------------ degenerate files

fn encode(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

#[test]
fn one_pixel_and_one_by_10000_files_work_in_every_mode() {
    for (w, h) in [(1u32, 1u32), (1, 10_000), (10_000, 1)] {
        let buf = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 251) as u8, (y % 241) as u8, 7])
        });
        for format in [image::ImageFormat::Png, image::ImageFormat::Jpeg] {
            let bytes = encode(image::DynamicImage::ImageRgb8(buf.clone()), format);
            let img = decode(&bytes, &ImageLimits::default())
                .unwrap_or_else(|e| panic!("{w}x{h} {format:?}: {e}"));
            assert_eq!((img.width, img.height), (w, h));
            for mode in [AspectMode::Resize, AspectMode::Pad, AspectMode::Crop] {
                let v = preprocess(&img, &Preprocess::clip(32, mode));
                assert_eq!(v.len(), 3 * 32 * 32, "{w}x{h} {format:?} {mode}");
                assert!(v.iter().all(|x| x.is_finite()));
            }
        }
    }
}

#[test]
fn legitimately_flat_pngs_pass_the_size_floor() {
    // A real encoder's output for a flat 2000x2000 image is far above 1/1032 of its raw size.
    let flat = image::RgbImage::from_pixel(2000, 2000, image::Rgb([5, 5, 5]));
    let bytes = encode(
        image::DynamicImage::ImageRgb8(flat),
        image::ImageFormat::Png,
    );
    let img = decode(&bytes, &ImageLimits::default()).unwrap();
    assert_eq!((img.width, img.height), (2000, 2000));
}
