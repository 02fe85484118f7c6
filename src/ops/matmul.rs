//! `y = x Wᵀ` for a weight matrix in any supported ggml type.
//!
//! f32/f16/bf16 weights are multiplied in f32 (exact products, f32 sums): that is the path the
//! strict goldens check. Quantized weights follow ggml: the activation rows are quantized once
//! per call to the weight type's partner format (Q8_0 for the 32-blocks, Q8_K for the K-quants)
//! and every output is an integer block dot product scaled in f32.

use rayon::prelude::*;

use crate::kernels::Kernels;
use crate::quant::{self, GgmlType};

/// A weight matrix as stored: `rows` output features, each a row of `cols` inputs in `typ`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub typ: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> MatRef<'a> {
    /// Bytes of one stored row.
    pub fn row_bytes(&self) -> usize {
        self.typ.row_bytes(self.cols as u64).unwrap_or(0) as usize
    }
    /// Stored row `r`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
    /// Row `r` dequantized into `out` (`cols` floats).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        dequantize_into(self.typ, self.row(r), out);
    }
}

/// Dequantizes one row. The loader validated types and sizes, so failure is a bug.
pub fn dequantize_into(typ: GgmlType, src: &[u8], out: &mut [f32]) {
    if let Err(e) = quant::dequantize_row(typ, src, out) {
        unreachable!("validated {typ} row failed to dequantize: {e:?}");
    }
}

/// The format activations are quantized to for a weight type (ggml's `vec_dot_type`), or
/// `None` when the weights are multiplied in f32.
pub fn activation_type(w: GgmlType) -> Option<GgmlType> {
    match w {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => None,
        GgmlType::Q4_0 | GgmlType::Q8_0 | GgmlType::Q5_0 => Some(GgmlType::Q8_0),
        GgmlType::Q4_1 | GgmlType::Q5_1 => Some(GgmlType::Q8_1),
        _ => Some(GgmlType::Q8_K),
    }
}

/// Whether owlet can multiply by weights of this type.
pub fn supported(w: GgmlType) -> bool {
    matches!(
        w,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
    )
}

/// Weight rows handled by one parallel task.
const ROWS_PER_TASK: usize = 16;

/// `y[i][j] = Σ_c x[i][c] · W[j][c]`: `x` is `m × cols`, `y` is `m × rows`.
pub fn matmul(k: &Kernels, w: MatRef<'_>, x: &[f32], y: &mut [f32]) {
    let (n, kdim) = (w.rows, w.cols);
    let m = x.len() / kdim;
    debug_assert_eq!(x.len(), m * kdim);
    debug_assert_eq!(y.len(), m * n);
    // Outputs are computed transposed (weight row major) so each task owns a contiguous slice.
    let mut yt = if m == 1 { Vec::new() } else { vec![0f32; m * n] };
    let out: &mut [f32] = if m == 1 { y } else { &mut yt };

    match activation_type(w.typ) {
        None => {
            let f32_weights = (w.typ == GgmlType::F32).then(|| f32_view(w.data)).flatten();
            out.par_chunks_mut(m * ROWS_PER_TASK).enumerate().for_each(|(t, chunk)| {
                let mut buf = vec![0f32; if f32_weights.is_some() { 0 } else { kdim }];
                for (jj, outs) in chunk.chunks_exact_mut(m).enumerate() {
                    let j = t * ROWS_PER_TASK + jj;
                    let wrow: &[f32] = match f32_weights {
                        Some(all) => &all[j * kdim..(j + 1) * kdim],
                        None => {
                            w.dequantize_row(j, &mut buf);
                            &buf
                        }
                    };
                    for (i, o) in outs.iter_mut().enumerate() {
                        *o = dot_f32(wrow, &x[i * kdim..(i + 1) * kdim]);
                    }
                }
            });
        }
        Some(at) => {
            let arb = at.row_bytes(kdim as u64).unwrap_or(0) as usize;
            let mut xq = vec![0u8; m * arb];
            xq.par_chunks_mut(arb).zip(x.par_chunks(kdim)).for_each(|(q, row)| {
                if let Err(e) = quant::quantize_row(at, row, q) {
                    unreachable!("activation row of {kdim} cannot be quantized to {at}: {e:?}");
                }
            });
            let Some(dot) = k.quant_dot(w.typ) else {
                unreachable!("no integer dot product for {}", w.typ);
            };
            out.par_chunks_mut(m * ROWS_PER_TASK).enumerate().for_each(|(t, chunk)| {
                for (jj, outs) in chunk.chunks_exact_mut(m).enumerate() {
                    let wrow = w.row(t * ROWS_PER_TASK + jj);
                    for (i, o) in outs.iter_mut().enumerate() {
                        *o = dot(kdim, wrow, &xq[i * arb..(i + 1) * arb]);
                    }
                }
            });
        }
    }
    if m > 1 {
        for j in 0..n {
            for i in 0..m {
                y[i * n + j] = yt[j * m + i];
            }
        }
    }
}

/// An f32 view of little-endian f32 bytes, when they are suitably aligned.
fn f32_view(bytes: &[u8]) -> Option<&[f32]> {
    if cfg!(target_endian = "little") {
        bytemuck::try_cast_slice(bytes).ok()
    } else {
        None
    }
}

/// f32 dot product with eight independent accumulators (fixed order: deterministic).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}
