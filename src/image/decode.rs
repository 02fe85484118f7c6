//! Decoding: PNG or JPEG bytes (or a file) to an 8-bit [`RgbImage`], with the size limits
//! checked before any pixel is decoded, the EXIF orientation applied or ignored, and other
//! pixel formats converted the way Pillow's `convert('RGB')` does.

use std::fmt;
use std::io::Cursor;
use std::path::Path;
use std::str::FromStr;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat};

use super::{rgb_len, ImageLimits, RgbImage};
use crate::error::{bail_kind, err, Error, ErrorKind, Result};

/// Decodes PNG or JPEG bytes into 8-bit RGB.
///
/// The format is sniffed from the magic bytes (anything else is refused with the format's name
/// when it is recognisable). The dimensions are read from the header and checked against
/// `limits` before any pixel is decoded; the decoder itself also runs under the same limits.
/// Grayscale, palette, alpha and 16-bit images become 8-bit RGB the way Pillow's
/// `convert('RGB')` does it: alpha is dropped (no premultiplication, no blending), gray is
/// replicated, 16-bit samples keep their high byte (Pillow's `RGB;16B` unpacking). The EXIF
/// orientation (JPEG `APP1`, PNG `eXIf`) is applied: the pixels come out as photo viewers show
/// them ([`ExifOrientation::Apply`]; see [`decode_with`] for upstream's behaviour).
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage> {
    decode_with(bytes, limits, ExifOrientation::Apply)
}

/// [`decode`] with a choice of what to do with the EXIF orientation.
pub fn decode_with(bytes: &[u8], limits: &ImageLimits, exif: ExifOrientation) -> Result<RgbImage> {
    if bytes.is_empty() {
        bail_kind!(BadImage, "image data is empty");
    }
    if bytes.len() as u64 > limits.max_file_bytes {
        bail_kind!(
            BadImage,
            "image data is {} bytes, more than the limit of {} bytes",
            bytes.len(),
            limits.max_file_bytes
        );
    }
    let format = sniff_format(bytes)?;
    let name = format_name(format);
    if let Some((w, h)) = header_dimensions(bytes, format) {
        check_dimensions(w, h, limits, name)?;
        if format == ImageFormat::Png {
            check_png_size_floor(bytes, w, h)?;
        }
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(decoder_limits(limits));
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| decode_error(name, limits, e))?;
    let (w, h) = decoder.dimensions();
    check_dimensions(w, h, limits, name)?;
    // A malformed EXIF block is no reason to refuse the pixels: it counts as no orientation,
    // as in photo viewers.
    let orientation = match exif {
        ExifOrientation::Apply => decoder.orientation().unwrap_or(Orientation::NoTransforms),
        ExifOrientation::Ignore => Orientation::NoTransforms,
    };
    let img = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(name, limits, e))?;
    Ok(orient(dynamic_to_rgb(img), orientation))
}

/// What decoding does with the orientation recorded in a photo's EXIF data (phones store
/// pixels as the sensor saw them and record the rotation there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExifOrientation {
    /// Rotate and flip the pixels as the EXIF orientation says: the image the user sees.
    #[default]
    Apply,
    /// Keep the pixels as stored, as upstream's scripts do (they open images with Pillow and
    /// never call `ImageOps.exif_transpose`): upstream-exact inputs for sideways photos.
    Ignore,
}

impl ExifOrientation {
    /// The lower-case name (`apply`, `ignore`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExifOrientation::Apply => "apply",
            ExifOrientation::Ignore => "ignore",
        }
    }
}

impl fmt::Display for ExifOrientation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExifOrientation {
    type Err = Error;

    /// Parses `apply` or `ignore`, ignoring ASCII case and surrounding white space.
    fn from_str(s: &str) -> Result<ExifOrientation> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("apply") {
            Ok(ExifOrientation::Apply)
        } else if t.eq_ignore_ascii_case("ignore") {
            Ok(ExifOrientation::Ignore)
        } else {
            Err(err(
                ErrorKind::InvalidArgument,
                format!("unknown EXIF orientation handling {s:?}: expected apply or ignore"),
            ))
        }
    }
}

