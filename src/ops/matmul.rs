//! `y = x Wᵀ` for a weight matrix in any supported ggml type.
//!
//! f32/f16/bf16 weights are multiplied in f32 (exact products, f32 sums, in the kernels' float
//! tiles): that is the path the strict goldens check. Quantized weights follow ggml: the activation rows are quantized once
//! per call to the weight type's partner format (Q8_0 for the 32-blocks, Q8_K for the K-quants)
//! and every output is an integer block dot product scaled in f32.

use rayon::prelude::*;

use crate::kernels::{tile16, Kernels, Packing, QuantTile, FLOAT_TILE_ROWS, TILE, TILE_ROWS};
use crate::quant::{self, GgmlType};

/// A weight matrix as stored: `rows` output features, each a row of `cols` inputs in `typ`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub typ: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
    /// The same rows repacked at load for the kernels' [`Packing`] of `typ`, if any.
    pub packed: Option<&'a [u8]>,
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

/// The format activations are quantized to for a weight type (its row of the type table,
/// [`quant::TypeTraits::vec_dot_type`]), or `None` when the weights are multiplied in f32.
pub fn activation_type(w: GgmlType) -> Option<GgmlType> {
    Some(quant::vec_dot_type(w)).filter(|&at| at != GgmlType::F32)
}

/// Whether owlet can multiply by weights of this type ([`quant::TypeTraits::matmul`]).
pub fn supported(w: GgmlType) -> bool {
    w.traits().matmul
}

