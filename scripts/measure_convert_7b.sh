#!/usr/bin/env bash
# Measures owlet-convert on a full-size (7B-shaped) mPLUG-Owl2 checkpoint: peak RSS and
# wall time of converting a synthetic release-style Hugging Face checkpoint (f16
# pytorch_model-*.bin shards + index, about 16 GB) to GGUF.
#
# Usage: scripts/measure_convert_7b.sh [TYPE ...]     (default: q4_k_m q4_0)
# Env:   WORK=/tmp/owlet-7b   where the checkpoint and outputs go (27 GB free; 34 with f16, 50 with f32)
#        KEEP=1               keep the checkpoint and outputs afterwards
#        FORMAT=bin|safetensors  the synthetic checkpoint's weight files (default bin)
# Prints one summary line per type; the full /usr/bin/time -v reports are in $WORK/*.time.
set -euo pipefail

cd "$(dirname "$0")/.."
types=("$@")
[ ${#types[@]} -gt 0 ] || types=(q4_k_m q4_0)
work=${WORK:-/tmp/owlet-7b}
format=${FORMAT:-bin}

# 17 GB of checkpoint plus the largest output (each output is deleted after its run).
need_gb=27
for t in "${types[@]}"; do
    case $t in f16) [ $need_gb -ge 34 ] || need_gb=34 ;; f32) need_gb=50 ;; esac
done
free_gb=$(df -P -BG "$(dirname "$work")" | awk 'NR==2 {gsub("G","",$4); print $4}')
if [ "$free_gb" -lt "$need_gb" ]; then
    echo "only ${free_gb} GB free under $(dirname "$work"); need about ${need_gb} GB" >&2
    exit 1
fi
[ -x /usr/bin/time ] || { echo "/usr/bin/time (GNU time) is required" >&2; exit 1; }

cleanup() {
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

cargo build --release -p owlet-convert
bin=${CARGO_TARGET_DIR:-target}/release/owlet-convert

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB RAM"
rm -rf "$work"
mkdir -p "$work"
start=$(date +%s)
"$bin" synth --preset 7b --hf "$work/ckpt" --format "$format"
echo "synthesized $(du -sh "$work/ckpt" | cut -f1) checkpoint in $(( $(date +%s) - start )) s"

for t in "${types[@]}"; do
    out="$work/owl2-7b-$t.gguf"
    # Drop the checkpoint from the page cache where allowed, so reading is measured too.
    sync; (echo 1 > /proc/sys/vm/drop_caches) 2>/dev/null || true
    /usr/bin/time -v -o "$work/$t.time" "$bin" "$work/ckpt" -o "$out" --type "$t" --quiet
    rss_kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/$t.time")
    wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/$t.time")
    size=$(stat -c %s "$out")
    printf '%-7s peak RSS %6.0f MiB  wall %s  output %d bytes (%.2f GB)\n' \
        "$t" "$(echo "$rss_kb / 1024" | bc -l)" "$wall" "$size" "$(echo "$size / 1000000000" | bc -l)"
    rm -f "$out"
done
