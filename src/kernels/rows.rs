//! Row primitives for attention: dot products and `axpy` between f32 query/output rows and
//! f32 or f16 key/value rows. The variant is picked once per process ([`row_ops`]): AVX2+F16C
//! when the CPU has it (and `OWLET_KERNELS` does not ask for `generic`), else scalar code.

use std::sync::OnceLock;

use half::f16;

/// One implementation of the attention row primitives.
pub struct RowOps {
    pub name: &'static str,
    /// `Σ a[i]·b[i]`
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    /// `Σ a[i]·b[i]` with f16 `b`
    pub dot_f16: fn(&[f32], &[f16]) -> f32,
    /// `out[i] += w·v[i]`
    pub axpy_f32: fn(f32, &[f32], &mut [f32]),
    /// `out[i] += w·v[i]` with f16 `v`
    pub axpy_f16: fn(f32, &[f16], &mut [f32]),
}

/// The portable scalar row primitives.
pub static SCALAR: RowOps = RowOps {
    name: "generic",
    dot_f32: scalar_dot_f32,
    dot_f16: scalar_dot_f16,
    axpy_f32: scalar_axpy_f32,
    axpy_f16: scalar_axpy_f16,
};

/// The row primitives for this process (chosen on first use).
pub fn row_ops() -> &'static RowOps {
    static CHOSEN: OnceLock<&'static RowOps> = OnceLock::new();
    CHOSEN.get_or_init(|| {
        let forced_generic = std::env::var("OWLET_KERNELS").is_ok_and(|v| v == "generic");
        #[cfg(target_arch = "x86_64")]
        if !forced_generic {
            if let Some(ops) = super::avx2::detect_rows() {
                return ops;
            }
        }
        let _ = forced_generic;
        &SCALAR
    })
}

/// f32 dot product with eight independent accumulators (fixed order: deterministic).
pub fn scalar_dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for i in chunks * 8..n {
        s += a[i] * b[i];
    }
    s
}

fn scalar_dot_f16(a: &[f32], b: &[f16]) -> f32 {
    let mut acc = 0f32;
    for (x, y) in a.iter().zip(b) {
        acc += x * y.to_f32();
    }
    acc
}

fn scalar_axpy_f32(w: f32, v: &[f32], out: &mut [f32]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o += w * *x;
    }
}

fn scalar_axpy_f16(w: f32, v: &[f16], out: &mut [f32]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o += w * x.to_f32();
    }
}