/// `img` rotated and flipped as the EXIF orientation `o` says. Each output pixel `(x, y)` is
/// read from the source pixel that the transform maps there; the four transposing orientations
/// swap width and height.
fn orient(img: RgbImage, o: Orientation) -> RgbImage {
    use Orientation as O;
    if o == O::NoTransforms || !img.is_valid() {
        return img;
    }
    let (w, h) = (img.width as usize, img.height as usize);
    let transposed = matches!(
        o,
        O::Rotate90 | O::Rotate270 | O::Rotate90FlipH | O::Rotate270FlipH
    );
    let (ow, oh) = if transposed { (h, w) } else { (w, h) };
    let mut data = Vec::with_capacity(img.data.len());
    for y in 0..oh {
        for x in 0..ow {
            let (sx, sy) = match o {
                O::NoTransforms => (x, y),
                O::FlipHorizontal => (w - 1 - x, y),
                O::FlipVertical => (x, h - 1 - y),
                O::Rotate180 => (w - 1 - x, h - 1 - y),
                // Clockwise: the source's left column becomes the top row.
                O::Rotate90 => (y, h - 1 - x),
                O::Rotate270 => (w - 1 - y, x),
                // EXIF 5 (transpose) and 7 (transverse).
                O::Rotate90FlipH => (y, x),
                O::Rotate270FlipH => (w - 1 - y, h - 1 - x),
            };
            let i = (sy * w + sx) * 3;
            data.extend_from_slice(&img.data[i..i + 3]);
        }
    }
    RgbImage {
        width: ow as u32,
        height: oh as u32,
        data,
    }
}

/// Reads and decodes an image file (see [`decode`]; the EXIF orientation is applied). Errors
/// name the path; a file larger than `limits.max_file_bytes` is refused before it is read.
pub fn load(path: &Path, limits: &ImageLimits) -> Result<RgbImage> {
    load_with(path, limits, ExifOrientation::Apply)
}

/// [`load`] with a choice of what to do with the EXIF orientation.
pub fn load_with(path: &Path, limits: &ImageLimits, exif: ExifOrientation) -> Result<RgbImage> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| err(ErrorKind::Io, format!("cannot read image {shown}: {e}")))?;
    if meta.len() > limits.max_file_bytes {
        bail_kind!(
            BadImage,
            "image {shown}: file is {} bytes, more than the limit of {} bytes",
            meta.len(),
            limits.max_file_bytes
        );
    }
    let bytes = std::fs::read(path)
        .map_err(|e| err(ErrorKind::Io, format!("cannot read image {shown}: {e}")))?;
    decode_with(&bytes, limits, exif)
        .map_err(|e| err(e.kind(), format!("image {shown}: {}", e.message())))
}

/// Copies a tightly packed RGB buffer (`width * height * 3` bytes, HWC) into an image.
pub fn from_rgb(width: u32, height: u32, data: &[u8]) -> Result<RgbImage> {
    if width == 0 || height == 0 {
        bail_kind!(BadImage, "RGB buffer has zero size ({width}x{height})");
    }
    let Some(need) = rgb_len(width, height, 3) else {
        bail_kind!(
            BadImage,
            "RGB buffer of {width}x{height} pixels is too large"
        );
    };
    if data.len() != need {
        bail_kind!(
            BadImage,
            "RGB buffer of {width}x{height} needs {need} bytes, got {}",
            data.len()
        );
    }
    Ok(RgbImage {
        width,
        height,
        data: data.to_vec(),
    })
}

/// Copies an RGBA buffer whose rows are `stride` bytes apart (`stride >= width * 4`) into an
/// RGB image, dropping alpha (no premultiplication, like Pillow's `convert('RGB')`). The last
/// row needs only `width * 4` bytes, so `data.len() >= stride * (height - 1) + width * 4`.
pub fn from_rgba(width: u32, height: u32, stride: usize, data: &[u8]) -> Result<RgbImage> {
    if width == 0 || height == 0 {
        bail_kind!(BadImage, "RGBA buffer has zero size ({width}x{height})");
    }
    let Some(row_bytes) = (width as usize).checked_mul(4) else {
        bail_kind!(
            BadImage,
            "RGBA buffer of {width}x{height} pixels is too large"
        );
    };
    if stride < row_bytes {
        bail_kind!(
            BadImage,
            "RGBA stride {stride} is smaller than a row of {width} pixels ({row_bytes} bytes)"
        );
    }
    let need = stride
        .checked_mul(height as usize - 1)
        .and_then(|n| n.checked_add(row_bytes));
    let (Some(need), Some(out_len)) = (need, rgb_len(width, height, 3)) else {
        bail_kind!(
            BadImage,
            "RGBA buffer of {width}x{height} pixels is too large"
        );
    };
    if data.len() < need {
        bail_kind!(
            BadImage,
            "RGBA buffer of {width}x{height} with stride {stride} needs {need} bytes, got {}",
            data.len()
        );
    }
    let mut out = Vec::with_capacity(out_len);
    for y in 0..height as usize {
        let row = &data[y * stride..y * stride + row_bytes];
        for p in row.chunks_exact(4) {
            out.extend_from_slice(&p[..3]);
        }
    }
    Ok(RgbImage {
        width,
        height,
        data: out,
    })
}

