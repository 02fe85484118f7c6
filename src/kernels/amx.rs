//! x86-64 Intel AMX (`amx-tile`, `amx-int8`): the AVX-512 VNNI table plus 16×16 tiles over
//! packed Q4_0/Q8_0/Q4_K/Q6_K weights for products of many activation rows (prefill, the
//! vision tower).
//!
//! Q4_0/Q8_0: per 32-value block, one `tdpbssd` multiplies 16 weight rows (the signed levels,
//! the `A` operand, 16 rows × 32 bytes, made from the packed record with its offset removed)
//! by 16 activation columns (signed Q8_0 quants in the layout of [`super::tile16`], the `B`
//! operand) into 16×16 exact i32 sums `s`, and every output gets the 32-block formula
//! `acc = fma(s, d_w·d_a, acc)` in f32 lanes over the columns. The K-quant bodies are described
//! at [`body_q4_k`] and [`body_q6_k`]. So the results equal the generic dot bitwise, like
//! every variant's.
//!
//! The tile instructions are written with `asm!` (Rust has no stable AMX intrinsics). Only the
//! functions here touch tile registers, always configuring them first and releasing them at
//! the end of a call, and nothing else in the process uses AMX, so no tile state crosses
//! other code. Linux makes a process ask for the tile state first (`arch_prctl`
//! `ARCH_REQ_XCOMP_PERM`); [`detect`] does, and reports no AMX when that fails.

#![allow(clippy::needless_range_loop)]

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::avx512vnni::{self, Packed, Q40, Q4_KX16, Q6_KX16, Q80};
use super::tile16::{ACT_RECORD, ACT_RECORD_K, COLS, K_SCALES, K_SUMS16, K_SUMS32};
use super::{Kernels, Packing, TILE_ROWS};

/// The AMX table, if the CPU has AMX-INT8 and the OS grants this process the tile state.
pub(super) fn detect() -> Option<&'static Kernels> {
    (avx512vnni::detect().is_some() && usable()).then_some(&AMX)
}

/// CPUID says AMX-TILE and AMX-INT8, and (on Linux) the kernel granted the tile data state.
fn usable() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        // CPUID leaf 7 exists on every CPU that passed the AVX-512 detection above.
        let leaf7 = __cpuid_count(7, 0);
        let (tile, int8) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 25) != 0);
        tile && int8 && request_tile_state()
    })
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: 0 when the kernel lets this
/// process use the tile registers.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn request_tile_state() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a plain system call that only changes this process's permitted xsave features;
    // `syscall` clobbers rcx and r11, declared below, and touches no memory of ours.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn request_tile_state() -> bool {
    false
}

static AMX: Kernels = Kernels {
    name: "amx",
    packings: &[
        Packing {
            tile16: Some(q4_0_tile16),
            ..avx512vnni::Q4_0_PACKING
        },
        Packing {
            tile16: Some(q8_0_tile16),
            ..avx512vnni::Q8_0_PACKING
        },
        Packing {
            tile16: Some(q4_k_tile16),
            ..avx512vnni::Q4_K_PACKING
        },
        Packing {
            tile16: Some(q6_k_tile16),
            ..avx512vnni::Q6_K_PACKING
        },
    ],
    ..avx512vnni::AVX512VNNI_TABLE
};

/// The 64-byte tile configuration: palette 1; two sets (tmm0–2 and tmm3–5, for two blocks in
/// flight) of C (16 rows × 64 bytes of i32), A (16 rows × 32 bytes), B (8 rows × 64 bytes).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    // colsb (u16 each) at 16 + 2·t, rows (u8) at 48 + t.
    let mut set = 0;
    while set < 2 {
        let t = 3 * set;
        c[16 + 2 * t] = 64;
        c[48 + t] = 16;
        c[16 + 2 * (t + 1)] = 32;
        c[48 + t + 1] = 16;
        c[16 + 2 * (t + 2)] = 64;
        c[48 + t + 2] = 8;
        set += 1;
    }
    TileConfig(c)
};

/// The configuration for 16-value groups (Q6_K): as [`CONFIG`] with A of 16 rows × 16 bytes
/// and B of 4 rows × 64 bytes.
const CONFIG_16: TileConfig = {
    let mut c = CONFIG.0;
    let mut set = 0;
    while set < 2 {
        let t = 3 * set;
        c[16 + 2 * (t + 1)] = 16;
        c[48 + t + 2] = 4;
        set += 1;
    }
    TileConfig(c)
};

