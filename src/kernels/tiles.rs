//! Scalar tiles ([`super::QuantTile`]) and the scalar twins of the SIMD K-quant formulas.
//!
//! - `q4_0_q8_0`, ... : the generic table's tiles, one [`super::generic`] dot per output, so a
//!   tile equals the generic dot bitwise.
//! - [`q4_k_q8_k_exact`], [`q6_k_q8_k_exact`]: the formula the SIMD K-quant kernels compute.
//!   ggml's scalar code keeps eight f32 lane sums per row; SIMD code cannot reproduce those
//!   lanes cheaply, so the SIMD variants instead sum each super-block exactly in one i32 and
//!   scale it once: `acc += (d_w·d_a)·Σ` (and `acc -= (dmin_w·d_a)·Σmins` for Q4_K). These
//!   functions are that formula in scalar code; the SIMD kernels equal them bitwise, and they
//!   differ from the generic dots only by f32 rounding.
//! - `run_float_tile` (x86-64, aarch64): the driver of the SIMD float tiles, which differ
//!   only in their register-tile bodies.

use super::generic;
use crate::quant::blocks::{
    Q4_K_BYTES, Q4_K_DMIN, Q4_K_QS, Q4_K_SCALES, Q6_K_BYTES, Q6_K_D, Q6_K_SCALES, Q8_K_BSUMS,
    Q8_K_BYTES,
};
use crate::quant::{read_f16, read_f32, unpack_scale_min_k4, QK_K};

/// A tile made of one `dot` call per output.
#[inline]
fn by_dot(dot: super::QuantDot, n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
    let na = a.len();
    for (r, wr) in w.iter().enumerate() {
        for (c, ac) in a.iter().enumerate() {
            out[r * na + c] = dot(n, wr, ac);
        }
    }
}

macro_rules! dot_tiles {
    ($($name:ident => $dot:path),* $(,)?) => {$(
        #[doc = concat!("Tile of [`", stringify!($dot), "`] (one call per output).")]
        pub fn $name(n: usize, w: &[&[u8]], a: &[&[u8]], out: &mut [f32]) {
            by_dot($dot, n, w, a, out)
        }
    )*};
}

dot_tiles! {
    q4_0_q8_0 => generic::vec_dot_q4_0_q8_0,
    q4_1_q8_1 => generic::vec_dot_q4_1_q8_1,
    q5_0_q8_0 => generic::vec_dot_q5_0_q8_0,
    q5_1_q8_1 => generic::vec_dot_q5_1_q8_1,
    q8_0_q8_0 => generic::vec_dot_q8_0_q8_0,
    q4_k_q8_k => generic::vec_dot_q4_k_q8_k,
    q5_k_q8_k => generic::vec_dot_q5_k_q8_k,
    q6_k_q8_k => generic::vec_dot_q6_k_q8_k,
    q4_k_q8_k_exact_tile => q4_k_q8_k_exact,
    q6_k_q8_k_exact_tile => q6_k_q8_k_exact,
}

/// Q8_K quant `i` of an activation block.
#[inline]
fn q8(y: &[u8], i: usize) -> i32 {
    y[4 + i] as i8 as i32
}

/// Sum of the 16 Q8_K quants of group `g` (the stored bsum).
#[inline]
fn bsum(y: &[u8], g: usize) -> i32 {
    i16::from_le_bytes([y[Q8_K_BSUMS + 2 * g], y[Q8_K_BSUMS + 1 + 2 * g]]) as i32
}

