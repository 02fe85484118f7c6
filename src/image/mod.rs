//! Image input: decoding (PNG and JPEG only, with size limits checked before any pixel is
//! decoded) and mPLUG-Owl2's preprocessing, which reproduces Pillow's bicubic resampler byte for
//! byte (the arithmetic is in `../shared/spec/preprocessing.md`, beside the repository).
//!
//! Decoding applies the EXIF orientation by default (the image as the user sees it); upstream
//! ignores it, which [`ExifOrientation::Ignore`] reproduces.
//!
//! Pipeline, as upstream runs it (transformers 4.31 CLIP processor on top of Pillow):
//! 1. optional squaring ([`AspectMode::Resize`] stretches to `max(W,H)` square, [`AspectMode::Pad`]
//!    pastes on a `max(W,H)` square of `pad_color`, [`AspectMode::Crop`] does nothing);
//! 2. shortest edge to `size` (long edge `int(size * long / short)`), Pillow bicubic;
//! 3. centre crop `size x size`;
//! 4. `u8 * (1/255)` then `(x - mean) / std`, float32, laid out `[3, size, size]` (CHW).
//!
//! Memory: the resampler computes only the output pixels the centre crop keeps and streams the
//! source rows through, so the extreme shortest-edge sizes of very thin images (a 1x10000 image
//! becomes 112x1120000 before the crop) are never materialised. Preprocessing any image needs
//! `O(size^2 + max(W, H))` memory besides the image itself, and gives Pillow's pixels exactly.
//!
//! The code is in two files: `decode.rs` (bytes or a file to an [`RgbImage`]: format sniffing,
//! limits, EXIF orientation, Pillow's `convert('RGB')`) and `resample.rs` (Pillow's bicubic
//! resampler and the preprocessing pipeline above, which streams source rows through it). This
//! file holds the types both share.

use std::fmt;
use std::str::FromStr;

use crate::error::{bail_kind, err, Error, ErrorKind, Result};

mod decode;
mod resample;

pub use decode::{decode, decode_with, from_rgb, from_rgba, load, load_with, ExifOrientation};
pub use resample::{normalize, preprocess, preprocess_u8, resize_bicubic, MAX_STRETCH_SIDE};

/// OpenAI CLIP normalisation mean (RGB), as float32.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP normalisation standard deviation (RGB), as float32. (Spelled as in upstream's
/// `preprocessor_config.json`; the literals round to these float32 values.)
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];
/// The `pad` canvas colour upstream uses: `int(255 * mean)` per channel of [`CLIP_MEAN`].
pub const CLIP_PAD_COLOR: [u8; 3] = [122, 116, 104];

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// An 8-bit RGB image: `data` is `[height, width, 3]` (HWC), row-major, no padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// A `width x height` image filled with one colour.
    pub fn filled(width: u32, height: u32, color: [u8; 3]) -> RgbImage {
        let n = width as usize * height as usize;
        let mut data = Vec::with_capacity(n * 3);
        for _ in 0..n {
            data.extend_from_slice(&color);
        }
        RgbImage {
            width,
            height,
            data,
        }
    }

    /// Checks that the image is non-empty and that `data` holds exactly `width * height * 3`
    /// bytes. Images from [`decode`], [`load`], [`from_rgb`] and [`from_rgba`] always pass.
    /// The preprocessing functions never panic on an image that fails, but treat it as empty
    /// (see [`preprocess_u8`], [`resize_bicubic`], [`normalize`]).
    pub fn validate(&self) -> Result<()> {
        if self.width == 0 || self.height == 0 {
            bail_kind!(BadImage, "image is empty ({}x{})", self.width, self.height);
        }
        match rgb_len(self.width, self.height, 3) {
            Some(n) if n == self.data.len() => Ok(()),
            _ => bail_kind!(
                BadImage,
                "image data holds {} bytes, but {}x{} RGB needs {}",
                self.data.len(),
                self.width,
                self.height,
                self.width as u64 * self.height as u64 * 3
            ),
        }
    }

    /// [`RgbImage::validate`] without the message.
    fn is_valid(&self) -> bool {
        self.width > 0
            && self.height > 0
            && rgb_len(self.width, self.height, 3) == Some(self.data.len())
    }
}

