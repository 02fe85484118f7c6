//! `--video FILE`: the frames Q-Align would sample from an MP4 (H.264), an animated GIF or a
//! folder of frames, decoded to RGB.
//!
//! The decoders (`mp4` to demux, `rust_h264` to decode, the `image` crate's GIF decoder) are
//! pure Rust and only in the binary, behind the `video` feature; the library takes frames
//! (apps decode with the platform's decoder). A folder of frames needs no decoder.
//!
//! Only the sampled frames are kept: an H.264 stream is decoded in order up to the last
//! sampled frame (inter frames need their references) and every other picture is dropped.

use std::path::{Path, PathBuf};

use owlet::image::{self, ExifOrientation, ImageLimits, RgbImage};
use owlet::video::{self, Sampling};

use crate::Res;

/// What a video holds, before decoding its pictures.
pub struct Probe {
    pub kind: &'static str,
    pub n_frames: usize,
    pub fps: f64,
    pub width: u32,
    pub height: u32,
}

/// Decoded frames at most: the sampled frames' pixels are kept in memory until encoded.
const MAX_FRAME_BYTES: u64 = 4 << 30;

const CONVERT_HINT: &str = "convert it with `ffmpeg -i IN -c:v libx264 -profile:v baseline OUT.mp4`, or give a folder of frames";

/// The frames of `path` that `sampling` keeps, with their indices and the probe.
pub fn load(
    path: &Path,
    sampling: &Sampling,
    exif: ExifOrientation,
) -> Res<(Probe, Vec<usize>, Vec<RgbImage>)> {
    let shown = path.display();
    let (probe, idx) = probe_and_sample(path, sampling)?;
    let bytes = idx.len() as u64 * u64::from(probe.width) * u64::from(probe.height) * 3;
    if bytes > MAX_FRAME_BYTES {
        return Err(format!(
            "{shown}: {} frames of {}x{} take {} MiB decoded, more than the {} MiB allowed; use --max-frames or a lower --fps",
            idx.len(),
            probe.width,
            probe.height,
            bytes >> 20,
            MAX_FRAME_BYTES >> 20
        ));
    }
    let frames = decode(path, &probe, &idx, exif)?;
    if frames.len() != idx.len() {
        return Err(format!(
            "{shown}: the {} holds fewer pictures than it announces ({} of the {} sampled frames decoded)",
            probe.kind,
            frames.len(),
            idx.len()
        ));
    }
    Ok((probe, idx, frames))
}

/// The probe and the sampled indices (no frame decoded except for GIFs, which must be read
/// through to count their frames).
pub fn probe_and_sample(path: &Path, sampling: &Sampling) -> Res<(Probe, Vec<usize>)> {
    let probe = probe(path)?;
    let shown = path.display();
    if probe.n_frames == 0 {
        return Err(format!("{shown}: the {} has no frames", probe.kind));
    }
    let idx =
        video::sample(probe.n_frames, probe.fps, sampling).map_err(|e| format!("{shown}: {e}"))?;
    Ok((probe, idx))
}

fn probe(path: &Path) -> Res<Probe> {
    let shown = path.display();
    if path.is_dir() {
        let files = folder_frames(path)?;
        let first = files
            .first()
            .ok_or_else(|| format!("{shown}: the folder holds no .jpg, .jpeg or .png frames"))?;
        let (w, h) =
            ::image::image_dimensions(first).map_err(|e| format!("{}: {e}", first.display()))?;
        return Ok(Probe {
            kind: "folder of frames",
            n_frames: files.len(),
            fps: video::FOLDER_FPS,
            width: w,
            height: h,
        });
    }
    let head = read_head(path)?;
    if head.starts_with(b"GIF8") {
        return decoders::probe_gif(path);
    }
    if head.len() >= 8 && &head[4..8] == b"ftyp" {
        return decoders::probe_mp4(path);
    }
    let what = if head.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]) {
        "a Matroska/WebM file"
    } else if head.starts_with(b"RIFF") {
        "an AVI file"
    } else if head.len() >= 8 && &head[4..8] == b"moov" || head.len() >= 8 && &head[4..8] == b"mdat"
    {
        "an MP4/QuickTime file without an ftyp box"
    } else {
        "not a video owlet reads"
    };
    Err(format!(
        "{shown}: {what}; owlet reads MP4 (H.264), animated GIF and folders of frames: {CONVERT_HINT}"
    ))
}

fn read_head(path: &Path) -> Res<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = Vec::with_capacity(16);
    f.by_ref()
        .take(16)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(buf)
}