/// Q4_K · Q8_K with one exact integer sum per super-block:
/// `acc += (d_w·d_a)·Σ_j sc_j Σ_i q_i a_i;  acc −= (dmin_w·d_a)·Σ_g m_{g/2}·bsum_g`.
pub fn q4_k_q8_k_exact(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = (n / QK_K)
        .min(w.len() / Q4_K_BYTES)
        .min(a.len() / Q8_K_BYTES);
    let mut acc = 0f32;
    for b in 0..nb {
        let (x, y) = (
            &w[b * Q4_K_BYTES..(b + 1) * Q4_K_BYTES],
            &a[b * Q8_K_BYTES..(b + 1) * Q8_K_BYTES],
        );
        let packed = &x[Q4_K_SCALES..Q4_K_QS];
        let mut isum = 0i32;
        for j in 0..8 {
            let (sc, _) = unpack_scale_min_k4(j, packed);
            let (chunk, high) = (j / 2, j % 2 == 1);
            let mut s = 0i32;
            for l in 0..32 {
                let byte = x[16 + 32 * chunk + l];
                let q = if high { byte >> 4 } else { byte & 0xF } as i32;
                s += q * q8(y, 32 * j + l);
            }
            isum += sc as i32 * s;
        }
        let msum: i32 = (0..16)
            .map(|g| bsum(y, g) * unpack_scale_min_k4(g / 2, packed).1 as i32)
            .sum();
        let yd = read_f32(y, 0);
        acc += (read_f16(x, 0) * yd) * isum as f32;
        acc -= (read_f16(x, Q4_K_DMIN) * yd) * msum as f32;
    }
    acc
}

/// Q6_K · Q8_K with one exact integer sum per super-block:
/// `acc += (d_w·d_a)·(Σ_j sc_j Σ_i q_i a_i − 32·Σ_j sc_j·bsum_j)`, q unsigned 0..64.
pub fn q6_k_q8_k_exact(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = (n / QK_K)
        .min(w.len() / Q6_K_BYTES)
        .min(a.len() / Q8_K_BYTES);
    let mut acc = 0f32;
    for b in 0..nb {
        let (x, y) = (
            &w[b * Q6_K_BYTES..(b + 1) * Q6_K_BYTES],
            &a[b * Q8_K_BYTES..(b + 1) * Q8_K_BYTES],
        );
        let mut isum = 0i32;
        let mut msum = 0i32;
        for j in 0..16 {
            let sc = x[Q6_K_SCALES + j] as i8 as i32;
            let mut s = 0i32;
            for i in 16 * j..16 * j + 16 {
                let (h, quarter, l) = (i / 128, (i % 128) / 32, i % 32);
                let ql = &x[64 * h..64 * h + 64];
                let qh = &x[128 + 32 * h..128 + 32 * h + 32];
                let q = crate::quant::q6_k_quant(ql, qh, quarter, l) as i32 + 32;
                s += q * q8(y, i);
            }
            isum += sc * s;
            msum += sc * bsum(y, j);
        }
        acc += (read_f16(x, Q6_K_D) * read_f32(y, 0)) * (isum - 32 * msum) as f32;
    }
    acc
}

/// Float weight rows (f32, f16 or bf16 bytes) · f32 activation rows, one [`super::generic`]
/// float dot per output: the generic table's [`super::FloatTile`]s, equal to its dots bitwise.
#[inline]
pub fn float_by_dot(dot: super::FloatDot, n: usize, w: &[&[u8]], a: &[&[f32]], out: &mut [f32]) {
    let na = a.len();
    for (r, wr) in w.iter().enumerate() {
        for (c, ac) in a.iter().enumerate() {
            if let Some(o) = out.get_mut(r * na + c) {
                *o = dot(n, wr, ac);
            }
        }
    }
}

macro_rules! float_dot_tiles {
    ($($name:ident => $dot:path),* $(,)?) => {$(
        #[doc = concat!("Tile of [`", stringify!($dot), "`] (one call per output).")]
        pub fn $name(n: usize, w: &[&[u8]], a: &[&[f32]], out: &mut [f32]) {
            float_by_dot($dot, n, w, a, out)
        }
    )*};
}

float_dot_tiles! {
    f16_f32 => generic::vec_dot_f16_f32,
    bf16_f32 => generic::vec_dot_bf16_f32,
    f32_f32 => generic::vec_dot_f32,
}

/// The float tiles' formula for one output, in scalar code (the twin the SIMD float tiles are
/// tested against): eight lane sums `s_l = fma(w_i, x_i, s_l)` over `i = l, l + 8, ...` for the
/// first `n − n mod 8` values, folded as `((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7))`,
/// then the last `n mod 8` values one `fma` each, in order. `load(row, i)` reads weight `i`.
#[inline]
pub fn float_lanes8(n: usize, w: &[u8], x: &[f32], load: impl Fn(&[u8], usize) -> f32) -> f32 {
    let n8 = n / 8 * 8;
    let mut s = [0f32; 8];
    for i in (0..n8).step_by(8) {
        for (l, sl) in s.iter_mut().enumerate() {
            *sl = load(w, i + l).mul_add(x[i + l], *sl);
        }
    }
    let h: [f32; 4] = std::array::from_fn(|l| s[l] + s[l + 4]);
    let mut acc = (h[0] + h[2]) + (h[1] + h[3]);
    for (i, &xi) in x.iter().enumerate().take(n).skip(n8) {
        acc = load(w, i).mul_add(xi, acc);
    }
    acc
}