/// `width * height * channels` as usize, if it fits.
fn rgb_len(width: u32, height: u32, channels: usize) -> Option<usize> {
    (width as usize)
        .checked_mul(height as usize)?
        .checked_mul(channels)
}

/// How a non-square image is made square before the processor's shortest-edge resize and
/// centre crop (upstream's `image_aspect_ratio`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AspectMode {
    /// Upstream's README Quick Start: stretch to a `max(W,H)` square (bicubic), then the
    /// processor. Two resizes; a single direct resize would give different pixels.
    Resize,
    /// Upstream's CLI and model worker default: paste centred on a `max(W,H)` square of the pad
    /// colour, then the processor.
    Pad,
    /// The processor alone: shortest edge to `size`, centre crop (loses the long edge's ends).
    Crop,
}

impl AspectMode {
    /// The canonical lower-case name (`resize`, `pad`, `crop`).
    pub fn as_str(self) -> &'static str {
        match self {
            AspectMode::Resize => "resize",
            AspectMode::Pad => "pad",
            AspectMode::Crop => "crop",
        }
    }
}

impl fmt::Display for AspectMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AspectMode {
    type Err = Error;

    /// Parses `resize`, `pad`, `crop` or `shortest_edge_crop` (= crop), ignoring ASCII case and
    /// surrounding white space.
    fn from_str(s: &str) -> Result<AspectMode> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("resize") {
            Ok(AspectMode::Resize)
        } else if t.eq_ignore_ascii_case("pad") {
            Ok(AspectMode::Pad)
        } else if t.eq_ignore_ascii_case("crop") || t.eq_ignore_ascii_case("shortest_edge_crop") {
            Ok(AspectMode::Crop)
        } else {
            Err(err(
                ErrorKind::InvalidArgument,
                format!("unknown image aspect mode {s:?}: expected resize, pad or crop"),
            ))
        }
    }
}

/// Limits applied when decoding untrusted image files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest accepted width in pixels (default 16384).
    pub max_width: u32,
    /// Largest accepted height in pixels (default 16384).
    pub max_height: u32,
    /// Largest accepted `width * height` (default 64 Mpx = 2^26): the decompression-bomb cap; a
    /// tiny PNG can claim gigapixels.
    pub max_pixels: u64,
    /// Largest accepted file size in bytes (default 256 MiB).
    pub max_file_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_width: 16384,
            max_height: 16384,
            max_pixels: 1 << 26,
            max_file_bytes: 256 << 20,
        }
    }
}

/// Preprocessing parameters: output side, normalisation, aspect handling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocess {
    /// Output side `S` (448 for the 7B; the vision tower's image size in general).
    pub size: u32,
    /// Per-channel mean subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f32; 3],
    /// Squaring rule applied first.
    pub mode: AspectMode,
    /// Canvas colour for [`AspectMode::Pad`].
    pub pad_color: [u8; 3],
}

impl Preprocess {
    /// OpenAI CLIP settings (mPLUG-Owl2's processor): CLIP mean/std and the pad colour
    /// `int(255 * mean)` = (122, 116, 104).
    pub fn clip(size: u32, mode: AspectMode) -> Preprocess {
        Preprocess {
            size,
            mean: CLIP_MEAN,
            std: CLIP_STD,
            mode,
            pad_color: CLIP_PAD_COLOR,
        }
    }

    /// Upstream's pad colour for a given mean: `int(255 * mean_c)` (truncation), per channel.
    pub fn pad_color_for_mean(mean: [f32; 3]) -> [u8; 3] {
        mean.map(|m| (f64::from(m) * 255.0).clamp(0.0, 255.0) as u8)
    }
}
