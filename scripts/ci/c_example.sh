#!/usr/bin/env bash
# Builds examples/c against include/owlet.h and libowlet.a (x86-64, dev profile), runs it on
# the tiny model with a greedy prompt and an image, and checks that its output (text + ids)
# equals the Rust CLI's `owlet run ... --print-ids` for the same prompt.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
T="$CARGO_TARGET_DIR"
command -v cc >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y gcc make; }
command -v make >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y make; }

# The tiny demo model: the committed one, else converted from the fixture checkpoint.
MODEL=models/owl2-tiny-a-f16.gguf
if [[ ! -f "$MODEL" ]]; then
    MODEL="$T/ci-owl2-tiny-a-f16.gguf"
    cargo run -q -p owlet-convert -- tests/data/owl2-tiny-a/checkpoint -o "$MODEL" \
        --type f16 --vision-type f16
fi

cargo build -q -p owlet --lib --bin owlet
make -s -C examples/c OWLET_LIB="$T/debug/libowlet.a" OUT="$T/owlet-c-example"

IMAGE=tests/data/assets/coffee.png
PROMPT="Describe the image."
"$T/owlet-c-example" "$MODEL" -t 2 -n 16 --ignore-eos --image "$IMAGE" "$PROMPT" > "$T/c-example.out"
"$T/debug/owlet" run -m "$MODEL" -t 2 -n 16 --ignore-eos --image "$IMAGE" -p "$PROMPT" --print-ids \
    > "$T/cli.out"
if ! diff -u "$T/cli.out" "$T/c-example.out"; then
    echo "c_example.sh: the C example's output differs from the CLI's" >&2
    exit 1
fi
[[ $(tail -n 1 "$T/c-example.out" | tr ',' '\n' | wc -l) == 16 ]] || { echo "expected 16 ids" >&2; exit 1; }

# A text-only prompt too.
"$T/owlet-c-example" "$MODEL" -t 1 -n 8 --ignore-eos "Tell me a story about a small owl." > "$T/c-example2.out"
"$T/debug/owlet" run -m "$MODEL" -t 1 -n 8 --ignore-eos -p "Tell me a story about a small owl." --print-ids \
    > "$T/cli2.out"
diff -u "$T/cli2.out" "$T/c-example2.out"
echo "c_example.sh: C example output equals the CLI's:"
cat "$T/c-example.out"