/// Reusable per-thread buffers: quantized activations and the transposed output of a
/// many-row product. They grow to the largest call seen and are then reused, so steady-state
/// decoding allocates nothing here.
#[derive(Default)]
struct Scratch {
    xq: Vec<u8>,
    yt: Vec<f32>,
    /// Activations laid out for 16×16 tiles.
    xt: Vec<u8>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch (or a fresh one if it is already in use, which only a
/// re-entrant call from inside a parallel section could cause).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Weight rows per parallel task: about eight tasks per thread, a multiple of `unit` (the
/// tallest tile), at least `unit` rows. Results do not depend on it (every output is computed
/// whole by one kernel call whose value does not depend on the tile shape), only speed does.
fn rows_per_task(n: usize, unit: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let per = n.div_ceil(8 * threads).max(unit);
    per.div_ceil(unit) * unit
}

/// One kernel call of a product: `(r0, nw, i0, na, res)` computes weight rows `r0..r0 + nw` ×
/// activation rows `i0..i0 + na` into `res[r·na + c]`.
type TileRun<'a> = dyn Fn(usize, usize, usize, usize, &mut [f32]) + Sync + 'a;

/// `y[i][j] = Σ_c x[i][c] · W[j][c]`: `x` is `m × cols`, `y` is `m × rows`.
///
/// Quantized weights: `x` is quantized once per call into per-thread scratch, then each task
/// takes a fixed band of weight rows and sweeps the activation rows in tiles of
/// [`Kernels::tile_rows`] weight rows (4, or 16 where the kernels have a row per SIMD lane) ×
/// up to [`TILE`] activation rows per kernel call, the whole row length inside the call.
/// Decode (`m = 1`) is the same loop with one activation row, so each loaded activation block
/// feeds all the tile's weight rows. Float weights: the same loops over the kernels' float
/// tiles ([`FLOAT_TILE_ROWS`] weight rows × up to [`TILE`] f32 activation rows).
/// Every output element is computed by exactly one kernel call, so results are identical for
/// every thread count.
pub fn matmul(k: &Kernels, w: MatRef<'_>, x: &[f32], y: &mut [f32]) {
    let (n, kdim) = (w.rows, w.cols);
    if kdim == 0 || n == 0 {
        y.fill(0.0);
        return;
    }
    let m = x.len() / kdim;
    debug_assert_eq!(x.len(), m * kdim);
    debug_assert_eq!(y.len(), m * n);
    with_scratch(|scratch| {
        let Scratch { xq, yt, xt } = scratch;
        // Quantized weights: the activations are quantized once, into per-thread scratch.
        let quantized = activation_type(w.typ).map(|at| {
            let arb = at.row_bytes(kdim as u64).unwrap_or(0) as usize;
            if xq.len() < m * arb {
                xq.resize(m * arb, 0);
            }
            quantize_rows(k, at, x, kdim, arb, &mut xq[..m * arb]);
            arb
        });
        let xq = &xq[..quantized.map_or(0, |arb| m * arb)];
        let tiles = quantized.map(|_| Tiles::new(k, w));
        // The kernel call for any tile of this product, and the tallest tile's rows.
        let quant_run;
        let float_run;
        let (run, unit): (&TileRun<'_>, usize) = match (&tiles, quantized) {
            (Some(tiles), Some(arb)) => {
                quant_run = move |r0: usize, nw: usize, i0: usize, na: usize, res: &mut [f32]| {
                    let mut a: [&[u8]; TILE] = [&[]; TILE];
                    for (c, slot) in a.iter_mut().enumerate().take(na) {
                        *slot = &xq[(i0 + c) * arb..(i0 + c + 1) * arb];
                    }
                    tiles.run(r0, nw, &a[..na], res);
                };
                (&quant_run, TILE_ROWS)
            }
            _ => {
                let Some(tile) = k.float_tile(w.typ) else {
                    unreachable!("no float tile for {}", w.typ);
                };
                float_run = move |r0: usize, nw: usize, i0: usize, na: usize, res: &mut [f32]| {
                    let mut wr: [&[u8]; FLOAT_TILE_ROWS] = [&[]; FLOAT_TILE_ROWS];
                    for (r, slot) in wr.iter_mut().enumerate().take(nw) {
                        *slot = w.row(r0 + r);
                    }
                    let mut a: [&[f32]; TILE] = [&[]; TILE];
                    for (c, slot) in a.iter_mut().enumerate().take(na) {
                        *slot = &x[(i0 + c) * kdim..(i0 + c + 1) * kdim];
                    }
                    tile(kdim, &wr[..nw], &a[..na], res);
                };
                (&float_run, FLOAT_TILE_ROWS)
            }
        };
        if m >= ROW_SPLIT_MIN {
            match tiles.as_ref().and_then(|t| t.packed) {
                Some((p, packed)) if p.tile16.is_some() => {
                    let arb = quantized.unwrap_or(0);
                    quant_product_tile16(p, packed, w, xq, arb, xt, y)
                }
                _ => {
                    let tr = tiles.as_ref().map_or(FLOAT_TILE_ROWS, |t| t.rows);
                    product_by_act_rows(run, tr, w, m, y)
                }
            }
            return;
        }
        // Bands of weight rows: outputs of many-row products are computed transposed (weight
        // row major) so that each task owns one contiguous slice; decode writes `y` directly.
        let band = rows_per_task(n, unit);
        let out: &mut [f32] = if m == 1 {
            y
        } else {
            if yt.len() < m * n {
                yt.resize(m * n, 0.0);
            }
            &mut yt[..m * n]
        };
        let tr = tiles.as_ref().map_or(FLOAT_TILE_ROWS, |t| t.rows);
        product_by_bands(run, tr, m, band, out);
        if m > 1 {
            transpose_into(yt, m, n, y);
        }
    });
}

/// Quantizes the `m` activation rows of `x` (each `kdim` floats) into `xq` (`arb` bytes each).
fn quantize_rows(k: &Kernels, at: GgmlType, x: &[f32], kdim: usize, arb: usize, xq: &mut [u8]) {
    let ops = &k.rows;
    let one = |(q, row): (&mut [u8], &[f32])| {
        let done = match at {
            GgmlType::Q8_0 => (ops.quantize_q8_0)(row, q),
            GgmlType::Q8_K => (ops.quantize_q8_k)(row, q),
            _ => quant::quantize_row(at, row, q),
        };
        if let Err(e) = done {
            unreachable!("activation row of {kdim} cannot be quantized to {at}: {e:?}");
        }
    };
    if xq.len() <= arb {
        xq.chunks_mut(arb).zip(x.chunks(kdim)).for_each(one);
    } else {
        xq.par_chunks_mut(arb).zip(x.par_chunks(kdim)).for_each(one);
    }
}

/// A product into `out` (`n × m`, weight row major; for `m = 1` simply `n`): each task owns a
/// band of `band` weight rows and sweeps the activation rows over it in tiles of `tr` weight
/// rows × up to [`TILE`] activation rows.
fn product_by_bands(run: &TileRun<'_>, tr: usize, m: usize, band: usize, out: &mut [f32]) {
    out.par_chunks_mut(m * band)
        .enumerate()
        .for_each(|(t, chunk)| {
            let j_start = t * band;
            let n_rows = chunk.len() / m;
            let mut res = [0f32; TILE_ROWS * TILE];
            // Activation tiles outside, weight tiles inside: the band's weight rows stay in cache
            // while each activation tile is swept over them.
            for i0 in (0..m).step_by(TILE) {
                let na = TILE.min(m - i0);
                for r0 in (0..n_rows).step_by(tr) {
                    let nw = tr.min(n_rows - r0);
                    run(j_start + r0, nw, i0, na, &mut res);
                    for r in 0..nw {
                        for c in 0..na {
                            chunk[(r0 + r) * m + i0 + c] = res[r * na + c];
                        }
                    }
                }
            }
        });
}

/// The tile kernel of one quantized product: the variant's packed tile over the matrix's
/// packed groups when it has both, else its plain tile over row slices.
struct Tiles<'a> {
    /// Weight rows per call: a multiple of which every band and block is made.
    rows: usize,
    w: MatRef<'a>,
    plain: QuantTile,
    packed: Option<(&'static Packing, &'a [u8])>,
}

impl<'a> Tiles<'a> {
    fn new(k: &Kernels, w: MatRef<'a>) -> Tiles<'a> {
        let Some(plain) = k.quant_tile(w.typ) else {
            unreachable!("no integer dot product for {}", w.typ);
        };
        let packed = k.packing(w.typ).zip(w.packed);
        let rows = if packed.is_some() {
            TILE_ROWS
        } else {
            k.tile_rows(w.typ)
        };
        Tiles {
            rows,
            w,
            plain,
            packed,
        }
    }

    /// Weight rows `r0..r0 + nw` × the activation rows `a` into `res[r·a.len() + c]`.
    fn run(&self, r0: usize, nw: usize, a: &[&[u8]], res: &mut [f32]) {
        match self.packed {
            // Packed matrices have whole groups: r0 is a multiple of 16 and nw is 16.
            Some((p, bytes)) => {
                let gb = p.group_bytes(self.w.cols);
                let g = r0 / TILE_ROWS;
                (p.tile)(self.w.cols, &bytes[g * gb..(g + 1) * gb], a, res);
            }
            None => {
                let mut wr: [&[u8]; TILE_ROWS] = [&[]; TILE_ROWS];
                for (r, slot) in wr.iter_mut().enumerate().take(nw) {
                    *slot = self.w.row(r0 + r);
                }
                (self.plain)(self.w.cols, &wr[..nw], a, res);
            }
        }
    }
}

/// Repacked weights: an anonymous memory map where the OS gives one (on Linux advised to use
/// transparent huge pages: decode streams gigabytes of them per token, and 4 KiB pages cost a
/// TLB miss every 4 KiB and stop prefetches at each page edge), else a heap buffer.
pub enum PackedWeights {
    Map(memmap2::Mmap),
    Heap(Vec<u8>),
    /// A range of a packed-weight cache file mapped read-only (`model::packed_cache`): file
    /// pages, which the OS can drop and read back, shared by every process mapping the file.
    /// The range was checked against the map when the file was opened.
    File(std::sync::Arc<memmap2::Mmap>, std::ops::Range<usize>),
}

impl std::ops::Deref for PackedWeights {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            PackedWeights::Map(m) => m,
            PackedWeights::Heap(v) => v,
            PackedWeights::File(m, r) => m.get(r.clone()).unwrap_or(&[]),
        }
    }
}

