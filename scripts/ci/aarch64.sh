#!/usr/bin/env bash
# Cross-builds the workspace tests for aarch64-unknown-linux-gnu and runs the ones that matter
# under qemu-user three times, one per kernel path, checking that the intended variant ran:
#   -cpu cortex-a72  (Raspberry Pi 4: NEON only)          -> OWLET_EXPECT_KERNELS=neon
#   -cpu cortex-a76  (Raspberry Pi 5: NEON + dotprod)     -> neon-dotprod
#   -cpu max         (dotprod + i8mm + sve)               -> neon-i8mm
# Then cross-builds the C example against the aarch64 libowlet.a and compares its output under
# qemu with the x86-64 CLI's. Last, an instruction budget: guest instructions per decoded token
# under -cpu cortex-a76 (qemu plugin scripts/icount.c). Installs what it needs (Debian
# packages, rustup target).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
T="$CARGO_TARGET_DIR"
TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu

if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null \
    || [[ ! -d $SYSROOT/lib ]]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user make
fi
rustup target list --installed | grep -qx $TARGET || rustup target add $TARGET
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc

# The tiny model, made by the host converter when it is not committed.
MODEL=$PWD/models/owl2-tiny-a-f16.gguf
if [[ ! -f "$MODEL" ]]; then
    MODEL="$T/ci-owl2-tiny-a-f16.gguf"
    cargo run -q -p owlet-convert -- tests/data/owl2-tiny-a/checkpoint -o "$MODEL" --type f16 --vision-type f16
fi
export OWLET_TINY_MODEL="$MODEL"

# Build every test binary of the workspace; keep the paths of the ones run under emulation.
json="$T/aarch64-tests.json"
cargo test --workspace --no-run --target $TARGET --features owlet/ffi-panic-test --message-format=json \
    > "$json"
exe() { # exe PACKAGE_DIR TARGET_NAME KIND -> path of that test executable
    grep -F "\"manifest_path\":\"$1/Cargo.toml\"" "$json" | grep -F "\"name\":\"$2\",\"src_path\"" \
        | grep -F "\"kind\":[\"$3\"" | grep -F '"test":true' | grep -F '"executable":"' -m1 \
        | sed -E 's/.*"executable":"([^"]+)".*/\1/'
}
TESTS=(
    "$(exe "$PWD" owlet rlib)"                # unit tests: quant codecs, generic kernels, gguf, tokenizer, ...
    "$(exe "$PWD" kernels_neon test)"         # NEON twins + the selected-variant check
    "$(exe "$PWD" kernels test)"              # every available variant against the scalar twins
    "$(exe "$PWD" tokenizer test)"            # LLaMA-2 vocab reference cases
    "$(exe "$PWD" gguf_read test)"            # GGUF reader
    "$(exe "$PWD" quant_llamacpp test)"       # quantizers = llama.cpp bytes
    "$(exe "$PWD" llamacpp_files test)"       # llama.cpp's own logits, with the selected variant
    "$(exe "$PWD" c_abi test)"                # C ABI incl. forced panics, on the tiny model
    "$(exe "$PWD" packed_cache test)"         # packed-weight cache file with the CPU's own packing
    "$(exe "$PWD/convert" golden test)"       # tiny fixture end to end against the upstream goldens
)
for t in "${TESTS[@]}"; do
    [[ -x "$t" ]] || { echo "aarch64.sh: missing test executable in ${TESTS[*]}" >&2; exit 1; }
done