/// [`float_lanes8`] for f16 weights.
pub fn f16_f32_lanes8(n: usize, w: &[u8], x: &[f32]) -> f32 {
    let n = n.min(w.len() / 2).min(x.len());
    float_lanes8(n, w, x, |w, i| read_f16(w, 2 * i))
}

/// [`float_lanes8`] for bf16 weights.
pub fn bf16_f32_lanes8(n: usize, w: &[u8], x: &[f32]) -> f32 {
    let n = n.min(w.len() / 2).min(x.len());
    float_lanes8(n, w, x, |w, i| crate::quant::read_bf16(w, 2 * i))
}

/// [`float_lanes8`] for f32 weights.
pub fn f32_f32_lanes8(n: usize, w: &[u8], x: &[f32]) -> f32 {
    let n = n.min(w.len() / 4).min(x.len());
    float_lanes8(n, w, x, |w, i| read_f32(w, 4 * i))
}

/// A SIMD float register-tile body: `(n, weight rows, activation rows, res)`, `res[r·C + c]`
/// for its const shape of `R` weight rows × `C` activation rows.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(super) type FloatBody = unsafe fn(usize, &[*const u8], &[*const f32], &mut [f32]);

/// The driver every SIMD float tile ([`super::FloatTile`]) shares: clamps `n` to the rows given
/// (values missing from a too-short row are left out of every output), then runs the register
/// tiles `pick(tall, na)` down the weight rows, `heights[na − 1]` rows at a time (`tall`) and
/// the rest one row at a time, and copies the results to `out`. `width` is bytes per weight.
///
/// `pick` must return bodies this CPU can run (their table is handed out only after its
/// detection has seen their features; NEON is baseline on aarch64) that read `n` weights from
/// each weight row and `n` floats from each activation row, and write `R·C` results; each
/// `heights` entry is at most [`super::FLOAT_TILE_ROWS`].
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(super) fn run_float_tile(
    n: usize,
    w: &[&[u8]],
    a: &[&[f32]],
    out: &mut [f32],
    (width, heights): (usize, [usize; 4]),
    pick: fn(bool, usize) -> FloatBody,
) {
    use super::{FLOAT_TILE_ROWS, TILE};
    let (nw, na) = (w.len().min(FLOAT_TILE_ROWS), a.len().min(TILE));
    if nw == 0 || na == 0 {
        return;
    }
    let mut n = n;
    for row in &w[..nw] {
        n = n.min(row.len() / width);
    }
    for row in &a[..na] {
        n = n.min(row.len());
    }
    let mut wp = [w[0].as_ptr(); FLOAT_TILE_ROWS];
    for (p, row) in wp.iter_mut().zip(&w[..nw]) {
        *p = row.as_ptr();
    }
    let mut ap = [a[0].as_ptr(); TILE];
    for (p, row) in ap.iter_mut().zip(&a[..na]) {
        *p = row.as_ptr();
    }
    let mut res = [0f32; FLOAT_TILE_ROWS * TILE];
    let height = heights[na - 1];
    let mut r0 = 0;
    while r0 < nw {
        let tall = nw - r0 >= height;
        let body = pick(tall, na);
        // SAFETY: `pick`'s bodies can run on this CPU (see above); each weight pointer starts a
        // row of at least `n` weights and each activation pointer one of at least `n` floats,
        // and the body reads no further; `res` holds the rows `r0..r0 + height`
        // (≤ FLOAT_TILE_ROWS) of `na` outputs.
        unsafe { body(n, &wp[r0..nw], &ap[..na], &mut res[r0 * na..]) };
        r0 += if tall { height } else { 1 };
    }
    for (o, &v) in out.iter_mut().zip(&res[..nw * na]) {
        *o = v;
    }
}