/// Stack scratch for tile operands and results, 64-byte aligned and left uninitialized (the
/// bodies write every byte they read; zeroing 20–32 KiB per call showed up in profiles).
#[repr(C, align(64))]
struct Scratch<const N: usize>(std::mem::MaybeUninit<[u8; N]>);

impl<const N: usize> Scratch<N> {
    fn new() -> Self {
        Scratch(std::mem::MaybeUninit::uninit())
    }
    fn ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr().cast()
    }
}

/// Tile row `t` holds weight row `ROW_OF[t]` (the A operand is written quad by quad).
const ROW_OF: [usize; 16] = {
    let mut r = [0usize; 16];
    let mut t = 0;
    while t < 16 {
        r[t] = t / 4 + 4 * (t % 4);
        t += 1;
    }
    r
};

/// Writes block `rec`'s 16 rows as the A operand (see [`write_quads`]).
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn write_a<P: Packed>(rec: *const u8, a: *mut u8) {
    let (lo, hi) = P::quads(rec);
    // The stored quants carry the unsigned offset; the signed product wants the levels.
    let k = _mm512_set1_epi8(P::OFFSET);
    let signed = |z: __m512i| _mm512_sub_epi8(z, k);
    write_quads(&lo.map(signed), &hi.map(signed), a);
}

/// Writes one 32-value block of 16 rows, given as quads (`lo[k]`/`hi[k]`: values 0..16/16..32
/// of rows `k`, `k + 4`, `k + 8`, `k + 12` in its 16-byte lanes, as the packed records hold
/// them), as the A operand: 16 rows of 32 bytes, tile row `t` = weight row
/// `ROW_OF[t]`.
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn write_quads(lo: &[__m512i; 4], hi: &[__m512i; 4], a: *mut u8) {
    // Qwords of [lo lane L, hi lane L] for lanes 0, 1 and then 2, 3.
    let first = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
    let second = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
    for k in 0..4 {
        let x = _mm512_permutex2var_epi64(lo[k], first, hi[k]);
        let y = _mm512_permutex2var_epi64(lo[k], second, hi[k]);
        _mm512_storeu_si512(a.add(128 * k).cast(), x);
        _mm512_storeu_si512(a.add(128 * k + 64).cast(), y);
    }
}

/// 16 packed rows × 16 laid-out columns over `nb` blocks into `res[t][c]` (tile row order).
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
unsafe fn body<P: Packed>(nb: usize, g: *const u8, acts: *const u8, res: &mut [[f32; 16]; 16]) {
    let (mut a_buf, mut c_buf) = (Scratch::<4096>::new(), Scratch::<4096>::new());
    let (a_ptr, c_ptr) = (a_buf.ptr(), c_buf.ptr());
    let mut acc = [_mm512_setzero_ps(); 16];
    asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
    // Two blocks per step, one per tile set, and software-pipelined: while the tile unit
    // multiplies pair p, the vector unit scales pair p − 1 (C buffers alternate).
    let pairs = nb / 2;
    for p in 0..=pairs {
        if p < pairs {
            let b = 2 * p;
            let (rec, act) = (g.add(b * P::RECORD), acts.add(b * ACT_RECORD));
            write_a::<P>(rec, a_ptr);
            write_a::<P>(rec.add(P::RECORD), a_ptr.add(1024));
            asm!(
                "tilezero tmm0",
                "tilezero tmm3",
                "tileloadd tmm1, [{a} + {sa}*1]",
                "tileloadd tmm2, [{b} + {sb}*1]",
                "tileloadd tmm4, [{a2} + {sa}*1]",
                "tileloadd tmm5, [{b2} + {sb}*1]",
                "tdpbssd tmm0, tmm1, tmm2",
                "tdpbssd tmm3, tmm4, tmm5",
                a = in(reg) a_ptr,
                a2 = in(reg) a_ptr.add(1024),
                sa = in(reg) 32usize,
                b = in(reg) act,
                b2 = in(reg) act.add(ACT_RECORD),
                sb = in(reg) 64usize,
                options(nostack, readonly),
            );
        }
        if p > 0 {
            let b = 2 * (p - 1);
            let (rec, act) = (g.add(b * P::RECORD), acts.add(b * ACT_RECORD));
            let c = c_ptr.add(2048 * ((p - 1) % 2));
            scale::<P>(rec, act, c, &mut acc);
            scale::<P>(
                rec.add(P::RECORD),
                act.add(ACT_RECORD),
                c.add(1024),
                &mut acc,
            );
        }
        if p < pairs {
            let c = c_ptr.add(2048 * (p % 2));
            asm!(
                "tilestored [{c} + {sc}*1], tmm0",
                "tilestored [{c2} + {sc}*1], tmm3",
                c = in(reg) c,
                c2 = in(reg) c.add(1024),
                sc = in(reg) 64usize,
                options(nostack),
            );
        }
    }
    let b = 2 * pairs;
    if b < nb {
        let (rec, act) = (g.add(b * P::RECORD), acts.add(b * ACT_RECORD));
        write_a::<P>(rec, a_ptr);
        asm!(
            "tilezero tmm0",
            "tileloadd tmm1, [{a} + {sa}*1]",
            "tileloadd tmm2, [{b} + {sb}*1]",
            "tdpbssd tmm0, tmm1, tmm2",
            "tilestored [{c} + {sc}*1], tmm0",
            a = in(reg) a_ptr,
            sa = in(reg) 32usize,
            b = in(reg) act,
            sb = in(reg) 64usize,
            c = in(reg) c_ptr,
            sc = in(reg) 64usize,
            options(nostack),
        );
        scale::<P>(rec, act, c_ptr, &mut acc);
    }
    asm!("tilerelease", options(nostack, nomem));
    for t in 0..16 {
        _mm512_storeu_ps(res[t].as_mut_ptr(), acc[t]);
    }
}

