#!/usr/bin/env bash
# The image path against llama.cpp's CLIP on this CPU, in one sitting (issue 14 item 5).
#
#   LLAMA_CPP_DIR=/path/to/llama.cpp scripts/clip_vs_llamacpp.sh
#
# LLAMA_CPP_DIR is the user's own llama.cpp checkout, already built with CMake (commit c392e50
# was measured; its legacy CLIP API `examples/llava/clip.h` is what is timed). This script does
# not build llama.cpp; it needs its shared CLIP library (the `llava_shared` target, i.e.
# libllava_shared.so, and the ggml/llama libraries beside it) under $LLAMA_CPP_DIR/build
# (or $LLAMA_BUILD_DIR).
#
# What it does:
#   1. compiles scripts/clip_time.cpp (our driver: loads an mmproj with clip_model_load and times
#      clip_encode_float_image on one 448×448 image) against that build;
#   2. writes a random-weight ViT-L/14-448 mmproj in F16 with the `gguf` pip package (the
#      writer the llama.cpp project publishes, so the file is in the layout its loader expects;
#      llama.cpp's converter scripts need a real PyTorch checkpoint, which random weights do
#      not have), and the Q8_0 one from it with llama.cpp's own `clip_model_quantize` (through
#      the driver). The mmproj has 25 blocks because llama.cpp's LLaVA graph runs all but the
#      last one: 24 layers run, as in mPLUG-Owl2's tower. Its projector is LLaVA's MLP
#      (1024 → 4096 → 4096), standing in for mPLUG-Owl2's visual abstractor, which llama.cpp
#      does not have; owlet's figure is vision tower + abstractor;
#   3. writes owlet's 7B image model with one LLM layer (`owlet-convert synth --preset 7b
#      --layers 1 --type q4_0 --vision-type q8_0|f16`: the full tower and abstractor);
#   4. times, interleaved per thread count: llama.cpp F16, llama.cpp Q8_0 (min of REPEATS
#      encodes after one warm-up), owlet Q8_0 vision, owlet F16 vision (min of REPEATS
#      `owlet bench` runs: vision_encode_ms + abstractor_ms);
#   5. prints one markdown table, each owlet figure with its ratio to llama.cpp's best time at
#      that thread count, and the load average before and after.
#
# Environment: LLAMA_CPP_DIR (required), LLAMA_BUILD_DIR (default $LLAMA_CPP_DIR/build),
# WORK (default /tmp/owlet-clip; ~2.5 GB of files), THREADS (default "1 2"), REPEATS (default 2),
# OWLET_BIN_DIR (default: build owlet here with cargo, release).
set -euo pipefail

die() {
    echo "clip_vs_llamacpp.sh: $*" >&2
    exit 1
}

