#!/usr/bin/env bash
# Regenerates the small clips under tests/data/video/ that tests/video.rs decodes (needs ffmpeg
# with libx264: `apt-get install -y ffmpeg`). Each clip is 3 seconds at 10 fps, 64x48: one
# second red, one green, one blue, so that Q-Align's 1-per-second sampling (frames 0, 10, 20)
# sees one frame of each colour.
#   baseline.mp4  H.264 Constrained Baseline (CAVLC, no B-frames)
#   high.mp4      H.264 High (CABAC, 8x8 transforms, B-frames)
#   hevc.mp4      H.265, only to check that an unsupported codec is named (if libx265 exists)
#   clip.gif      animated GIF, 10 fps
set -euo pipefail
cd "$(dirname "$0")/../tests/data/video"
src=(-f lavfi -i "color=c=red:s=64x48:r=10:d=1" -f lavfi -i "color=c=green:s=64x48:r=10:d=1"
     -f lavfi -i "color=c=blue:s=64x48:r=10:d=1")
cat="[0:v][1:v][2:v]concat=n=3:v=1:a=0,format=yuv420p[v]"
ff() { ffmpeg -hide_banner -loglevel error -y "$@"; }
ff "${src[@]}" -filter_complex "$cat" -map "[v]" -c:v libx264 -profile:v baseline -g 10 \
   -movflags +faststart baseline.mp4
ff "${src[@]}" -filter_complex "$cat" -map "[v]" -c:v libx264 -profile:v high -bf 2 -g 30 \
   -movflags +faststart high.mp4
encoders=$(ffmpeg -hide_banner -encoders 2>/dev/null || true)
if grep -q libx265 <<<"$encoders"; then
  ff "${src[@]}" -filter_complex "$cat" -map "[v]" -c:v libx265 -x265-params log-level=error \
     -tag:v hvc1 hevc.mp4
fi
gcat="[0:v][1:v][2:v]concat=n=3:v=1:a=0[v]"
ff "${src[@]}" -filter_complex "$gcat" -map "[v]" clip.gif
ls -l