fn decode(path: &Path, probe: &Probe, idx: &[usize], exif: ExifOrientation) -> Res<Vec<RgbImage>> {
    if path.is_dir() {
        let files = folder_frames(path)?;
        return idx
            .iter()
            .map(|&i| {
                image::load_with(&files[i], &ImageLimits::default(), exif)
                    .map_err(|e| e.to_string())
            })
            .collect();
    }
    match probe.kind {
        "GIF" => decoders::decode_gif(path, idx),
        _ => decoders::decode_mp4(path, idx),
    }
}

/// The image files of a folder, in natural order (`f2.png` before `f10.png`).
fn folder_frames(dir: &Path) -> Res<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for e in rd {
        let p = e.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        let ext = p
            .extension()
            .and_then(|x| x.to_str())
            .map(str::to_ascii_lowercase);
        if p.is_file() && matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png")) {
            files.push(p);
        }
    }
    files.sort_by_key(|p| natural_key(p));
    Ok(files)
}

/// A file name split into text and numbers, so that numbers compare by value.
fn natural_key(p: &Path) -> Vec<(String, u128)> {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.unwrap_or_default();
    let mut key = Vec::new();
    let mut text = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut n = c.to_digit(10).unwrap_or(0) as u128;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = n.saturating_mul(10).saturating_add(d as u128);
                chars.next();
            }
            key.push((std::mem::take(&mut text), n));
        } else {
            text.push(c);
        }
    }
    key.push((text, 0));
    key
}

#[cfg_attr(not(feature = "video"), allow(dead_code))]
/// The codec named by the first sample entry of an MP4's video track, read straight from the
/// bytes (for files whose codec the demuxer does not know).
fn mp4_codec_name(path: &Path) -> Option<String> {
    let data = std::fs::read(path).ok()?;
    let mut from = 0;
    while let Some(pos) = find(&data[from..], b"stsd").map(|p| p + from) {
        // "stsd", version and flags (4), entry count (4), entry size (4), entry type (4).
        if let Some(tag) = data.get(pos + 16..pos + 20) {
            let tag = String::from_utf8_lossy(tag).into_owned();
            let name = match tag.as_str() {
                "hvc1" | "hev1" => Some("H.265/HEVC"),
                "vp09" => Some("VP9"),
                "vp08" => Some("VP8"),
                "av01" => Some("AV1"),
                "mp4v" => Some("MPEG-4 Part 2"),
                "avc1" | "avc3" => Some("H.264"),
                "mp4a" | "Opus" | "ac-3" | "ec-3" | "fLaC" | ".mp3" => None,
                _ => Some("an unknown codec"),
            };
            if let Some(n) = name {
                return Some(format!("{n} ({tag})"));
            }
        }
        from = pos + 4;
    }
    None
}

#[cfg_attr(not(feature = "video"), allow(dead_code))]
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg_attr(not(feature = "video"), allow(dead_code))]
/// Runs a third-party decoder, turning a panic on a malformed file into an error (with the
/// panic hook silenced so that the error stays one line).
fn no_panic<T>(path: &Path, f: impl FnOnce() -> Res<T>) -> Res<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    r.unwrap_or_else(|_| {
        Err(format!(
            "{}: the video decoder failed on this file (it is damaged or uses a feature owlet cannot decode); {CONVERT_HINT}",
            path.display()
        ))
    })
}

#[cfg(feature = "video")]
mod decoders {
    use std::collections::BTreeSet;
    use std::fs::File;
    use std::io::BufReader;
    use std::path::Path;

    use ::image::AnimationDecoder;
    use owlet::image::RgbImage;
    use rust_h264::decoder::{Frame, OrderedDecoder};

    use super::{mp4_codec_name, no_panic, Probe, CONVERT_HINT};
    use crate::Res;

    /// Frames above this many pixels are refused (a 16k × 16k picture).
    const MAX_PIXELS: u64 = 1 << 28;

    fn open_mp4(path: &Path) -> Res<mp4::Mp4Reader<BufReader<File>>> {
        let shown = path.display();
        let f = File::open(path).map_err(|e| format!("{shown}: {e}"))?;
        let size = f.metadata().map_err(|e| format!("{shown}: {e}"))?.len();
        mp4::Mp4Reader::read_header(BufReader::new(f), size)
            .map_err(|e| format!("{shown}: not a readable MP4 file ({e})"))
    }

    /// The H.264 video track: its id, length size, SPS and PPS.
    struct Avc {
        track: u32,
        length_size: usize,
        params: Vec<Vec<u8>>,
    }