impl std::fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedWeights({} bytes)", self.len())
    }
}

/// `len` zeroed bytes for packed weights, and where they live.
fn packed_buffer(len: usize) -> Result<memmap2::MmapMut, Vec<u8>> {
    match memmap2::MmapMut::map_anon(len) {
        Ok(map) => {
            #[cfg(target_os = "linux")]
            {
                // A hint: without transparent huge pages it changes nothing.
                let _ = map.advise(memmap2::Advice::HugePage);
            }
            Ok(map)
        }
        Err(_) => Err(vec![0u8; len]),
    }
}

/// Bytes of `w` packed for `p`, or `None` when its shape does not divide into groups of whole
/// blocks (such a matrix stays unpacked).
pub fn packed_len(p: &Packing, w: MatRef<'_>) -> Option<usize> {
    if w.typ != p.typ
        || !w.rows.is_multiple_of(TILE_ROWS)
        || !w.cols.is_multiple_of(p.typ.block_size())
        || w.cols == 0
        || w.rows == 0
        || w.data.len() != w.rows * w.row_bytes()
    {
        return None;
    }
    (w.rows / TILE_ROWS).checked_mul(p.group_bytes(w.cols))
}

/// Packs group `g` (rows `16g..16g + 16`) of `w` into `out` (one group's bytes). `w`'s shape
/// must have passed [`packed_len`].
pub fn pack_group(p: &Packing, w: MatRef<'_>, g: usize, out: &mut [u8]) {
    let rows: [&[u8]; TILE_ROWS] = std::array::from_fn(|r| w.row(g * TILE_ROWS + r));
    (p.pack)(w.cols, &rows, out);
}

