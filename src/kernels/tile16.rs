//! The activation side of 16×16 matrix tiles (Intel AMX `tdpbusd`): up to 16 Q8_0 activation
//! rows laid out block by block the way the tile instruction reads its second operand, with
//! each column's quant sum and scale next to it. Plain byte shuffling, done once per product.

use crate::quant::read_f16;

/// Columns (activation rows) per tile.
pub const COLS: usize = 16;
/// Bytes of one laid-out block: the 8×64-byte operand, 16 i32 quant sums, 16 f32 scales.
pub const ACT_RECORD: usize = 512 + 64 + 64;

/// Lays out `nb` blocks of up to [`COLS`] Q8_0 activation rows into `out` (`nb` records of
/// [`ACT_RECORD`] bytes). Per block: `B[i][4c + j] = q_c[4i + j]` (i < 8, j < 4: the
/// "VNNI" layout, four consecutive values of one column per 32-bit element), then `Σ q_c` as
/// i32 and `d_c` as f32 for every column. Columns beyond `rows` are zero (their results are
/// zero and dropped). Does nothing when `out` has the wrong size or a row is too short.
pub fn layout_activations(nb: usize, rows: &[&[u8]], out: &mut [u8]) {
    if out.len() != nb * ACT_RECORD || rows.len() > COLS || rows.iter().any(|r| r.len() < nb * 34) {
        return;
    }
    for (b, rec) in out.chunks_exact_mut(ACT_RECORD).enumerate() {
        rec.fill(0);
        for (c, row) in rows.iter().enumerate() {
            let block = &row[b * 34..(b + 1) * 34];
            let mut sum = 0i32;
            for (k, &q) in block[2..].iter().enumerate() {
                rec[(k / 4) * 64 + 4 * c + k % 4] = q;
                sum += q as i8 as i32;
            }
            rec[512 + 4 * c..516 + 4 * c].copy_from_slice(&sum.to_le_bytes());
            rec[576 + 4 * c..580 + 4 * c].copy_from_slice(&read_f16(block, 0).to_le_bytes());
        }
    }
}