/// Recognises PNG and JPEG by their magic bytes; names other common formats in the error.
fn sniff_format(b: &[u8]) -> Result<ImageFormat> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(ImageFormat::Png);
    }
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(ImageFormat::Jpeg);
    }
    let other = if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        Some("GIF")
    } else if b.starts_with(b"BM") {
        Some("BMP")
    } else if b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WEBP") {
        Some("WebP")
    } else if b.starts_with(b"II*\0") || b.starts_with(b"MM\0*") {
        Some("TIFF")
    } else if b.get(4..8) == Some(b"ftyp") {
        Some("HEIF/AVIF")
    } else if b.starts_with(&[0, 0, 1, 0]) {
        Some("ICO")
    } else if b.starts_with(b"qoif") {
        Some("QOI")
    } else if b.starts_with(b"8BPS") {
        Some("PSD")
    } else if b.starts_with(b"%PDF") {
        Some("PDF")
    } else if b.starts_with(&[0xFF, 0x0A]) || b.starts_with(b"\0\0\0\x0cJXL ") {
        Some("JPEG XL")
    } else if b.starts_with(b"\0\0\0\x0cjP  ") {
        Some("JPEG 2000")
    } else if b.starts_with(&[0x76, 0x2F, 0x31, 0x01]) {
        Some("OpenEXR")
    } else if b.starts_with(b"#?RADIANCE") || b.starts_with(b"#?RGBE") {
        Some("Radiance HDR")
    } else if b.starts_with(b"DDS ") {
        Some("DDS")
    } else if b.starts_with(b"farbfeld") {
        Some("farbfeld")
    } else if b.len() >= 3
        && b[0] == b'P'
        && (b'1'..=b'7').contains(&b[1])
        && b[2].is_ascii_whitespace()
    {
        Some("PNM")
    } else if b.starts_with(b"<?xml") || b.starts_with(b"<svg") {
        Some("SVG/XML")
    } else {
        None
    };
    match other {
        Some(name) => {
            bail_kind!(
                BadImage,
                "{name} images are not supported: only PNG and JPEG are"
            )
        }
        None => {
            let head: Vec<String> = b.iter().take(8).map(|x| format!("{x:02x}")).collect();
            bail_kind!(
                BadImage,
                "unrecognised image data (first bytes {}): only PNG and JPEG are supported",
                head.join(" ")
            )
        }
    }
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        _ => "image",
    }
}

/// Width and height as the file header states them, without decoding: PNG's IHDR (which must
/// be the first chunk) or JPEG's first start-of-frame marker. `None` when the header cannot be
/// found; the decoder then reports the problem.
fn header_dimensions(b: &[u8], format: ImageFormat) -> Option<(u32, u32)> {
    let be16 = |i: usize| -> Option<u32> {
        Some(u32::from(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?])))
    };
    let be32 =
        |i: usize| -> Option<u32> { Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?)) };
    match format {
        ImageFormat::Png => {
            if b.get(12..16) != Some(b"IHDR") {
                return None;
            }
            Some((be32(16)?, be32(20)?))
        }
        ImageFormat::Jpeg => {
            // Walk the marker segments after SOI (FF D8) up to the first SOFn.
            let mut i = 2;
            loop {
                if *b.get(i)? != 0xFF {
                    return None;
                }
                let mut marker = *b.get(i + 1)?;
                // Fill bytes: any number of 0xFF before the marker code.
                while marker == 0xFF {
                    i += 1;
                    marker = *b.get(i + 1)?;
                }
                i += 2;
                match marker {
                    // Standalone markers: no length.
                    0x01 | 0xD0..=0xD8 => continue,
                    // End of image or start of scan before any frame header.
                    0xD9 | 0xDA => return None,
                    // SOF0..SOF15 except DHT (C4), JPG (C8), DAC (CC).
                    0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                        // length(2) precision(1) height(2) width(2)
                        return Some((be16(i + 5)?, be16(i + 3)?));
                    }
                    _ => {
                        let len = be16(i)? as usize;
                        if len < 2 {
                            return None;
                        }
                        i += len;
                    }
                }
            }
        }
        _ => None,
    }
}