[ -n "${LLAMA_CPP_DIR:-}" ] || die "set LLAMA_CPP_DIR to a built llama.cpp checkout"
LLAMA_BUILD_DIR=${LLAMA_BUILD_DIR:-$LLAMA_CPP_DIR/build}
WORK=${WORK:-/tmp/owlet-clip}
THREADS=${THREADS:-"1 2"}
REPEATS=${REPEATS:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$WORK"

clip_h=$LLAMA_CPP_DIR/examples/llava/clip.h
[ -f "$clip_h" ] || die "$clip_h not found: LLAMA_CPP_DIR must be a llama.cpp checkout with examples/llava"
lib=$(find "$LLAMA_BUILD_DIR" -name 'libllava_shared.so' -print -quit 2>/dev/null || true)
[ -n "$lib" ] || die "no libllava_shared.so under $LLAMA_BUILD_DIR: build llama.cpp's llava_shared target first"
libdirs=$(find "$LLAMA_BUILD_DIR" -name 'lib*.so' -printf '%h\n' | sort -u)

# 1. The driver.
ldflags=()
for d in $libdirs; do ldflags+=("-L$d" "-Wl,-rpath,$d"); done
g++ -O2 -std=c++17 -I"$LLAMA_CPP_DIR/examples/llava" -I"$LLAMA_CPP_DIR/include" \
    -I"$LLAMA_CPP_DIR/ggml/include" "$ROOT/scripts/clip_time.cpp" -o "$WORK/clip_time" \
    "${ldflags[@]}" -lllava_shared ||
    die "compiling scripts/clip_time.cpp against $LLAMA_BUILD_DIR failed"

# 2. The mmproj files.
python3 -c 'import gguf, numpy' 2>/dev/null || die "needs the gguf and numpy pip packages (pip install gguf numpy)"
if [ ! -f "$WORK/mmproj-f16.gguf" ]; then
    python3 - "$WORK/mmproj-f16.gguf.tmp" <<'EOF'
import sys
import numpy as np
import gguf

out = sys.argv[1]
hidden, ff, heads, blocks, image, patch, proj = 1024, 4096, 16, 25, 448, 14, 4096
positions = (image // patch) ** 2 + 1
rng = np.random.default_rng(7)

def mat(rows, cols):
    return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

def vec(n, scale=0.02, base=0.0):
    return (base + rng.standard_normal(n, dtype=np.float32) * scale).astype(np.float32)

w = gguf.GGUFWriter(out, "clip")
w.add_name("random ViT-L/14-448")
w.add_description("random-weight ViT-L/14-448 with an MLP projector, for timing only")
w.add_bool("clip.has_text_encoder", False)
w.add_bool("clip.has_vision_encoder", True)
w.add_bool("clip.has_llava_projector", True)
w.add_string("clip.projector_type", "mlp")
w.add_bool("clip.use_gelu", False)  # QuickGELU, as CLIP ViT-L/14
w.add_file_type(1)  # mostly F16
w.add_uint32("clip.vision.image_size", image)
w.add_uint32("clip.vision.patch_size", patch)
w.add_uint32("clip.vision.embedding_length", hidden)
w.add_uint32("clip.vision.feed_forward_length", ff)
w.add_uint32("clip.vision.projection_dim", proj)
w.add_uint32("clip.vision.attention.head_count", heads)
w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
w.add_uint32("clip.vision.block_count", blocks)
w.add_array("clip.vision.image_mean", [0.48145466, 0.4578275, 0.40821073])
w.add_array("clip.vision.image_std", [0.26862954, 0.26130258, 0.27577711])

w.add_tensor("v.class_embd", vec(hidden))
w.add_tensor("v.patch_embd.weight",
             (rng.standard_normal((hidden, 3, patch, patch), dtype=np.float32) * 0.02).astype(np.float16))
w.add_tensor("v.position_embd.weight", mat(positions, hidden))
w.add_tensor("v.pre_ln.weight", vec(hidden, base=1.0))
w.add_tensor("v.pre_ln.bias", vec(hidden))
for i in range(blocks):
    # llama.cpp's CLIP files call the MLP's first matrix (fc1, 1024 -> 4096) `ffn_down` and
    # the second (fc2) `ffn_up`.
    for name, rows, cols in [("attn_q", hidden, hidden), ("attn_k", hidden, hidden),
                             ("attn_v", hidden, hidden), ("attn_out", hidden, hidden),
                             ("ffn_down", ff, hidden), ("ffn_up", hidden, ff)]:
        w.add_tensor(f"v.blk.{i}.{name}.weight", mat(rows, cols))
        w.add_tensor(f"v.blk.{i}.{name}.bias", vec(rows))
    for ln in ("ln1", "ln2"):
        w.add_tensor(f"v.blk.{i}.{ln}.weight", vec(hidden, base=1.0))
        w.add_tensor(f"v.blk.{i}.{ln}.bias", vec(hidden))
w.add_tensor("mm.0.weight", mat(proj, hidden))
w.add_tensor("mm.0.bias", vec(proj))
w.add_tensor("mm.2.weight", mat(proj, proj))
w.add_tensor("mm.2.bias", vec(proj))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
EOF
    mv "$WORK/mmproj-f16.gguf.tmp" "$WORK/mmproj-f16.gguf"
fi
if [ ! -f "$WORK/mmproj-q8_0.gguf" ]; then
    "$WORK/clip_time" quantize "$WORK/mmproj-f16.gguf" "$WORK/mmproj-q8_0.gguf.tmp" 8 >/dev/null 2>"$WORK/quantize.log" ||
        die "llama.cpp's clip_model_quantize failed (see $WORK/quantize.log)"
    mv "$WORK/mmproj-q8_0.gguf.tmp" "$WORK/mmproj-q8_0.gguf"
fi

# 3. owlet and its image models.
if [ -z "${OWLET_BIN_DIR:-}" ]; then
    (cd "$ROOT" && cargo build --release -q) || die "cargo build --release failed"
    OWLET_BIN_DIR=$ROOT/target/release
fi
for vt in q8_0 f16; do
    f=$WORK/owl7b-1layer-vis-$vt.gguf
    [ -f "$f" ] || "$OWLET_BIN_DIR/owlet-convert" synth --preset 7b --layers 1 --type q4_0 \
        --vision-type "$vt" -q -o "$f" || die "owlet-convert synth ($vt) failed"
done

# 4. Timings, interleaved.
llama_s() { # MODEL THREADS -> min seconds
    "$WORK/clip_time" time "$1" "$2" "$REPEATS" 2>/dev/null | sed -n 's/.*min_s=\([0-9.]*\).*/\1/p'
}
owlet_s() { # MODEL THREADS -> min seconds of vision + abstractor over REPEATS runs
    local best="" r s
    for ((r = 0; r < REPEATS; r++)); do
        s=$("$OWLET_BIN_DIR/owlet" bench -m "$1" -t "$2" --prefill 16 --decode 1 --bandwidth-mib 0 \
            --packed-cache off --json 2>/dev/null | tail -1 |
            python3 -c 'import json,sys; j=json.load(sys.stdin); print((j["vision_encode_ms"]+j["abstractor_ms"])/1000)')
        if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $s < $best else 1)"; then best=$s; fi
    done
    echo "$best"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A T
for t in $THREADS; do
    T[lf16,$t]=$(llama_s "$WORK/mmproj-f16.gguf" "$t")
    T[lq8,$t]=$(llama_s "$WORK/mmproj-q8_0.gguf" "$t")
    T[oq8,$t]=$(owlet_s "$WORK/owl7b-1layer-vis-q8_0.gguf" "$t")
    T[of16,$t]=$(owlet_s "$WORK/owl7b-1layer-vis-f16.gguf" "$t")
    for k in lf16 lq8 oq8 of16; do
        [ -n "${T[$k,$t]}" ] || die "a timing failed ($k, t=$t): rerun the step by hand to see why"
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# 5. The table.
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
kernel=$("$OWLET_BIN_DIR/owlet" bench -m "$WORK/owl7b-1layer-vis-q8_0.gguf" -t 1 --prefill 1 --decode 0 \
    --bandwidth-mib 0 --no-vision --packed-cache off --json 2>/dev/null | tail -1 |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["kernel"])' || echo "?")
echo
echo "ViT-L/14-448, $(date -u +%Y-%m-%dT%H:%MZ), $cpu, $(nproc) CPUs, owlet kernels: $kernel"
echo "load average before: $load_before, after: $load_after; min of $REPEATS runs each"
echo
echo "| ViT-L/14-448, s | llama.cpp F16 | llama.cpp Q8_0 | owlet Q8_0 vision | owlet F16 vision |"
echo "| --- | ---: | ---: | ---: | ---: |"
for t in $THREADS; do
    python3 - "$t" "${T[lf16,$t]}" "${T[lq8,$t]}" "${T[oq8,$t]}" "${T[of16,$t]}" <<'EOF'
import sys
t, lf, lq, oq, of = sys.argv[1], *map(float, sys.argv[2:])
best = min(lf, lq)
print(f"| t={t} | {lf:.2f} | {lq:.2f} | **{oq:.2f} ({oq / best:.2f}×)** | {of:.2f} ({of / best:.2f}×) |")
EOF
done
echo
echo "Ratios are owlet ÷ llama.cpp's best (lower of F16 and Q8_0) at the same thread count."