/// One block's 16×16 exact sums `c` (tile row order) into the accumulators:
/// `acc[t][c] = fma(C[t][c], d_w[row t]·d_a[c], acc[t][c])`.
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn scale<P: Packed>(rec: *const u8, act: *const u8, c: *const u8, acc: &mut [__m512; 16]) {
    let mut dws = [0f32; 16];
    _mm512_storeu_ps(
        dws.as_mut_ptr(),
        _mm512_cvtph_ps(_mm256_loadu_si256(rec.cast())),
    );
    // The columns' scales.
    let da = _mm512_loadu_ps(act.add(512).cast());
    for t in 0..16 {
        let ct = _mm512_loadu_si512(c.add(64 * t).cast());
        let s = _mm512_cvtepi32_ps(ct);
        let d = _mm512_mul_ps(_mm512_set1_ps(dws[ROW_OF[t]]), da);
        acc[t] = _mm512_fmadd_ps(s, d, acc[t]);
    }
}

/// Runs `body` over one packed group and laid-out activations of `n` values, blocks of
/// `block` values taking `record` packed bytes and `act_record` laid-out bytes, into
/// `out[r·16 + c]` (weight row order). Short inputs yield nothing.
fn run(
    n: usize,
    group: &[u8],
    acts: &[u8],
    out: &mut [f32],
    (block, record, act_record): (usize, usize, usize),
    body: unsafe fn(usize, *const u8, *const u8, &mut [[f32; 16]; 16]),
) {
    let nb = n / block;
    if group.len() < nb * record || acts.len() < nb * act_record || out.len() < TILE_ROWS * COLS {
        return;
    }
    let mut res = [[0f32; 16]; 16];
    // SAFETY: AMX-TILE/INT8 (granted by the OS) and AVX-512 F/BW/VNNI, AVX-VNNI, AVX2, FMA,
    // F16C were detected before this table could be obtained; `group` holds nb records and
    // `acts` nb laid-out blocks, exactly what the bodies read.
    unsafe { body(nb, group.as_ptr(), acts.as_ptr(), &mut res) };
    for (t, row) in res.iter().enumerate() {
        out[ROW_OF[t] * COLS..(ROW_OF[t] + 1) * COLS].copy_from_slice(row);
    }
}

fn q4_0_tile16(n: usize, group: &[u8], acts: &[u8], out: &mut [f32]) {
    run(
        n,
        group,
        acts,
        out,
        (32, Q40::RECORD, ACT_RECORD),
        body::<Q40>,
    )
}

fn q8_0_tile16(n: usize, group: &[u8], acts: &[u8], out: &mut [f32]) {
    run(
        n,
        group,
        acts,
        out,
        (32, Q80::RECORD, ACT_RECORD),
        body::<Q80>,
    )
}

fn q4_k_tile16(n: usize, group: &[u8], acts: &[u8], out: &mut [f32]) {
    run(n, group, acts, out, (256, Q4_KX16, ACT_RECORD_K), body_q4_k)
}

