//! The AVX2 table with AVX-512 VL float tiles, for CPUs with AVX-512 but without AVX-VNNI
//! (AMD Zen 4; Intel Skylake-SP and Cascade Lake), which [`super::avx512vnni`]'s detection
//! turns away: their integer kernels stay AVX2's, while the float products get the 32-register
//! tiles of [`super::float_x86`] (the same numbers as AVX2's float tiles, bitwise).

use super::{avx2, float_x86, Kernels, WeightTable};
use crate::quant::GgmlType;

/// The table, if this CPU has AVX-512 F and VL and everything AVX2 needs.
pub(super) fn detect() -> Option<&'static Kernels> {
    let ok = avx2::detect().is_some()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl");
    ok.then_some(&AVX512)
}

/// Only handed out by [`detect`], after it has seen the features.
static AVX512: Kernels = Kernels {
    name: "avx512",
    weights: AVX512_WEIGHTS,
    ..avx2::AVX2_TABLE
};

/// AVX2's rows with the AVX-512 float tiles; also the base of the AVX-512 VNNI rows. Only in
/// tables handed out after detection has seen AVX-512 F and VL.
pub(super) const AVX512_WEIGHTS: WeightTable = avx2::AVX2_TABLE
    .weights
    .float(GgmlType::F32, avx2::f32_f32_dot, float_x86::f32_avx512)
    .float(GgmlType::F16, avx2::f16_f32_dot, float_x86::f16_avx512)
    .float(GgmlType::BF16, avx2::bf16_f32_dot, float_x86::bf16_avx512);
