//! NEON + dot-product (`sdot`, ARMv8.2 DotProd: Cortex-A55/A75/A76 and later, Raspberry Pi 5,
//! most phones since 2018) kernels for Q4_0·Q8_0 and Q8_0·Q8_0; the other kernels are the
//! baseline [`super::neon`] ones.
//!
//! `vdotq_s32` is a nightly-only intrinsic on Rust 1.95, so `sdot` is written as inline
//! assembly inside `#[target_feature(enable = "dotprod")]` functions. Block sums are exact
//! integers and the float steps match the generic kernels, so results are bit-identical to the
//! generic twins.
//!
//! The table is handed out only by [`detected`], after checking that the CPU has the
//! extension: executing `sdot` elsewhere is an illegal instruction.

use std::arch::aarch64::*;

use super::neon::{self, load_s8, n_blocks, q4_0_levels};
use super::Kernels;
use crate::quant::{read_f16, GgmlType};

static NEON_DOTPROD: Kernels = NEON_DOTPROD_TABLE;

/// The dot-product table as a constant, for tables that replace only some of its entries
/// (they must be handed out only where [`has_dotprod`] holds, too).
pub(crate) const NEON_DOTPROD_TABLE: Kernels = Kernels {
    name: "neon-dotprod",
    q4_0_q8_0: vec_dot_q4_0_q8_0,
    q8_0_q8_0: vec_dot_q8_0_q8_0,
    ..neon::NEON_TABLE
};

/// Whether this CPU has the dot-product extension: run-time detection (Linux/Android HWCAP,
/// Apple sysctl), except on Apple's mobile targets, where the compile-time feature decides.
pub fn has_dotprod() -> bool {
    #[cfg(any(
        target_os = "ios",
        target_os = "tvos",
        target_os = "watchos",
        target_os = "visionos"
    ))]
    {
        cfg!(target_feature = "dotprod")
    }
    #[cfg(not(any(
        target_os = "ios",
        target_os = "tvos",
        target_os = "watchos",
        target_os = "visionos"
    )))]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
}

/// The dot-product table, if this CPU can run it.
pub fn detected() -> Option<&'static Kernels> {
    has_dotprod().then_some(&NEON_DOTPROD)
}

/// `acc + sdot(a, b)`: each i32 lane gains the sum of four adjacent i8 products.
///
/// # Safety
/// The CPU must support the dot-product extension.
#[inline]
#[target_feature(enable = "dotprod")]
unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: the caller guarantees the extension; register operands only.
    unsafe {
        std::arch::asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack),
        );
    }
    acc
}

/// # Safety
/// The CPU must support the dot-product extension.
#[target_feature(enable = "dotprod")]
unsafe fn q4_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n_blocks(n, GgmlType::Q4_0, w, GgmlType::Q8_0, a);
    let mut sumf = 0.0f32;
    for (x, y) in w.chunks_exact(18).zip(a.chunks_exact(34)).take(nb) {
        let (lo, hi) = q4_0_levels(&x[2..18]);
        // SAFETY: the caller guarantees dotprod; the rest is baseline NEON on registers.
        let sumi = unsafe {
            let acc = sdot(sdot(vdupq_n_s32(0), lo, load_s8(y, 2)), hi, load_s8(y, 18));
            vaddvq_s32(acc)
        };
        sumf = (sumi as f32).mul_add(read_f16(x, 0) * read_f16(y, 0), sumf);
    }
    sumf
}

/// # Safety
/// The CPU must support the dot-product extension.
#[target_feature(enable = "dotprod")]
unsafe fn q8_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n_blocks(n, GgmlType::Q8_0, w, GgmlType::Q8_0, a);
    let mut sumf = 0.0f32;
    for (x, y) in w.chunks_exact(34).zip(a.chunks_exact(34)).take(nb) {
        // SAFETY: the caller guarantees dotprod; the rest is baseline NEON on registers.
        let sumi = unsafe {
            let acc = sdot(vdupq_n_s32(0), load_s8(x, 2), load_s8(y, 2));
            vaddvq_s32(sdot(acc, load_s8(x, 18), load_s8(y, 18)))
        };
        sumf = (sumi as f32).mul_add(read_f16(x, 0) * read_f16(y, 0), sumf);
    }
    sumf
}

/// Q4_0 weights · Q8_0 activations with `sdot`.
fn vec_dot_q4_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: this function is reachable only through NEON_DOTPROD, which `detected` hands
    // out only when the CPU has the extension.
    unsafe { q4_0_q8_0(n, w, a) }
}

/// Q8_0 weights · Q8_0 activations with `sdot`.
fn vec_dot_q8_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: as for vec_dot_q4_0_q8_0.
    unsafe { q8_0_q8_0(n, w, a) }
}