/// Writes super-block record `rec`'s eight 32-value sub-blocks as A operands, 512 bytes apart.
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn write_a_q4_k(rec: *const u8, a: *mut u8) {
    let m4 = _mm512_set1_epi8(0x0F);
    for c in 0..4 {
        // Chunk c holds sub-blocks 2c (low nibbles) and 2c + 1 (high nibbles).
        let z0: [__m512i; 4] =
            std::array::from_fn(|k| _mm512_loadu_si512(rec.add(320 + 512 * c + 64 * k).cast()));
        let z1: [__m512i; 4] = std::array::from_fn(|k| {
            _mm512_loadu_si512(rec.add(320 + 512 * c + 256 + 64 * k).cast())
        });
        let low = |z: __m512i| _mm512_and_si512(z, m4);
        let high = |z: __m512i| _mm512_and_si512(_mm512_srli_epi16::<4>(z), m4);
        write_quads(&z0.map(low), &z1.map(low), a.add(1024 * c));
        write_quads(&z0.map(high), &z1.map(high), a.add(1024 * c + 512));
    }
}

/// Two independent tile products with the configured tile sets (tmm0–2, tmm3–5):
/// `C_i = A_i·B_i` from zero, A rows `a_stride` bytes apart, B rows 64, stored to `c[i]`
/// (16 rows of 64 bytes).
#[inline(always)]
unsafe fn tdp_pair(a: [*const u8; 2], a_stride: usize, b: [*const u8; 2], c: [*mut u8; 2]) {
    asm!(
        "tilezero tmm0",
        "tilezero tmm3",
        "tileloadd tmm1, [{a} + {sa}*1]",
        "tileloadd tmm2, [{b} + {sb}*1]",
        "tileloadd tmm4, [{a2} + {sa}*1]",
        "tileloadd tmm5, [{b2} + {sb}*1]",
        "tdpbusd tmm0, tmm1, tmm2",
        "tdpbusd tmm3, tmm4, tmm5",
        "tilestored [{c} + {sc}*1], tmm0",
        "tilestored [{c2} + {sc}*1], tmm3",
        a = in(reg) a[0],
        a2 = in(reg) a[1],
        sa = in(reg) a_stride,
        b = in(reg) b[0],
        b2 = in(reg) b[1],
        sb = in(reg) 64usize,
        c = in(reg) c[0],
        c2 = in(reg) c[1],
        sc = in(reg) 64usize,
        options(nostack),
    );
}

/// Tile row `t`'s (weight row `r`) integer sums over one super-block: `Σ_j sc[j][r]·C_j[t]`
/// from the `J` group results in `c` (1 KiB apart), and `Σ_p` of `vpdpwssd(sums[p],
/// pairs[p][r])` (per column, the groups' activation sums times the row's i16 pair).
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn row_sums<const J: usize, const P: usize>(
    c: *const u8,
    t: usize,
    sc: &[[i32; 16]; J],
    pairs: &[[i32; 16]; P],
    sums: &[__m512i; P],
) -> (__m512i, __m512i) {
    let r = ROW_OF[t];
    let mut isum = _mm512_setzero_si512();
    for j in 0..J {
        let cj = _mm512_loadu_si512(c.add(1024 * j + 64 * t).cast());
        isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(cj, _mm512_set1_epi32(sc[j][r])));
    }
    let mut msum = _mm512_setzero_si512();
    for p in 0..P {
        msum = _mm512_dpwssd_epi32(msum, sums[p], _mm512_set1_epi32(pairs[p][r]));
    }
    (isum, msum)
}

/// 16 packed Q4_K rows × 16 laid-out Q8_K columns over `nb` super-blocks into `res[t][c]`
/// (tile row order). Per super-block, one `tdpbusd` per 32-value sub-block `j` gives the exact
/// sums `C_j` (levels 0..16 are unsigned, no offset); [`scale_q4_k`] then forms
/// `isum = Σ_j sc_j·C_j` and `msum = Σ_j m_j·Σa_j` in i32 and scales them as
/// [`super::tiles::q4_k_q8_k_exact`] does. The tile unit multiplies super-block `b` while the
/// vector unit scales `b − 1` (C buffers alternate).
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
unsafe fn body_q4_k(nb: usize, g: *const u8, acts: *const u8, res: &mut [[f32; 16]; 16]) {
    let mut a_buf = Scratch::<4096>::new();
    let a_ptr = a_buf.ptr();
    let multiply = |b: usize, c: *mut u8| {
        let (rec, act) = (g.add(b * Q4_KX16), acts.add(b * ACT_RECORD_K));
        write_a_q4_k(rec, a_ptr);
        for pair in 0..4 {
            let at = 1024 * pair;
            tdp_pair(
                [a_ptr.add(at), a_ptr.add(at + 512)],
                32,
                [act.add(at), act.add(at + 512)],
                [c.add(2 * at), c.add(2 * at + 1024)],
            );
        }
    };
    let scale = |b: usize, c: *const u8, acc: &mut [__m512; 16]| {
        scale_q4_k(g.add(b * Q4_KX16), acts.add(b * ACT_RECORD_K), c, acc)
    };
    super_blocks::<8192>(nb, &CONFIG, res, multiply, scale);
}

