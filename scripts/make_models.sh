#!/usr/bin/env bash
# Rebuilds the committed models: models/owl2-tiny-a-f16.gguf (today the default `-m` of the
# `owlet` CLI) from the tiny random-weight fixture checkpoint in tests/data/owl2-tiny-a, and,
# once its checkpoint is committed, models/owlet-shapes-q8_0.gguf (issue 12's trained
# owlet-shapes, to become the default) from models/owlet-shapes/checkpoint.
#
# The conversion is deterministic: convert/tests/demo_model.rs converts again and checks that
# the committed file is byte-identical, so run this script whenever that test fails after a
# deliberate change to the converter or the file format.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo build --quiet -p owlet-convert
target_dir="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p models
"$target_dir/debug/owlet-convert" tests/data/owl2-tiny-a/checkpoint \
    -o models/owl2-tiny-a-f16.gguf --type f16 --vision-type f16 --quiet
ls -l models/owl2-tiny-a-f16.gguf
if [[ -f models/owlet-shapes/checkpoint/config.json ]]; then
    "$target_dir/debug/owlet-convert" models/owlet-shapes/checkpoint \
        -o models/owlet-shapes-q8_0.gguf --type q8_0 --vision-type q8_0 --quiet
    ls -l models/owlet-shapes-q8_0.gguf
fi