/// Refuses zero-sized images and images over the limits.
/// Deflate cannot compress better than about 1032:1 (258-byte matches in ~2 bits), so a PNG
/// whose whole file is smaller than 1/1032 of its filtered pixel data cannot be complete. The
/// decoder allocates the full output before reading IDAT, so without this a 100-byte file
/// declaring 8192×8192 16-bit RGBA (within the pixel budget) costs a 512 MiB allocation.
fn check_png_size_floor(b: &[u8], w: u32, h: u32) -> Result<()> {
    let (Some(&depth), Some(&color)) = (b.get(24), b.get(25)) else {
        return Ok(()); // a truncated IHDR: the decoder reports it
    };
    let channels: u64 = match color {
        0 | 3 => 1,
        4 => 2,
        2 => 3,
        6 => 4,
        _ => return Ok(()), // invalid: the decoder reports it
    };
    let row_bits = u64::from(w) * channels * u64::from(depth);
    let raw = u64::from(h) * (1 + row_bits.div_ceil(8));
    let floor = raw / 1032;
    if (b.len() as u64) < floor {
        bail_kind!(
            BadImage,
            "PNG file of {} bytes is too small for its {w}x{h} pixels (needs at least {floor} \
             bytes even at deflate's best ratio): truncated or a decompression bomb",
            b.len()
        );
    }
    Ok(())
}

fn check_dimensions(w: u32, h: u32, limits: &ImageLimits, name: &str) -> Result<()> {
    if w == 0 || h == 0 {
        bail_kind!(BadImage, "{name} image has zero size ({w}x{h})");
    }
    if w > limits.max_width || h > limits.max_height {
        bail_kind!(
            BadImage,
            "{name} image is {w}x{h} pixels, larger than the limit of {}x{}",
            limits.max_width,
            limits.max_height
        );
    }
    let px = u64::from(w) * u64::from(h);
    if px > limits.max_pixels {
        bail_kind!(
            BadImage,
            "{name} image is {w}x{h} = {px} pixels, more than the limit of {} pixels",
            limits.max_pixels
        );
    }
    Ok(())
}

/// The `image` crate's limits matching ours: the decoded buffer may take up to 8 bytes a pixel
/// (16-bit RGBA), plus some room for the decoder's own tables.
fn decoder_limits(limits: &ImageLimits) -> image::Limits {
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_width);
    l.max_image_height = Some(limits.max_height);
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    l
}

fn decode_error(name: &str, limits: &ImageLimits, e: image::ImageError) -> Error {
    // Decoder messages may span lines (some JPEG errors end with '\n'); ours are one line.
    let msg = e
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match e {
        image::ImageError::Limits(_) => err(
            ErrorKind::BadImage,
            format!(
                "{name} image exceeds the decoding limits ({}x{}, {} pixels): {msg}",
                limits.max_width, limits.max_height, limits.max_pixels
            ),
        ),
        image::ImageError::IoError(ref io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            err(
                ErrorKind::BadImage,
                format!("{name} image is truncated: {msg}"),
            )
        }
        _ => err(
            ErrorKind::BadImage,
            format!("cannot decode {name} image: {msg}"),
        ),
    }
}

/// Converts whatever the decoder produced to 8-bit RGB, Pillow style (see [`decode`]).
fn dynamic_to_rgb(img: DynamicImage) -> RgbImage {
    let (width, height) = (img.width(), img.height());
    let data = match img {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageRgba8(b) => b.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        DynamicImage::ImageLuma8(b) => b.iter().flat_map(|&v| [v, v, v]).collect(),
        DynamicImage::ImageLumaA8(b) => b.chunks_exact(2).flat_map(|p| [p[0]; 3]).collect(),
        DynamicImage::ImageRgb16(b) => b.iter().map(|&v| (v >> 8) as u8).collect(),
        DynamicImage::ImageRgba16(b) => b
            .chunks_exact(4)
            .flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
            .collect(),
        DynamicImage::ImageLuma16(b) => b.iter().flat_map(|&v| [(v >> 8) as u8; 3]).collect(),
        DynamicImage::ImageLumaA16(b) => b
            .chunks_exact(2)
            .flat_map(|p| [(p[0] >> 8) as u8; 3])
            .collect(),
        // Float images never come out of the PNG/JPEG decoders; convert generically.
        other => other.to_rgb8().into_raw(),
    };
    RgbImage {
        width,
        height,
        data,
    }
}
