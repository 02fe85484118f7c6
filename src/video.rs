//! Which frames of a video the model sees.
//!
//! mPLUG-Owl2 and Q-Align take a video as a list of frames, sampled at one frame per second:
//! Q-Align's `load_video` (`q_align/evaluate/scorer.py`) reads the average frame rate `fps`
//! and the frame count `n` with decord and keeps the frames `int(fps * i)` for `i` in
//! `range(int(n / fps))`. Each frame is then encoded like an image and the frames' query
//! outputs are concatenated, in order, into the prompt's one `<|image|>` slot
//! ([`crate::session::Session::embed_video`]).
//!
//! Decoding video files is not the library's job (apps use the platform's decoder, the CLI
//! has its own behind the `video` feature); this module only chooses the frames.

use crate::error::{bail_kind, Result};

/// How to sample frames.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Frames kept per second of video (Q-Align: 1).
    pub rate: f64,
    /// At most this many frames, chosen evenly among the sampled ones (`None`: no cap).
    pub max_frames: Option<usize>,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            rate: 1.0,
            max_frames: None,
        }
    }
}

/// The frame indices Q-Align's `load_video` keeps, generalised to `rate` samples per second:
/// with `step = fps / rate` (exactly `fps` at the default rate of 1), the indices are
/// `int(step * i)` for `i` in `0..int(n_frames / step)`.
///
/// The arithmetic is Python's: `f64` products and divisions truncated towards zero, so the
/// indices are the same as upstream's for every frame count and rate. A clip shorter than one
/// sampling interval gives no index (as upstream); [`sample`] keeps its first frame instead.
/// A rate above the video's frame rate keeps every frame once (the step is at least 1; upstream
/// has no rate, and at its rate of 1 this only matters for videos below 1 frame per second).
pub fn frame_indices(n_frames: usize, fps: f64, rate: f64) -> Result<Vec<usize>> {
    check_rates(fps, rate)?;
    let step = (fps / rate).max(1.0);
    let count = (n_frames as f64 / step) as usize; // int(len(vr) / fps)
    let mut out = Vec::with_capacity(count.min(1 << 20));
    for i in 0..count {
        let idx = (step * i as f64) as usize; // int(fps * i)
        if idx >= n_frames {
            break; // cannot happen with finite positive rates; kept as a guard
        }
        out.push(idx);
    }
    Ok(out)
}

fn check_rates(fps: f64, rate: f64) -> Result<()> {
    if !(fps.is_finite() && fps > 0.0) {
        bail_kind!(
            InvalidArgument,
            "the video's frame rate {fps} is not a positive number"
        );
    }
    if !(rate.is_finite() && rate > 0.0) {
        bail_kind!(
            InvalidArgument,
            "the sampling rate {rate} (frames per second, --fps) must be a positive number"
        );
    }
    Ok(())
}

/// Keeps at most `max` of `indices`, evenly spread: the `j`-th kept is
/// `indices[j * len / max]` (the first is always kept).
pub fn cap_evenly(indices: &[usize], max: usize) -> Vec<usize> {
    let len = indices.len();
    if max == 0 || len <= max {
        return indices.to_vec();
    }
    (0..max).map(|j| indices[j * len / max]).collect()
}

/// The frames to decode for a video of `n_frames` at `fps`: [`frame_indices`], capped by
/// [`cap_evenly`]. A clip shorter than one sampling interval (for which upstream keeps no
/// frame and fails) keeps its first frame, so that every non-empty video gives a frame.
pub fn sample(n_frames: usize, fps: f64, s: &Sampling) -> Result<Vec<usize>> {
    if s.max_frames == Some(0) {
        bail_kind!(InvalidArgument, "--max-frames must be at least 1");
    }
    let mut idx = frame_indices(n_frames, fps, s.rate)?;
    if idx.is_empty() && n_frames > 0 {
        idx.push(0);
    }
    if let Some(m) = s.max_frames {
        idx = cap_evenly(&idx, m);
    }
    Ok(idx)
}

/// The frame rate given to a folder of frames, which has none: one frame per second, so that
/// by default every frame is kept.
pub const FOLDER_FPS: f64 = 1.0;

#[cfg(test)]
mod tests {
    use super::*;

    /// Q-Align's formula written the way Python evaluates it.
    fn q_align(n: usize, fps: f64) -> Vec<usize> {
        let count = (n as f64 / fps).trunc() as i64;
        (0..count)
            .map(|i| (fps * i as f64).trunc() as usize)
            .collect()
    }

    #[test]
    fn one_per_second_matches_q_align() {
        for &(n, fps) in &[
            (300usize, 30.0f64),
            (299, 30.0),
            (250, 25.0),
            (241, 23.976),
            (1000, 29.97),
            (59, 59.94),
            (61, 59.94),
            (10, 2.5),
            (7, 1.0),
        ] {
            assert_eq!(
                frame_indices(n, fps, 1.0).unwrap(),
                q_align(n, fps),
                "{n} @ {fps}"
            );
        }
        assert_eq!(frame_indices(300, 30.0, 1.0).unwrap()[..3], [0, 30, 60]);
        assert_eq!(frame_indices(241, 23.976, 1.0).unwrap().len(), 10);
        assert_eq!(frame_indices(1000, 29.97, 1.0).unwrap()[32], 959); // int(29.97 * 32)
    }

    #[test]
    fn other_rates_divide_the_step() {
        // 2 per second of a 10 fps clip: every 5th frame.
        assert_eq!(frame_indices(20, 10.0, 2.0).unwrap(), [0, 5, 10, 15]);
        // 0.5 per second: every 20th.
        assert_eq!(frame_indices(45, 10.0, 0.5).unwrap(), [0, 20]);
        // A rate above the frame rate keeps every frame once.
        assert_eq!(frame_indices(5, 10.0, 30.0).unwrap(), [0, 1, 2, 3, 4]);
        assert!(frame_indices(10, 0.0, 1.0).is_err());
        assert!(frame_indices(10, 25.0, f64::NAN).is_err());
        assert!(frame_indices(10, 25.0, -1.0).is_err());
    }

    #[test]
    fn short_clips_and_caps() {
        assert!(frame_indices(10, 30.0, 1.0).unwrap().is_empty());
        let s = Sampling::default();
        assert_eq!(sample(10, 30.0, &s).unwrap(), [0]);
        assert!(sample(0, 30.0, &s).unwrap().is_empty());
        let capped = Sampling {
            rate: 1.0,
            max_frames: Some(4),
        };
        // 10 s at 30 fps: 10 samples, 4 kept evenly.
        assert_eq!(sample(300, 30.0, &capped).unwrap(), [0, 60, 150, 210]);
        assert_eq!(cap_evenly(&[1, 2, 3], 5), [1, 2, 3]);
        assert!(sample(
            300,
            30.0,
            &Sampling {
                rate: 1.0,
                max_frames: Some(0)
            }
        )
        .is_err());
    }
}