/// The super-block pipeline of the K-quant bodies: `multiply(b, c)` runs super-block `b`'s
/// tile products into the result buffer `c` (`C_BYTES`), `scale(b, c, acc)` folds them into
/// the 16 row accumulators. The tile unit multiplies super-block `b` while the vector unit
/// scales `b − 1` (the two result buffers alternate). Configures the tiles first and releases
/// them at the end; `res[t]` gets tile row `t`'s accumulator.
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
unsafe fn super_blocks<const C_BYTES: usize>(
    nb: usize,
    config: &TileConfig,
    res: &mut [[f32; 16]; 16],
    multiply: impl Fn(usize, *mut u8),
    scale: impl Fn(usize, *const u8, &mut [__m512; 16]),
) {
    let mut halves = [Scratch::<C_BYTES>::new(), Scratch::<C_BYTES>::new()];
    let mut acc = [_mm512_setzero_ps(); 16];
    asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
    for b in 0..=nb {
        if b < nb {
            multiply(b, halves[b % 2].ptr());
        }
        if b > 0 {
            scale(b - 1, halves[(b - 1) % 2].ptr(), &mut acc);
        }
    }
    asm!("tilerelease", options(nostack, nomem));
    for t in 0..16 {
        _mm512_storeu_ps(res[t].as_mut_ptr(), acc[t]);
    }
}

/// One Q4_K super-block's eight 16×16 sub-block sums `c` (1 KiB apart, tile row order) into
/// the accumulators: per tile row `t` (weight row `r = ROW_OF[t]`), `isum = Σ_j sc_j[r]·C_j[t]`,
/// `msum = Σ_j m_j[r]·Σa_j` (i16 pairs, `vpdpwssd`), then `acc += (d[r]·d_a)·isum` and
/// `acc −= (dmin[r]·d_a)·msum` with separate roundings, as the scalar formula.
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn scale_q4_k(rec: *const u8, act: *const u8, c: *const u8, acc: &mut [__m512; 16]) {
    let (mut d, mut dmin) = ([0f32; 16], [0f32; 16]);
    _mm512_storeu_ps(
        d.as_mut_ptr(),
        _mm512_cvtph_ps(_mm256_loadu_si256(rec.cast())),
    );
    _mm512_storeu_ps(
        dmin.as_mut_ptr(),
        _mm512_cvtph_ps(_mm256_loadu_si256(rec.add(32).cast())),
    );
    // Row-order scales (i32) and min pairs (m_2p | m_2p+1 << 16) of the 16 rows.
    let mut sc = [[0i32; 16]; 8];
    for j in 0..8 {
        let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(rec.add(64 + 16 * j).cast()));
        _mm512_storeu_si512(sc[j].as_mut_ptr().cast(), v);
    }
    let mut mins = [[0i32; 16]; 4];
    for p in 0..4 {
        let m0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(rec.add(192 + 32 * p).cast()));
        let m1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(rec.add(208 + 32 * p).cast()));
        let v = _mm512_or_si512(m0, _mm512_slli_epi32::<16>(m1));
        _mm512_storeu_si512(mins[p].as_mut_ptr().cast(), v);
    }
    let sums: [__m512i; 4] =
        std::array::from_fn(|p| _mm512_loadu_si512(act.add(K_SUMS32 + 64 * p).cast()));
    let da = _mm512_loadu_ps(act.add(K_SCALES).cast());
    for t in 0..16 {
        let r = ROW_OF[t];
        let (isum, msum) = row_sums(c, t, &sc, &mins, &sums);
        let dd = _mm512_mul_ps(_mm512_set1_ps(d[r]), da);
        acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(dd, _mm512_cvtepi32_ps(isum)));
        let dm = _mm512_mul_ps(_mm512_set1_ps(dmin[r]), da);
        acc[t] = _mm512_sub_ps(acc[t], _mm512_mul_ps(dm, _mm512_cvtepi32_ps(msum)));
    }
}