for pair in cortex-a72:neon cortex-a76:neon-dotprod max:neon-i8mm; do
    cpu=${pair%%:*}
    export OWLET_EXPECT_KERNELS=${pair##*:}
    echo "== qemu-aarch64 -cpu $cpu (expect kernels $OWLET_EXPECT_KERNELS)"
    start=$SECONDS
    for t in "${TESTS[@]}"; do
        # Test binaries run from their package directory, as cargo test does.
        case "$t" in */convert/*|*golden-*) dir=convert ;; *) dir=. ;; esac
        (cd "$dir" && qemu-aarch64 -L $SYSROOT -cpu "$cpu" "$t" -q --test-threads 2) \
            || { echo "aarch64.sh: $(basename "$t") failed under -cpu $cpu" >&2; exit 1; }
    done
    # The variant check must have run (not been filtered out).
    (qemu-aarch64 -L $SYSROOT -cpu "$cpu" "$(exe "$PWD" kernels_neon test)" selected_variant --nocapture 2>&1) \
        | grep "selected kernels: $OWLET_EXPECT_KERNELS "
    echo "   -cpu $cpu: $((SECONDS - start)) s"
done
unset OWLET_EXPECT_KERNELS

# The C example, cross-built against the aarch64 static library, under qemu (-cpu cortex-a72).
cargo build -q -p owlet --lib --target $TARGET
cargo build -q -p owlet --bin owlet
make -s -C examples/c CC=aarch64-linux-gnu-gcc OWLET_LIB="$T/$TARGET/debug/libowlet.a" OUT="$T/owlet-c-example-aarch64"
PROMPT="Describe the image."
IMAGE=tests/data/assets/coffee.png
qemu-aarch64 -L $SYSROOT -cpu cortex-a72 "$T/owlet-c-example-aarch64" "$MODEL" -t 2 -n 12 --ignore-eos \
    --image "$IMAGE" "$PROMPT" > "$T/c-example-aarch64.out"
"$T/debug/owlet" run -m "$MODEL" -t 2 -n 12 --ignore-eos --image "$IMAGE" -p "$PROMPT" --print-ids > "$T/cli-x86.out"
diff -u "$T/cli-x86.out" "$T/c-example-aarch64.out"
# Instruction budget: guest instructions per decoded token of a tiny Q4_0 model under
# -cpu cortex-a76 (Pi 5), counted by the qemu plugin scripts/icount.c. One thread makes the
# count exact and deterministic, so a scalar fallback returning on the Pi 5 path (which the
# twin tests, checking only correctness, cannot see) fails here. The per-token figure is the
# difference of 16 and 8 decoded tokens, so loading cancels out (hence no packed-weight cache:
# the first run would write it and the second map it). OWLET_ARM_DECODE_BUDGET
# overrides the budget; 0 only prints the count.
# The default is 1.25x the 5,170,419 instructions this step counted after the NEON kernels
# landed (debug build, as here); the scalar tiles this guards against needed over 17 M even in
# a release build.
ARM_DECODE_BUDGET=${OWLET_ARM_DECODE_BUDGET:-6500000}
cargo build -q -p owlet --bin owlet --target $TARGET
cargo build -q -p owlet-convert
QMODEL="$T/ci-tiny-q4_0.gguf"
"$T/debug/owlet-convert" synth --preset tiny --type q4_0 --text-only -q -o "$QMODEL"
gcc -O2 -shared -fPIC scripts/icount.c -o "$T/libicount.so"
decode_insns() { # decode_insns N -> instructions of one process that decodes N tokens
    RAYON_NUM_THREADS=1 qemu-aarch64 -L $SYSROOT -cpu cortex-a76 -plugin "$T/libicount.so,out=$T/icount.txt" \
        "$T/$TARGET/debug/owlet" bench -m "$QMODEL" -t 1 --bandwidth-mib 0 --prefill 1 --decode "$1" \
        --packed-cache off >/dev/null
    awk '/^insns/ {print $2}' "$T/icount.txt"
}
per_token=$((($(decode_insns 16) - $(decode_insns 8)) / 8))
echo "== instructions per decode token (tiny Q4_0, -cpu cortex-a76, 1 thread): $per_token (budget $ARM_DECODE_BUDGET)"
if ((ARM_DECODE_BUDGET > 0 && per_token > ARM_DECODE_BUDGET)); then
    echo "aarch64.sh: $per_token instructions per decode token under -cpu cortex-a76 exceed the budget" \
        "$ARM_DECODE_BUDGET: a product or row op fell back to scalar code?" >&2
    exit 1
fi

echo "aarch64.sh: all emulated runs passed; the aarch64 C example matches the x86-64 CLI"