    fn avc_track(path: &Path, r: &mp4::Mp4Reader<BufReader<File>>) -> Res<(Avc, Probe)> {
        let shown = path.display();
        let mut ids: Vec<u32> = r.tracks().keys().copied().collect();
        ids.sort_unstable();
        let mut saw_video = false;
        for id in ids {
            let t = &r.tracks()[&id];
            if !matches!(t.track_type(), Ok(mp4::TrackType::Video)) {
                continue;
            }
            saw_video = true;
            let Some(avc1) = &t.trak.mdia.minf.stbl.stsd.avc1 else {
                continue;
            };
            let n = t.sample_count() as usize;
            let secs = t.duration().as_secs_f64();
            // decord's get_avg_fps: frames over the stream's duration.
            let fps = if secs > 0.0 { n as f64 / secs } else { 0.0 };
            let fps = if fps.is_finite() && fps > 0.0 {
                fps
            } else {
                t.frame_rate()
            };
            let mut params = Vec::new();
            for nal in avc1
                .avcc
                .sequence_parameter_sets
                .iter()
                .chain(&avc1.avcc.picture_parameter_sets)
            {
                params.push(nal.bytes.clone());
            }
            let avc = Avc {
                track: id,
                length_size: usize::from(avc1.avcc.length_size_minus_one & 3) + 1,
                params,
            };
            let probe = Probe {
                kind: "MP4 (H.264)",
                n_frames: n,
                fps,
                width: u32::from(avc1.width),
                height: u32::from(avc1.height),
            };
            return Ok((avc, probe));
        }
        let found = mp4_codec_name(path);
        Err(match (saw_video, found) {
            (_, Some(codec)) if !codec.starts_with("H.264") => format!(
                "{shown}: the video is {codec}, which owlet cannot decode (it reads H.264); {CONVERT_HINT}"
            ),
            (false, _) => format!("{shown}: the MP4 file has no video track"),
            _ => format!("{shown}: the MP4's video track has no H.264 configuration; {CONVERT_HINT}"),
        })
    }

    pub fn probe_mp4(path: &Path) -> Res<Probe> {
        no_panic(path, || {
            let r = open_mp4(path)?;
            Ok(avc_track(path, &r)?.1)
        })
    }

    pub fn decode_mp4(path: &Path, idx: &[usize]) -> Res<Vec<RgbImage>> {
        no_panic(path, || decode_mp4_inner(path, idx))
    }

    fn decode_mp4_inner(path: &Path, idx: &[usize]) -> Res<Vec<RgbImage>> {
        let shown = path.display();
        let mut r = open_mp4(path)?;
        let (avc, probe) = avc_track(path, &r)?;
        if u64::from(probe.width) * u64::from(probe.height) > MAX_PIXELS {
            return Err(format!(
                "{shown}: {}x{} frames are too large",
                probe.width, probe.height
            ));
        }
        let wanted: BTreeSet<usize> = idx.iter().copied().collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let bad = |e: rust_h264::error::DecodeError| {
            format!("{shown}: H.264 decoding failed ({e}); {CONVERT_HINT}")
        };
        let mut dec: OrderedDecoder = OrderedDecoder::new();
        let mut out = Vec::with_capacity(wanted.len());
        let mut shown_idx = 0usize;
        let mut take = |frames: Vec<Frame>, out: &mut Vec<RgbImage>| -> Res<()> {
            for f in frames {
                if wanted.contains(&shown_idx) {
                    out.push(to_rgb(&f).map_err(|e| format!("{shown}: {e}"))?);
                }
                shown_idx += 1;
            }
            Ok(())
        };
        for p in &avc.params {
            let mut annex_b = vec![0, 0, 0, 1];
            annex_b.extend_from_slice(p);
            for nal in rust_h264::nal::parse_annex_b(&annex_b) {
                let frames = dec.decode_nal(&nal).map_err(bad)?;
                take(frames, &mut out)?;
            }
        }
        let n = r
            .sample_count(avc.track)
            .map_err(|e| format!("{shown}: {e}"))?;
        for sample_id in 1..=n {
            if out.len() == wanted.len() {
                break;
            }
            let Some(sample) = r
                .read_sample(avc.track, sample_id)
                .map_err(|e| format!("{shown}: sample {sample_id}: {e}"))?
            else {
                break;
            };
            for nal in rust_h264::nal::parse_avcc(&sample.bytes, avc.length_size) {
                let frames = dec.decode_nal(&nal).map_err(bad)?;
                take(frames, &mut out)?;
            }
        }
        if out.len() < wanted.len() {
            take(dec.flush(), &mut out)?;
        }
        Ok(out)
    }