/// Repacks `w` for `p` (groups of [`TILE_ROWS`] rows, in parallel), or `None` when its shape
/// does not divide into groups of whole blocks.
pub fn pack(p: &Packing, w: MatRef<'_>) -> Option<PackedWeights> {
    let len = packed_len(p, w)?;
    let gb = p.group_bytes(w.cols);
    let fill = |out: &mut [u8]| {
        out.par_chunks_mut(gb)
            .enumerate()
            .for_each(|(g, o)| pack_group(p, w, g, o))
    };
    Some(match packed_buffer(len) {
        Ok(mut map) => {
            fill(&mut map);
            match map.make_read_only() {
                Ok(m) => PackedWeights::Map(m),
                Err(_) => return None,
            }
        }
        Err(mut heap) => {
            fill(&mut heap);
            PackedWeights::Heap(heap)
        }
    })
}

/// Activation rows from which a quantized product splits its work by activation rows rather
/// than by weight rows (see [`quant_product_by_rows`]).
const ROW_SPLIT_MIN: usize = 32;

/// Bytes of weight rows a [`quant_product_by_rows`] task sweeps its activation rows over before
/// moving on: small enough to stay in a core's L2 cache.
const WEIGHT_BLOCK_BYTES: usize = 256 << 10;

/// A product for many activation rows, written straight into `y` (`m × n`): each task owns a
/// run of activation rows (whole rows of `y`) and walks the weights in [`WEIGHT_BLOCK_BYTES`]
/// blocks, sweeping its activation rows in tiles (`tr` weight rows × up to [`TILE`] activation
/// rows) over each block while it is cached. Every task reads every weight once, which for
/// m ≥ [`ROW_SPLIT_MIN`] costs far less than the compute, and nothing is transposed
/// afterwards. Same tiles, same numbers as [`product_by_bands`].
fn product_by_act_rows(run: &TileRun<'_>, tr: usize, w: MatRef<'_>, m: usize, y: &mut [f32]) {
    let n = w.rows;
    let threads = rayon::current_num_threads().max(1);
    // About four tasks per thread, whole activation tiles, at least 16 rows.
    let mb = m.div_ceil(4 * threads).max(16).div_ceil(TILE) * TILE;
    let block = (WEIGHT_BLOCK_BYTES / w.row_bytes().max(1)).max(tr) / tr * tr;
    y.par_chunks_mut(mb * n).enumerate().for_each(|(t, ys)| {
        let i_start = t * mb;
        let rows_here = ys.len() / n;
        let mut res = [0f32; TILE_ROWS * TILE];
        for j0 in (0..n).step_by(block) {
            let j1 = n.min(j0 + block);
            for i0 in (0..rows_here).step_by(TILE) {
                let na = TILE.min(rows_here - i0);
                for r0 in (j0..j1).step_by(tr) {
                    let nw = tr.min(j1 - r0);
                    run(r0, nw, i_start + i0, na, &mut res);
                    for c in 0..na {
                        let yrow = &mut ys[(i0 + c) * n..(i0 + c + 1) * n];
                        for r in 0..nw {
                            yrow[r0 + r] = res[r * na + c];
                        }
                    }
                }
            }
        }
    });
}

