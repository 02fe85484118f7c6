//! Pillow's bicubic resampler, byte for byte, and the preprocessing pipeline that streams an
//! image's rows through it (squaring, shortest edge, centre crop, normalisation).

use super::{AspectMode, Preprocess, RgbImage};

// ---------------------------------------------------------------------------------------------
// Pillow's bicubic resampler
// ---------------------------------------------------------------------------------------------

/// Pillow's fixed-point precision for 8-bit images: 32 - 8 (pixel) - 2 (headroom) bits.
const PRECISION_BITS: u32 = 22;
/// Rounding offset every accumulator starts from (one half in fixed point).
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Keys' cubic convolution kernel with a = -0.5 (Pillow's `bicubic_filter`), evaluated in the
/// same operation order as Pillow so that the f64 weights round identically.
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `clip8`: fixed-point accumulator to u8 with saturation.
#[inline]
fn clip8(acc: i32) -> u8 {
    if acc <= 0 {
        0
    } else if acc >= 1 << (PRECISION_BITS + 8) {
        255
    } else {
        (acc >> PRECISION_BITS) as u8
    }
}

/// The fixed-point filter taps of one resampling pass (one axis), for a contiguous window of
/// output indices `first .. first + count` of a resize from `in_len` to `out_len` samples.
///
/// Output `o` reads source samples `start[o] .. end[o]` with coefficients
/// `k[o * stride ..][.. end[o] - start[o]]`; `sum[o]` is the sum of its coefficients.
struct Taps {
    start: Vec<usize>,
    end: Vec<usize>,
    sum: Vec<i32>,
    k: Vec<i32>,
    stride: usize,
}