    /// A decoded picture as 8-bit RGB: BT.601 limited range, as FFmpeg converts untagged
    /// `yuv420p` (what decord hands Q-Align); chroma taken from the co-sited sample.
    fn to_rgb(f: &Frame) -> Res<RgbImage> {
        let (w, h) = (f.width as usize, f.height as usize);
        if w == 0 || h == 0 {
            return Err("a decoded picture has zero size".into());
        }
        let (cw, ch) = (f.chroma_width() as usize, f.chroma_height() as usize);
        let (sx, sy) = ((w / cw.max(1)).max(1), (h / ch.max(1)).max(1));
        let shift = u32::from(f.bit_depth.saturating_sub(8));
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let c =
                    ((y / sy).min(ch.saturating_sub(1))) * cw + (x / sx).min(cw.saturating_sub(1));
                let luma = f32::from(f.sample(&f.y, y * w + x) >> shift) - 16.0;
                let cb = f32::from(f.sample(&f.u, c) >> shift) - 128.0;
                let cr = f32::from(f.sample(&f.v, c) >> shift) - 128.0;
                let l = 1.164_383 * luma;
                let px = [
                    l + 1.596_027 * cr,
                    l - 0.391_762 * cb - 0.812_968 * cr,
                    l + 2.017_232 * cb,
                ];
                data.extend(px.map(|v| v.round().clamp(0.0, 255.0) as u8));
            }
        }
        owlet::image::from_rgb(f.width, f.height, &data).map_err(|e| e.to_string())
    }

    fn gif_decoder(path: &Path) -> Res<::image::codecs::gif::GifDecoder<BufReader<File>>> {
        let shown = path.display();
        let f = File::open(path).map_err(|e| format!("{shown}: {e}"))?;
        ::image::codecs::gif::GifDecoder::new(BufReader::new(f))
            .map_err(|e| format!("{shown}: not a readable GIF ({e})"))
    }

    pub fn probe_gif(path: &Path) -> Res<Probe> {
        use ::image::ImageDecoder;
        let shown = path.display();
        no_panic(path, || {
            let d = gif_decoder(path)?;
            let (w, h) = d.dimensions();
            if u64::from(w) * u64::from(h) > MAX_PIXELS {
                return Err(format!("{shown}: a {w}x{h} GIF is too large"));
            }
            let (mut n, mut ms) = (0usize, 0f64);
            for f in d.into_frames() {
                let f = f.map_err(|e| format!("{shown}: frame {n}: {e}"))?;
                let (num, den) = f.delay().numer_denom_ms();
                ms += f64::from(num) / f64::from(den.max(1));
                n += 1;
            }
            // Browsers show frames without a delay at 10 per second.
            let fps = if ms > 0.0 {
                n as f64 * 1000.0 / ms
            } else {
                10.0
            };
            Ok(Probe {
                kind: "GIF",
                n_frames: n,
                fps,
                width: w,
                height: h,
            })
        })
    }

    pub fn decode_gif(path: &Path, idx: &[usize]) -> Res<Vec<RgbImage>> {
        let shown = path.display();
        no_panic(path, || {
            let wanted: BTreeSet<usize> = idx.iter().copied().collect();
            let mut out = Vec::with_capacity(wanted.len());
            for (i, f) in gif_decoder(path)?.into_frames().enumerate() {
                if out.len() == wanted.len() {
                    break;
                }
                let f = f.map_err(|e| format!("{shown}: frame {i}: {e}"))?;
                if wanted.contains(&i) {
                    let rgba = f.into_buffer();
                    let (w, h) = rgba.dimensions();
                    let img = owlet::image::from_rgba(w, h, w as usize * 4, rgba.as_raw())
                        .map_err(|e| format!("{shown}: frame {i}: {e}"))?;
                    out.push(img);
                }
            }
            Ok(out)
        })
    }
}

#[cfg(not(feature = "video"))]
mod decoders {
    use std::path::Path;

    use owlet::image::RgbImage;

    use super::Probe;
    use crate::Res;

    fn off(path: &Path) -> String {
        format!(
            "{}: this owlet was built without the `video` feature, so it reads only folders of frames (rebuild with `--features video`)",
            path.display()
        )
    }

    pub fn probe_mp4(path: &Path) -> Res<Probe> {
        Err(off(path))
    }
    pub fn probe_gif(path: &Path) -> Res<Probe> {
        Err(off(path))
    }
    pub fn decode_mp4(path: &Path, _: &[usize]) -> Res<Vec<RgbImage>> {
        Err(off(path))
    }
    pub fn decode_gif(path: &Path, _: &[usize]) -> Res<Vec<RgbImage>> {
        Err(off(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_sort_numbers_by_value() {
        let mut v: Vec<PathBuf> = ["f10.png", "f2.png", "f1.png", "a.png"]
            .iter()
            .map(PathBuf::from)
            .collect();
        v.sort_by_key(|p| natural_key(p));
        let names: Vec<_> = v.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(names, ["a.png", "f1.png", "f2.png", "f10.png"]);
    }
}