/// The quantized product for many activation rows through the variant's 16×16 tiles (AMX, VNNI)
/// over packed weights: the activations are laid out once per call in column tiles of
/// [`tile16::COLS`] rows, then each task owns a run of column tiles (whole rows of `y`) and walks
/// the weight groups in [`WEIGHT_BLOCK_BYTES`] blocks. Same numbers as the other products.
fn quant_product_tile16(
    p: &Packing,
    packed: &[u8],
    w: MatRef<'_>,
    xq: &[u8],
    arb: usize,
    xt: &mut Vec<u8>,
    y: &mut [f32],
) {
    let Some(tile16) = p.tile16 else {
        unreachable!("no 16x16 tile for {}", p.typ);
    };
    let (n, kdim) = (w.rows, w.cols);
    let cols = tile16::COLS;
    let m = xq.len() / arb.max(1);
    let n_ct = m.div_ceil(cols);
    let layout = activation_type(p.typ).and_then(|at| Some((at, tile16::act_bytes(at, kdim)?)));
    let Some((at, ct_bytes)) = layout else {
        unreachable!("no 16x16 activation layout for {}", p.typ);
    };
    if xt.len() < n_ct * ct_bytes {
        xt.resize(n_ct * ct_bytes, 0);
    }
    let xt = &mut xt[..n_ct * ct_bytes];
    xt.par_chunks_mut(ct_bytes)
        .enumerate()
        .for_each(|(t, out)| {
            let (c0, cn) = (t * cols, cols.min(m - t * cols));
            let mut rows: [&[u8]; tile16::COLS] = [&[]; tile16::COLS];
            for (c, slot) in rows.iter_mut().enumerate().take(cn) {
                *slot = &xq[(c0 + c) * arb..(c0 + c + 1) * arb];
            }
            tile16::layout(at, kdim, &rows[..cn], out);
        });
    let xt: &[u8] = xt;
    let gb = p.group_bytes(kdim);
    let groups = n / TILE_ROWS;
    let threads = rayon::current_num_threads().max(1);
    // One run of column tiles per thread: every task streams all the weights from memory
    // once, so more tasks than threads would stream them again (a 64-row Q8_0 prefill ran
    // 15–18 % faster with one task per thread than with two; 512 rows, no change).
    let per_task = n_ct.div_ceil(threads).max(1);
    let block = (WEIGHT_BLOCK_BYTES / gb.max(1)).max(1);
    y.par_chunks_mut(per_task * cols * n)
        .enumerate()
        .for_each(|(t, ys)| {
            let rows_here = ys.len() / n;
            let mut res = [0f32; TILE_ROWS * tile16::COLS];
            for g0 in (0..groups).step_by(block) {
                for ct in 0..rows_here.div_ceil(cols) {
                    let act = t * per_task + ct;
                    let acts = &xt[act * ct_bytes..(act + 1) * ct_bytes];
                    let cn = cols.min(rows_here - ct * cols);
                    for g in g0..groups.min(g0 + block) {
                        tile16(kdim, &packed[g * gb..(g + 1) * gb], acts, &mut res);
                        for c in 0..cn {
                            let yrow = &mut ys[(ct * cols + c) * n..(ct * cols + c + 1) * n];
                            for r in 0..TILE_ROWS {
                                yrow[g * TILE_ROWS + r] = res[r * cols + c];
                            }
                        }
                    }
                }
            }
        });
}

