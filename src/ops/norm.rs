//! RMSNorm and LayerNorm over rows (large inputs split over the threads by whole rows), f32
//! with f32 accumulation... except the sums, which are accumulated in f64: the strict f32
//! tolerance (2e-5 on logits) leaves no room for a 4096-long f32 sum's drift, and the cost is
//! negligible next to the matmuls.

/// `y = x / sqrt(mean(x²) + eps) ⊙ g` for every row of `x` (`rows × g.len()`), in place.
pub fn rms_norm(x: &mut [f32], g: &[f32], eps: f32) {
    let n = g.len();
    super::for_pieces(x, n, |rows| rms_norm_rows(rows, g, eps));
}

fn rms_norm_rows(x: &mut [f32], g: &[f32], eps: f32) {
    let n = g.len();
    for row in x.chunks_exact_mut(n) {
        let ss: f64 = row.iter().map(|&v| (v as f64) * (v as f64)).sum();
        // Upstream computes in f32: hidden * rsqrt(mean(hidden²) + eps), then scales by g.
        let scale = 1.0 / ((ss / n as f64) as f32 + eps).sqrt();
        for (v, w) in row.iter_mut().zip(g) {
            *v = (*v * scale) * *w;
        }
    }
}

/// `y = (x − mean) / sqrt(var + eps) ⊙ γ + β` for every row (biased variance), in place.
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    super::for_pieces(x, gamma.len(), |rows| {
        layer_norm_rows(rows, gamma, beta, eps)
    });
}

fn layer_norm_rows(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = gamma.len();
    for row in x.chunks_exact_mut(n) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = row
            .iter()
            .map(|&v| {
                let d = v as f64 - mean;
                d * d
            })
            .sum::<f64>()
            / n as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (((*v as f64 - mean) * inv) as f32) * *g + *b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_of_constant_row_is_beta() {
        let mut x = vec![3.0f32; 8];
        layer_norm(&mut x, &[2.0; 8], &[0.5; 8], 1e-6);
        assert!(x.iter().all(|&v| (v - 0.5).abs() < 1e-6));
    }

    #[test]
    fn rms_norm_unit_rows() {
        let mut x = vec![1.0f32, -1.0, 1.0, -1.0];
        rms_norm(&mut x, &[1.0; 4], 0.0);
        assert_eq!(x, vec![1.0, -1.0, 1.0, -1.0]);
    }
}