fn q6_k_tile16(n: usize, group: &[u8], acts: &[u8], out: &mut [f32]) {
    run(n, group, acts, out, (256, Q6_KX16, ACT_RECORD_K), body_q6_k)
}

/// 16 packed Q6_K rows × 16 laid-out Q8_K columns over `nb` super-blocks into `res[t][c]`
/// (tile row order). The packed record already holds each 16-value group's levels (`q + 32`,
/// unsigned) as 16 rows of 16 bytes in tile row order, so the A operand is loaded straight
/// from it, and the B operand is half of a laid-out 32-value operand. One `tdpbusd` per group
/// gives the exact sums `C_j`; [`scale_q6_k`] forms `isum = Σ_j sc_j·C_j` and
/// `msum = Σ_j sc_j·Σa_j` and scales `isum − 32·msum` as [`super::tiles::q6_k_q8_k_exact`]
/// does. The tile unit multiplies super-block `b` while the vector unit scales `b − 1`.
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
unsafe fn body_q6_k(nb: usize, g: *const u8, acts: *const u8, res: &mut [[f32; 16]; 16]) {
    let multiply = |b: usize, c: *mut u8| {
        let (rec, act) = (g.add(b * Q6_KX16), acts.add(b * ACT_RECORD_K));
        for j in (0..16).step_by(2) {
            tdp_pair(
                [rec.add(288 + 256 * j), rec.add(288 + 256 * (j + 1))],
                16,
                [act.add(256 * j), act.add(256 * (j + 1))],
                [c.add(1024 * j), c.add(1024 * (j + 1))],
            );
        }
    };
    let scale = |b: usize, c: *const u8, acc: &mut [__m512; 16]| {
        scale_q6_k(g.add(b * Q6_KX16), acts.add(b * ACT_RECORD_K), c, acc)
    };
    super_blocks::<16384>(nb, &CONFIG_16, res, multiply, scale);
}

/// One Q6_K super-block's sixteen 16×16 group sums `c` (1 KiB apart, tile row order) into the
/// accumulators: per tile row `t` (weight row `r = ROW_OF[t]`), `isum = Σ_j sc_j[r]·C_j[t]`,
/// `msum = Σ_j sc_j[r]·Σa_j` (i16 pairs, `vpdpwssd`), then
/// `acc += (d[r]·d_a)·(isum − 32·msum)`, as the scalar formula.
#[target_feature(enable = "avx2,fma,f16c,avxvnni,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn scale_q6_k(rec: *const u8, act: *const u8, c: *const u8, acc: &mut [__m512; 16]) {
    let mut d = [0f32; 16];
    _mm512_storeu_ps(
        d.as_mut_ptr(),
        _mm512_cvtph_ps(_mm256_loadu_si256(rec.cast())),
    );
    // Row-order signed scales (i32), and as i16 pairs (sc_2p, sc_2p+1).
    let mut sc = [[0i32; 16]; 16];
    for j in 0..16 {
        let v = _mm512_cvtepi8_epi32(_mm_loadu_si128(rec.add(32 + 16 * j).cast()));
        _mm512_storeu_si512(sc[j].as_mut_ptr().cast(), v);
    }
    let mut pairs = [[0i32; 16]; 8];
    let low16 = _mm512_set1_epi32(0xFFFF);
    for p in 0..8 {
        let s0 = _mm512_loadu_si512(sc[2 * p].as_ptr().cast());
        let s1 = _mm512_loadu_si512(sc[2 * p + 1].as_ptr().cast());
        let v = _mm512_or_si512(_mm512_and_si512(s0, low16), _mm512_slli_epi32::<16>(s1));
        _mm512_storeu_si512(pairs[p].as_mut_ptr().cast(), v);
    }
    let sums: [__m512i; 8] =
        std::array::from_fn(|p| _mm512_loadu_si512(act.add(K_SUMS16 + 64 * p).cast()));
    let da = _mm512_loadu_ps(act.add(K_SCALES).cast());
    for t in 0..16 {
        let r = ROW_OF[t];
        let (isum, msum) = row_sums(c, t, &sc, &pairs, &sums);
        let net = _mm512_sub_epi32(isum, _mm512_slli_epi32::<5>(msum));
        let dd = _mm512_mul_ps(_mm512_set1_ps(d[r]), da);
        acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(dd, _mm512_cvtepi32_ps(net)));
    }
}