impl Taps {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` (spec §1), for outputs
    /// `first .. first + count` only. `out_len` may exceed what could ever be allocated (the
    /// shortest-edge size of a very thin image); only the window is computed.
    fn new(in_len: usize, out_len: u64, first: u64, count: usize) -> Taps {
        let scale = in_len as f64 / out_len as f64;
        let filterscale = scale.max(1.0);
        let support = 2.0 * filterscale;
        let inv = 1.0 / filterscale;
        // Pillow's kernel size bound, ceil(support) * 2 + 1, never more than the input.
        let stride = ((support.ceil() as usize)
            .saturating_mul(2)
            .saturating_add(1))
        .min(in_len.max(1));
        let mut t = Taps {
            start: Vec::with_capacity(count),
            end: Vec::with_capacity(count),
            sum: Vec::with_capacity(count),
            k: vec![0; count * stride],
            stride,
        };
        let mut w = vec![0.0f64; stride];
        for o in 0..count {
            let i = (first + o as u64) as f64;
            let center = (i + 0.5) * scale;
            // `as i64` truncates toward zero like C's (int); the clamps follow.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(in_len as i64).max(0) as usize;
            let n = hi.saturating_sub(lo).min(stride);
            let mut total = 0.0;
            for (j, wj) in w[..n].iter_mut().enumerate() {
                *wj = cubic(((j + lo) as f64 - center + 0.5) * inv);
                total += *wj;
            }
            let ks = &mut t.k[o * stride..o * stride + n];
            let mut ksum = 0i32;
            for (kj, &wj) in ks.iter_mut().zip(&w[..n]) {
                let wn = if total != 0.0 { wj / total } else { wj };
                let scaled = wn * f64::from(1u32 << PRECISION_BITS);
                *kj = if wn < 0.0 {
                    (scaled - 0.5) as i32
                } else {
                    (scaled + 0.5) as i32
                };
                ksum = ksum.wrapping_add(*kj);
            }
            t.start.push(lo);
            t.end.push(lo + n);
            t.sum.push(ksum);
        }
        t
    }

    fn len(&self) -> usize {
        self.start.len()
    }

    fn coeffs(&self, o: usize) -> &[i32] {
        let n = self.end[o] - self.start[o];
        &self.k[o * self.stride..o * self.stride + n]
    }

    /// The source range the whole window reads (starts and ends are non-decreasing).
    fn source_range(&self) -> (usize, usize) {
        match (self.start.first(), self.end.last()) {
            (Some(&a), Some(&b)) => (a, b.max(a)),
            _ => (0, 0),
        }
    }

    /// The outputs whose taps touch source samples `a .. b`.
    fn outputs_touching(&self, a: usize, b: usize) -> (usize, usize) {
        let lo = self.end.partition_point(|&e| e <= a);
        let hi = self.start.partition_point(|&s| s < b);
        (lo, hi.max(lo))
    }
}

/// One horizontal pass over one RGB row, for outputs `o_lo .. o_hi` of `taps`:
/// `dst[o] = clip8(2^21 + Σ_j src[start + j] * k_j)` per channel.
fn pass_row(taps: &Taps, src: &[u8], dst: &mut [u8], o_lo: usize, o_hi: usize) {
    let mut acc = [0i32; 3];
    for o in o_lo..o_hi {
        pass_pixel(taps, src, o, &mut acc);
        for c in 0..3 {
            dst[o * 3 + c] = clip8(acc[c]);
        }
    }
}

/// The unclipped fixed-point sums of output `o` of a horizontal pass (`2^21` included).
///
/// The sums are Pillow's, in Pillow's order; they fit in i32 (the taps' absolute values add up
/// to well under 1.5 * 2^22, times 255). Wrapping arithmetic only keeps debug builds from
/// trapping on what would, at worst, be the same overflow Pillow's C code has.
#[inline]
fn pass_pixel(taps: &Taps, src: &[u8], o: usize, acc: &mut [i32; 3]) {
    let s = taps.start[o];
    let k = taps.coeffs(o);
    let px = &src[s * 3..(s + k.len()) * 3];
    let (mut r, mut g, mut b) = (HALF, HALF, HALF);
    for (p, &c) in px.chunks_exact(3).zip(k) {
        r = r.wrapping_add(i32::from(p[0]).wrapping_mul(c));
        g = g.wrapping_add(i32::from(p[1]).wrapping_mul(c));
        b = b.wrapping_add(i32::from(p[2]).wrapping_mul(c));
    }
    *acc = [r, g, b];
}

/// `Some(pixel)` if every pixel of the RGB row is the same.
fn uniform_pixel(row: &[u8]) -> Option<[u8; 3]> {
    let first: [u8; 3] = row.get(..3)?.try_into().ok()?;
    row.chunks_exact(3).all(|p| p == first).then_some(first)
}

/// How a row handed out by a [`RowSource`] relates to the previous one. The consumer keeps
/// the buffer between calls, so a source may write only what changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RowChange {
    /// The whole buffer holds the new row.
    All,
    /// The buffer holds the new row, which differs from the previous one only in pixels
    /// `a .. b` (the source wrote at least those). Never returned for the first row.
    Span(usize, usize),
    /// Identical to the previous row; the buffer may not have been written. Never returned for
    /// the first row.
    Same,
    /// Every pixel is this colour; the buffer was not written.
    Uniform([u8; 3]),
}

/// A virtual RGB image produced one row at a time: the input of a resampling stage. Lets the
/// padded canvas and the stretched square of the aspect modes exist without being stored.
trait RowSource {
    fn width(&self) -> usize;
    fn height(&self) -> usize;
    /// Produces row `y` (`width() * 3` bytes) in `buf`, which the caller passes unchanged from
    /// call to call. Rows are requested in increasing order, each once.
    fn read_row(&mut self, y: usize, buf: &mut [u8]) -> RowChange;
}

/// An image as a row source.
struct ImageRows<'a>(&'a RgbImage);

impl RowSource for ImageRows<'_> {
    fn width(&self) -> usize {
        self.0.width as usize
    }
    fn height(&self) -> usize {
        self.0.height as usize
    }
    fn read_row(&mut self, y: usize, buf: &mut [u8]) -> RowChange {
        copy_image_row(self.0, y, buf);
        RowChange::All
    }
}

/// Copies row `y` of `img` into `out` (`width * 3` bytes). Defensive: the callers only pass
/// valid images, but a short `data` would read as black rather than panic.
fn copy_image_row(img: &RgbImage, y: usize, out: &mut [u8]) {
    let n = img.width as usize * 3;
    let start = y.saturating_mul(n).min(img.data.len());
    let src = &img.data[start..img.data.len().min(start.saturating_add(n))];
    out[..src.len()].copy_from_slice(src);
    out[src.len()..n].fill(0);
}

/// Upstream's `expand2square`: the image pasted on a `side x side` canvas of `color` at
/// (`x0`, `y0`). Only the pasted columns ever change from row to row.
struct PaddedRows<'a> {
    img: &'a RgbImage,
    side: usize,
    x0: usize,
    y0: usize,
    color: [u8; 3],
    /// Whether the previous row crossed the image (`None` before the first row).
    prev_in_image: Option<bool>,
}

impl<'a> PaddedRows<'a> {
    fn new(img: &'a RgbImage, color: [u8; 3]) -> PaddedRows<'a> {
        let (w, h) = (img.width as usize, img.height as usize);
        // Landscape at (0, (W-H)//2), portrait at ((H-W)//2, 0).
        let (x0, y0) = if w > h {
            (0, (w - h) / 2)
        } else {
            ((h - w) / 2, 0)
        };
        PaddedRows {
            img,
            side: w.max(h),
            x0,
            y0,
            color,
            prev_in_image: None,
        }
    }
}

impl RowSource for PaddedRows<'_> {
    fn width(&self) -> usize {
        self.side
    }
    fn height(&self) -> usize {
        self.side
    }
    fn read_row(&mut self, y: usize, buf: &mut [u8]) -> RowChange {
        let (w, h) = (self.img.width as usize, self.img.height as usize);
        let in_image = y >= self.y0 && y < self.y0 + h;
        let span = self.x0 * 3..(self.x0 + w) * 3;
        let change = match self.prev_in_image {
            None => {
                for p in buf.chunks_exact_mut(3) {
                    p.copy_from_slice(&self.color);
                }
                RowChange::All
            }
            Some(false) if !in_image => RowChange::Same,
            Some(true) if !in_image => {
                for p in buf[span.clone()].chunks_exact_mut(3) {
                    p.copy_from_slice(&self.color);
                }
                RowChange::Span(self.x0, self.x0 + w)
            }
            Some(_) => RowChange::Span(self.x0, self.x0 + w),
        };
        if in_image {
            copy_image_row(self.img, y - self.y0, &mut buf[span]);
        }
        self.prev_in_image = Some(in_image);
        change
    }
}

/// The Quick Start stretch to a `max(W,H)` square, one resampling pass along the short axis,
/// computed a row at a time (rounded to u8, as Pillow stores the stretched image).
enum StretchRows<'a> {
    /// Portrait (W < H): every row is a horizontal pass of the source row, W -> H.
    Horizontal {
        img: &'a RgbImage,
        taps: Taps,
        /// The current and the previous source row.
        row: Vec<u8>,
        prev: Option<Vec<u8>>,
        /// Every output's taps sum to exactly 1.0 in fixed point, so a uniform source row
        /// stretches to the same uniform row (always so when W = 1: one tap of weight 1).
        keeps_uniform: bool,
    },
    /// Landscape (W > H): every row is a vertical pass over source rows, H -> W. Consecutive
    /// outputs with the same taps (common when stretching a very short image) are identical.
    Vertical {
        img: &'a RgbImage,
        taps: Taps,
        acc: Vec<i32>,
        src: Vec<u8>,
        last: Option<usize>,
    },
}

impl<'a> StretchRows<'a> {
    fn new(img: &'a RgbImage) -> StretchRows<'a> {
        let (w, h) = (img.width as usize, img.height as usize);
        if w < h {
            let taps = Taps::new(w, h as u64, 0, h);
            let keeps_uniform = taps.sum.iter().all(|&s| s == 1 << PRECISION_BITS);
            StretchRows::Horizontal {
                img,
                taps,
                row: vec![0; w * 3],
                prev: None,
                keeps_uniform,
            }
        } else {
            StretchRows::Vertical {
                img,
                taps: Taps::new(h, w as u64, 0, w),
                acc: vec![0; w * 3],
                src: vec![0; w * 3],
                last: None,
            }
        }
    }
}

impl RowSource for StretchRows<'_> {
    fn width(&self) -> usize {
        match self {
            StretchRows::Horizontal { img, .. } => img.height as usize,
            StretchRows::Vertical { img, .. } => img.width as usize,
        }
    }
    fn height(&self) -> usize {
        self.width()
    }
    fn read_row(&mut self, y: usize, buf: &mut [u8]) -> RowChange {
        match self {
            StretchRows::Horizontal {
                img,
                taps,
                row,
                prev,
                keeps_uniform,
            } => {
                copy_image_row(img, y, row);
                if prev.as_deref() == Some(&row[..]) {
                    return RowChange::Same;
                }
                let change = match uniform_pixel(row) {
                    Some(px) if *keeps_uniform => RowChange::Uniform(px),
                    _ => {
                        pass_row(taps, row, buf, 0, taps.len());
                        RowChange::All
                    }
                };
                match prev {
                    Some(p) => p.copy_from_slice(row),
                    None => *prev = Some(row.clone()),
                }
                change
            }
            StretchRows::Vertical {
                img,
                taps,
                acc,
                src,
                last,
            } => {
                if let Some(prev) = *last {
                    if taps.start[prev] == taps.start[y] && taps.coeffs(prev) == taps.coeffs(y) {
                        return RowChange::Same;
                    }
                }
                acc.fill(HALF);
                for (j, &c) in taps.coeffs(y).iter().enumerate() {
                    copy_image_row(img, taps.start[y] + j, src);
                    for (a, &v) in acc.iter_mut().zip(src.iter()) {
                        *a = a.wrapping_add(i32::from(v).wrapping_mul(c));
                    }
                }
                for (o, &a) in buf.iter_mut().zip(acc.iter()) {
                    *o = clip8(a);
                }
                *last = Some(y);
                RowChange::All
            }
        }
    }
}

/// The horizontal pass of a streaming resize. It keeps every output's unclipped sum, so a row
/// that differs from the previous one only in a span is updated with the differences alone:
/// `Σ new·k = Σ old·k + Σ_span (new − old)·k`, exact in integer arithmetic. That makes the
/// padded canvas of a thin image (one changing column per row) cost next to nothing.
struct HorizontalPass {
    taps: Taps,
    /// Unclipped sums `[outputs, 3]`.
    acc: Vec<i32>,
    /// Clipped outputs `[outputs, 3]`: the pass's result for the latest row.
    out: Vec<u8>,
    /// The latest source row, when the buffer held it (not after a `Uniform` row).
    prev: Vec<u8>,
    prev_valid: bool,
}

impl HorizontalPass {
    fn new(taps: Taps, in_w: usize) -> Self {
        let n = taps.len() * 3;
        HorizontalPass {
            taps,
            acc: vec![0; n],
            out: vec![0; n],
            prev: vec![0; in_w * 3],
            prev_valid: false,
        }
    }

    fn apply(&mut self, change: RowChange, row: &[u8]) {
        match change {
            RowChange::Same => {}
            RowChange::Uniform(px) => {
                self.uniform(px);
                self.prev_valid = false;
            }
            RowChange::Span(a, b) if self.prev_valid => self.span(row, a, b),
            RowChange::All | RowChange::Span(..) => self.full(row),
        }
    }

    fn full(&mut self, row: &[u8]) {
        match uniform_pixel(row) {
            Some(px) => self.uniform(px),
            None => {
                let mut acc = [0i32; 3];
                for o in 0..self.taps.len() {
                    pass_pixel(&self.taps, row, o, &mut acc);
                    self.acc[o * 3..o * 3 + 3].copy_from_slice(&acc);
                }
                self.clip(0, self.taps.len());
            }
        }
        self.prev.copy_from_slice(row);
        self.prev_valid = true;
    }

    /// A row of one colour: `Σ px·k = px·Σ k`, one multiply per output.
    fn uniform(&mut self, px: [u8; 3]) {
        for (acc, &ks) in self.acc.chunks_exact_mut(3).zip(&self.taps.sum) {
            for (a, &v) in acc.iter_mut().zip(&px) {
                *a = HALF.wrapping_add(i32::from(v).wrapping_mul(ks));
            }
        }
        self.clip(0, self.taps.len());
    }

    fn span(&mut self, row: &[u8], a: usize, b: usize) {
        let (o_lo, o_hi) = self.taps.outputs_touching(a, b);
        for o in o_lo..o_hi {
            let (s, e) = (self.taps.start[o], self.taps.end[o]);
            let (xa, xb) = (a.max(s), b.min(e));
            let k = &self.taps.coeffs(o)[xa - s..xb - s];
            let new = row[xa * 3..xb * 3].chunks_exact(3);
            let old = self.prev[xa * 3..xb * 3].chunks_exact(3);
            let acc = &mut self.acc[o * 3..o * 3 + 3];
            for ((p, q), &c) in new.zip(old).zip(k) {
                for ch in 0..3 {
                    let d = i32::from(p[ch]) - i32::from(q[ch]);
                    acc[ch] = acc[ch].wrapping_add(d.wrapping_mul(c));
                }
            }
        }
        self.clip(o_lo, o_hi);
        self.prev[a * 3..b * 3].copy_from_slice(&row[a * 3..b * 3]);
    }

    fn clip(&mut self, o_lo: usize, o_hi: usize) {
        for i in o_lo * 3..o_hi * 3 {
            self.out[i] = clip8(self.acc[i]);
        }
    }
}

/// The vertical pass, fed one intermediate row at a time (in increasing order): each row is
/// added, with its coefficient, into the accumulators of the outputs whose taps include it.
/// Every output sums its taps in the same order as Pillow's vertical pass.
struct VerticalAccumulator {
    taps: Taps,
    row_len: usize,
    acc: Vec<i32>,
    /// First output whose taps may still include the next row.
    first_open: usize,
}

impl VerticalAccumulator {
    fn new(taps: Taps, row_len: usize) -> Self {
        let acc = vec![HALF; taps.len() * row_len];
        VerticalAccumulator {
            taps,
            row_len,
            acc,
            first_open: 0,
        }
    }

    fn add_row(&mut self, y: usize, row: &[u8]) {
        let t = &self.taps;
        while self.first_open < t.len() && t.end[self.first_open] <= y {
            self.first_open += 1;
        }
        for o in self.first_open..t.len() {
            if t.start[o] > y {
                break;
            }
            let c = t.coeffs(o)[y - t.start[o]];
            let acc = &mut self.acc[o * self.row_len..(o + 1) * self.row_len];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a = a.wrapping_add(i32::from(v).wrapping_mul(c));
            }
        }
    }

    fn finish(self, out: &mut [u8]) {
        for (o, &a) in out.iter_mut().zip(&self.acc) {
            *o = clip8(a);
        }
    }
}

/// Resizes `src` to `out_w x out_h` with Pillow's bicubic filter (horizontal pass first, u8
/// between passes; an axis whose size does not change gets no pass) but computes only the
/// `win_w x win_h` window of the output at (`x0`, `y0`), which must lie inside the output.
///
/// Each output pixel depends only on its own taps, so the window's pixels equal those of the
/// full resize. Source rows stream through once, in order, and only those the window's
/// vertical taps read; nothing of the size of the full output is ever allocated.
fn resample_window(
    src: &mut dyn RowSource,
    out_w: u64,
    out_h: u64,
    (x0, y0): (u64, u64),
    (win_w, win_h): (usize, usize),
) -> RgbImage {
    let (in_w, in_h) = (src.width(), src.height());
    let mut out = vec![0u8; win_w * win_h * 3];
    let image = |data| RgbImage {
        width: win_w as u32,
        height: win_h as u32,
        data,
    };
    if win_w == 0 || win_h == 0 || in_w == 0 || in_h == 0 {
        return image(out);
    }
    let mut horizontal = (out_w != in_w as u64)
        .then(|| HorizontalPass::new(Taps::new(in_w, out_w, x0, win_w), in_w));
    let v_taps = (out_h != in_h as u64).then(|| Taps::new(in_h, out_h, y0, win_h));
    let (row_lo, row_hi) = match &v_taps {
        Some(t) => t.source_range(),
        None => (y0 as usize, y0 as usize + win_h),
    };
    let mut vertical = v_taps.map(|t| VerticalAccumulator::new(t, win_w * 3));
    let mut row = vec![0u8; in_w * 3];
    // The window of the row when there is no horizontal pass.
    let mut cropped = vec![0u8; win_w * 3];
    let x0 = x0 as usize;
    for y in row_lo..row_hi {
        let change = src.read_row(y, &mut row);
        let hrow: &[u8] = match &mut horizontal {
            Some(h) => {
                h.apply(change, &row);
                &h.out
            }
            None => {
                match change {
                    RowChange::Same => {}
                    RowChange::Uniform(px) => {
                        for p in cropped.chunks_exact_mut(3) {
                            p.copy_from_slice(&px);
                        }
                    }
                    RowChange::All | RowChange::Span(..) => {
                        cropped.copy_from_slice(&row[x0 * 3..(x0 + win_w) * 3]);
                    }
                }
                &cropped
            }
        };
        match &mut vertical {
            Some(v) => v.add_row(y, hrow),
            None => {
                let r = (y - y0 as usize) * win_w * 3;
                out[r..r + win_w * 3].copy_from_slice(hrow);
            }
        }
    }
    if let Some(v) = vertical {
        v.finish(&mut out);
    }
    image(out)
}

/// Resizes to `w x h` exactly as Pillow's `Image.resize((w, h), Image.BICUBIC)` does for an RGB
/// image (classic horizontal-first order; see `../shared/spec/preprocessing.md` §2, beside the
/// repository). A zero `w` or `h` gives an empty image; an input that fails
/// [`RgbImage::validate`] gives a black one.
pub fn resize_bicubic(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    if !img.is_valid() {
        return RgbImage::filled(w, h, [0; 3]);
    }
    let (w64, h64) = (u64::from(w), u64::from(h));
    resample_window(
        &mut ImageRows(img),
        w64,
        h64,
        (0, 0),
        (w as usize, h as usize),
    )
}

// ---------------------------------------------------------------------------------------------
// Preprocessing
// ---------------------------------------------------------------------------------------------

/// The largest square [`AspectMode::Resize`] stretches to exactly. A longer image is first
/// shrunk (Pillow bicubic, aspect kept, long side to this, short side rounded, at least 1).
/// Stretching costs `O(max(W,H)^2)` time, and Pillow itself would need `4 * max(W,H)^2` bytes
/// for the stretched image (1 GiB at this side); only images beyond [`ImageLimits`](super::ImageLimits)' default
/// per-side limit are affected.
pub const MAX_STRETCH_SIDE: u32 = 16384;

/// The uint8 image the model sees: aspect mode, then shortest edge to `p.size` (Pillow
/// bicubic), then centre crop to `p.size x p.size` (`[size, size, 3]`).
///
/// Gives Pillow's pixels for every image shape, 1x1 and 1x10000 included (with the one
/// exception of [`MAX_STRETCH_SIDE`]). Only the pixels the centre crop keeps are resampled,
/// and the padded or stretched square is never stored, so memory stays
/// `O(size^2 + max(W, H))` besides the image. An image that fails [`RgbImage::validate`]
/// (empty, or built by hand with the wrong data length) gives a canvas of `p.pad_color`;
/// `p.size == 0` gives an empty image.
pub fn preprocess_u8(img: &RgbImage, p: &Preprocess) -> RgbImage {
    if p.size == 0 {
        return RgbImage {
            width: 0,
            height: 0,
            data: Vec::new(),
        };
    }
    if !img.is_valid() {
        return RgbImage::filled(p.size, p.size, p.pad_color);
    }
    let (w, h) = (img.width, img.height);
    match p.mode {
        _ if w == h => processor_step(&mut ImageRows(img), p.size),
        AspectMode::Crop => processor_step(&mut ImageRows(img), p.size),
        AspectMode::Pad => processor_step(&mut PaddedRows::new(img, p.pad_color), p.size),
        AspectMode::Resize if w.max(h) > MAX_STRETCH_SIDE => {
            let (long, short) = (u64::from(w.max(h)), u64::from(w.min(h)));
            let cap = u64::from(MAX_STRETCH_SIDE);
            let short = ((short * cap + long / 2) / long).max(1) as u32;
            let (sw, sh) = if w > h {
                (MAX_STRETCH_SIDE, short)
            } else {
                (short, MAX_STRETCH_SIDE)
            };
            preprocess_u8(&resize_bicubic(img, sw, sh), p)
        }
        AspectMode::Resize => processor_step(&mut StretchRows::new(img), p.size),
    }
}

/// The CLIP processor (transformers 4.31): shortest edge to `s` with the long edge
/// `int(s * long / short)`, then the centre crop `top = (h - s) // 2`, `left = (w - s) // 2`.
/// Only the cropped window is resampled.
fn processor_step(src: &mut dyn RowSource, s: u32) -> RgbImage {
    let (w, h) = (src.width() as u64, src.height() as u64);
    let s64 = u64::from(s);
    // Python's int(s * long / short): floor of an exact quotient. The float division agrees
    // with integer floor division while s * long < 2^52 (always, for real sizes).
    let long_side = |long: u64, short: u64| -> u64 {
        let q = u128::from(s64) * u128::from(long) / u128::from(short.max(1));
        u64::try_from(q).unwrap_or(u64::MAX)
    };
    let (nw, nh) = if w <= h {
        (s64, long_side(h, w))
    } else {
        (long_side(w, h), s64)
    };
    let left = (nw - s64) / 2;
    let top = (nh - s64) / 2;
    resample_window(src, nw, nh, (left, top), (s as usize, s as usize))
}

/// Scales a uint8 image to float and normalises it: `x = f32(f64(v) * (1/255))`, then
/// `(x - mean_c) / std_c` in float32 (bit-exact with upstream's NumPy arithmetic). Returns
/// `[3, height, width]` (CHW); for the output of [`preprocess_u8`] that is `[3, size, size]`.
/// An image that fails [`RgbImage::validate`] gives an empty vector.
pub fn normalize(img: &RgbImage, p: &Preprocess) -> Vec<f32> {
    if !img.is_valid() {
        return Vec::new();
    }
    // One table per channel: every u8 value's normalised float.
    let lut: [[f32; 256]; 3] = std::array::from_fn(|c| {
        std::array::from_fn(|v| {
            let x = (v as f64 * (1.0 / 255.0)) as f32;
            (x - p.mean[c]) / p.std[c]
        })
    });
    let plane = img.width as usize * img.height as usize;
    let mut out = vec![0.0f32; plane * 3];
    for (c, table) in lut.iter().enumerate() {
        let dst = &mut out[c * plane..(c + 1) * plane];
        for (i, d) in dst.iter_mut().enumerate() {
            *d = table[usize::from(img.data[i * 3 + c])];
        }
    }
    out
}

/// [`preprocess_u8`] then [`normalize`]: the model's pixel tensor `[3, size, size]`.
pub fn preprocess(img: &RgbImage, p: &Preprocess) -> Vec<f32> {
    normalize(&preprocess_u8(img, p), p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward two full passes, to check the streaming/window machinery against.
    fn naive_resize(img: &RgbImage, w: u32, h: u32) -> RgbImage {
        let (iw, ih) = (img.width as usize, img.height as usize);
        let (w, h) = (w as usize, h as usize);
        let mut mid = img.data.clone();
        let mut mw = iw;
        if w != iw {
            let t = Taps::new(iw, w as u64, 0, w);
            mid = vec![0; w * ih * 3];
            for y in 0..ih {
                pass_row(
                    &t,
                    &img.data[y * iw * 3..(y + 1) * iw * 3],
                    &mut mid[y * w * 3..(y + 1) * w * 3],
                    0,
                    w,
                );
            }
            mw = w;
        }
        if h == ih {
            return RgbImage {
                width: w as u32,
                height: h as u32,
                data: mid,
            };
        }
        let t = Taps::new(ih, h as u64, 0, h);
        let mut out = vec![0; w * h * 3];
        for o in 0..h {
            for x in 0..mw * 3 {
                let mut acc = HALF;
                for (j, &c) in t.coeffs(o).iter().enumerate() {
                    acc += i32::from(mid[(t.start[o] + j) * mw * 3 + x]) * c;
                }
                out[o * mw * 3 + x] = clip8(acc);
            }
        }
        RgbImage {
            width: w as u32,
            height: h as u32,
            data: out,
        }
    }

    fn noise(w: u32, h: u32, seed: u32) -> RgbImage {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        let data = (0..w * h * 3)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 24) as u8
            })
            .collect();
        RgbImage {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn taps_sum_to_one_in_fixed_point() {
        for &(i, o) in &[(600usize, 112u64), (1, 112), (112, 1), (3, 7), (10000, 112)] {
            let t = Taps::new(i, o, 0, o as usize);
            for s in &t.sum {
                assert!((s - (1 << 22)).abs() <= 8, "{i}->{o}: {s}");
            }
        }
    }

    #[test]
    fn window_and_streaming_match_naive_full_resize() {
        let img = noise(37, 23, 1);
        for &(w, h) in &[
            (37, 50),
            (11, 23),
            (80, 9),
            (5, 5),
            (1, 1),
            (37, 23),
            (150, 100),
        ] {
            assert_eq!(
                resize_bicubic(&img, w, h),
                naive_resize(&img, w, h),
                "{w}x{h}"
            );
        }
        // A window of a big resize equals the same region of the full resize.
        let full = naive_resize(&img, 150, 100);
        let win = resample_window(&mut ImageRows(&img), 150, 100, (20, 30), (40, 50));
        for y in 0..50 {
            let a = &full.data[((y + 30) * 150 + 20) * 3..((y + 30) * 150 + 60) * 3];
            assert_eq!(a, &win.data[y * 40 * 3..(y + 1) * 40 * 3]);
        }
    }

    #[test]
    fn changed_span_reuse_matches_full_pass() {
        // Rows that share most pixels (a padded canvas) against the naive resize.
        let img = noise(9, 200, 3);
        let p = Preprocess::clip(16, AspectMode::Pad);
        let canvas = {
            let mut c = RgbImage::filled(200, 200, p.pad_color);
            for y in 0..200 {
                for x in 0..9 {
                    let d = (y * 200 + 95 + x) * 3;
                    c.data[d..d + 3]
                        .copy_from_slice(&img.data[(y * 9 + x) * 3..(y * 9 + x) * 3 + 3]);
                }
            }
            c
        };
        assert_eq!(preprocess_u8(&img, &p), naive_resize(&canvas, 16, 16));
    }

    #[test]
    fn stretch_matches_naive() {
        for &(w, h) in &[(7u32, 30u32), (30, 7), (1, 40), (40, 1)] {
            let img = noise(w, h, w + h);
            let m = w.max(h);
            let stretched = naive_resize(&img, m, m);
            let p = Preprocess::clip(12, AspectMode::Resize);
            assert_eq!(
                preprocess_u8(&img, &p),
                naive_resize(&stretched, 12, 12),
                "{w}x{h}"
            );
        }
    }
}