/// `y[i][j] = yt[j][i]` for `yt` of `n × m`, in parallel over blocks of `y` rows.
fn transpose_into(yt: &[f32], m: usize, n: usize, y: &mut [f32]) {
    y.par_chunks_mut(n * 16).enumerate().for_each(|(b, rows)| {
        let i0 = b * 16;
        for (ii, row) in rows.chunks_exact_mut(n).enumerate() {
            for (j, o) in row.iter_mut().enumerate() {
                *o = yt[j * m + i0 + ii];
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 + seed as f32) * 0.37).sin() * (1.0 + (i % 7) as f32))
            .collect()
    }

    /// `n` rows of `kdim` values from [`values`] (`seed`), stored as `typ`.
    fn weights(typ: GgmlType, n: usize, kdim: usize, seed: u32) -> Vec<u8> {
        let mut data = vec![0u8; n * typ.row_bytes(kdim as u64).unwrap() as usize];
        quant::quantize_row(typ, &values(n * kdim, seed), &mut data).unwrap();
        data
    }

    /// `data` as an `n × kdim` matrix of `typ`, not repacked.
    fn unpacked(typ: GgmlType, n: usize, kdim: usize, data: &[u8]) -> MatRef<'_> {
        MatRef {
            typ,
            rows: n,
            cols: kdim,
            data,
            packed: None,
        }
    }

    /// Runs the product of `x` (`m × w.cols`) by `w` on 1 and on 3 threads: every output
    /// `(i, j)` equals `want(i, j)` bitwise, and both thread counts give the same `y`.
    fn assert_outputs_on_threads(
        k: &Kernels,
        w: MatRef,
        x: &[f32],
        want: impl Fn(usize, usize) -> f32,
        what: std::fmt::Arguments,
    ) {
        let (n, m) = (w.rows, x.len() / w.cols);
        let mut first: Option<Vec<f32>> = None;
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut y = vec![0f32; m * n];
            pool.install(|| matmul(k, w, x, &mut y));
            for i in 0..m {
                for j in 0..n {
                    let want = want(i, j);
                    assert_eq!(y[i * n + j].to_bits(), want.to_bits(), "{what} ({i},{j})");
                }
            }
            match &first {
                None => first = Some(y),
                Some(f) => assert_eq!(f, &y),
            }
        }
    }

    /// The supported weight types keep their activation partners (the quantized ones ggml's,
    /// the float ones f32), and for every type `activation_type` is `vec_dot_type` with f32
    /// meaning "not quantized".
    #[test]
    fn activation_types_of_supported_weights() {
        use GgmlType::*;
        let want = [
            (F32, None),
            (F16, None),
            (BF16, None),
            (Q4_0, Some(Q8_0)),
            (Q5_0, Some(Q8_0)),
            (Q8_0, Some(Q8_0)),
            (Q4_1, Some(Q8_1)),
            (Q5_1, Some(Q8_1)),
            (Q4_K, Some(Q8_K)),
            (Q5_K, Some(Q8_K)),
            (Q6_K, Some(Q8_K)),
        ];
        for (w, at) in want {
            assert!(supported(w), "{w}");
            assert_eq!(activation_type(w), at, "{w}");
        }
        let all: Vec<GgmlType> = (0..64).filter_map(GgmlType::from_id).collect();
        assert_eq!(all.iter().filter(|&&w| supported(w)).count(), want.len());
        for w in all {
            let vdt = quant::vec_dot_type(w);
            assert_eq!(activation_type(w), (vdt != F32).then_some(vdt), "{w}");
        }
    }

    /// Every output equals the single dot of its weight row and quantized activation row,
    /// bitwise, for odd shapes (rows not a multiple of the tile, 1..9 activation rows), and the
    /// thread count changes nothing.
    #[test]
    fn tiled_product_equals_dots_for_any_shape_and_threads() {
        for k in crate::kernels::available() {
            for typ in [
                GgmlType::Q4_0,
                GgmlType::Q8_0,
                GgmlType::Q4_K,
                GgmlType::Q6_K,
                GgmlType::Q5_0,
            ] {
                let (n, kdim) = (13, 512);
                let data = weights(typ, n, kdim, 1);
                let w = unpacked(typ, n, kdim, &data);
                let at = activation_type(typ).unwrap();
                let arb = at.row_bytes(kdim as u64).unwrap() as usize;
                for m in [1, 2, 3, 4, 5, 9, ROW_SPLIT_MIN, 70] {
                    let x = values(m * kdim, 2 + m as u32);
                    let mut xq = vec![0u8; m * arb];
                    for (q, row) in xq.chunks_mut(arb).zip(x.chunks(kdim)) {
                        quant::quantize_row(at, row, q).unwrap();
                    }
                    let dot = k.quant_dot(typ).unwrap();
                    let want =
                        |i: usize, j: usize| dot(kdim, w.row(j), &xq[i * arb..(i + 1) * arb]);
                    let what = format_args!("{} {typ} m={m}", k.name);
                    assert_outputs_on_threads(k, w, &x, want, what);
                }
            }
        }
    }

    /// Float products: every output equals the variant's float tile on its single row pair,
    /// bitwise, for shapes that are not multiples of the tiles (13 or 29 weight rows, odd row
    /// lengths, 1..70 activation rows: decode, bands and the row split), and the thread count
    /// changes nothing.
    #[test]
    fn float_product_equals_single_tiles_for_any_shape_and_threads() {
        for k in crate::kernels::available() {
            for typ in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
                let tile = k.float_tile(typ).unwrap();
                for (n, kdim) in [(13, 37), (29, 64)] {
                    let data = weights(typ, n, kdim, 3);
                    let w = unpacked(typ, n, kdim, &data);
                    for m in [1, 2, 3, 4, 5, 9, ROW_SPLIT_MIN, 70] {
                        let x = values(m * kdim, 7 + m as u32);
                        let want = |i: usize, j: usize| {
                            let mut want = [0f32];
                            let xi = &x[i * kdim..(i + 1) * kdim];
                            tile(kdim, &[w.row(j)], &[xi], &mut want);
                            want[0]
                        };
                        let what = format_args!("{} {typ} {n}x{kdim} m={m}", k.name);
                        assert_outputs_on_threads(k, w, &x, want, what);
                    }
                }
            }
        }
    }

    /// Packed products (16×16 tiles included) equal the unpacked ones on extreme blocks: random
    /// block bytes (every level, scale and min, the largest six-bit scales among them) with
    /// finite block scales, times activation rows at the quantizer's extremes (all +1, all −1,
    /// alternating signs) and random rows.
    #[test]
    fn packed_products_hold_for_extreme_blocks() {
        let mut state = 0x9E37_79B9u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for k in crate::kernels::available() {
            for p in k.packings {
                let (n, kdim) = (32, 4 * p.typ.block_size());
                let rb = p.typ.row_bytes(kdim as u64).unwrap() as usize;
                let bb = p.typ.type_size();
                let mut data: Vec<u8> = (0..n * rb).map(|_| next() as u8).collect();
                // Finite block scales (d, and dmin where the type has one).
                let scales: &[usize] = match p.typ {
                    GgmlType::Q4_K => &[0, 2],
                    GgmlType::Q6_K => &[208],
                    _ => &[0],
                };
                for block in data.chunks_exact_mut(bb) {
                    for &at in scales {
                        let v = (next() % 2000) as f32 / 1000.0 - 1.0;
                        quant::write_f16(block, at, v);
                    }
                }
                let mut w = unpacked(p.typ, n, kdim, &data);
                let bytes = pack(p, w).unwrap();
                let m = ROW_SPLIT_MIN + 3;
                let x: Vec<f32> = (0..m * kdim)
                    .map(|i| match (i / kdim) % 4 {
                        0 => 1.0,
                        1 => -1.0,
                        2 => {
                            if i % 2 == 0 {
                                3.0
                            } else {
                                -3.0
                            }
                        }
                        _ => (next() % 2001) as f32 / 1000.0 - 1.0,
                    })
                    .collect();
                let mut want = vec![0f32; m * n];
                matmul(k, w, &x, &mut want);
                w.packed = Some(&bytes);
                for mm in [1, m] {
                    let mut got = vec![0f32; mm * n];
                    matmul(k, w, &x[..mm * kdim], &mut got);
                    assert!(
                        got.iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{} {} m={mm}",
                        k.name,
                        p.typ
                    );
                }
            }
        }
    }

    /// A matrix repacked for a variant's [`Packing`] gives bitwise the unpacked product, for
    /// decode, small and row-split prefills and any thread count; shapes that do not divide
    /// into groups are not packed.
    #[test]
    fn packed_product_equals_unpacked() {
        let mut variants = crate::kernels::available();
        variants.push(&crate::kernels::generic_packed::GENERIC_PACKED);
        for k in variants {
            for p in k.packings {
                // An even and an odd block count (the AMX tiles take blocks in pairs).
                let bs = p.typ.block_size();
                for (n, kdim) in [(48, 10 * bs), (32, if bs == 256 { 3 } else { 11 } * bs)] {
                    let data = weights(p.typ, n, kdim, 4);
                    let mut w = unpacked(p.typ, n, kdim, &data);
                    let bytes = pack(p, w).expect("the shape divides into groups");
                    assert!(pack(
                        p,
                        MatRef {
                            rows: 24,
                            data: &data[..24 * w.row_bytes()],
                            ..w
                        }
                    )
                    .is_none());
                    for m in [1, 5, ROW_SPLIT_MIN + 1] {
                        let x = values(m * kdim, 9 + m as u32);
                        let mut want = vec![0f32; m * n];
                        w.packed = None;
                        matmul(k, w, &x, &mut want);
                        for threads in [1, 3] {
                            let pool = rayon::ThreadPoolBuilder::new()
                                .num_threads(threads)
                                .build()
                                .unwrap();
                            let mut got = vec![0f32; m * n];
                            w.packed = Some(&bytes);
                            pool.install(|| matmul(k, w, &x, &mut got));
                            assert!(
                                got.iter()
                                    .zip(&want)
                                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                                "{} {} m={m} threads={threads}",
                                k.name,
                                p.typ
                            );
                        }
                    }
                }
            }
        }
    }
}
