#!/usr/bin/env bash
# Held-out accuracy of an owlet-shapes checkpoint at every --type, measured by owlet itself:
# converts CHECKPOINT with owlet-convert (f32; q8_0; q4_0 and q4_k_m with the vision tower at
# q8_0) and runs `owlet eval-shapes` on the committed held-out set; prints a Markdown table
# for the model card.
#
#     models/owlet-shapes/eval_types.sh models/owlet-shapes/checkpoint [EXTRA eval-shapes ARGS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ck="${1:?usage: eval_types.sh CHECKPOINT_DIR [eval-shapes args]}"
shift
cd "$root"
cargo build --quiet --release -p owlet-convert -p owlet
bin="${CARGO_TARGET_DIR:-$root/target}/release"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "| --type | vision | color | shape | count | exists | where | describe | overall |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for tv in f32:f32 q8_0:q8_0 q4_0:q8_0 q4_k_m:q8_0; do
    t="${tv%%:*}" v="${tv##*:}"
    "$bin/owlet-convert" "$ck" -o "$tmp/m.gguf" --type "$t" --vision-type "$v" --quiet
    "$bin/owlet" eval-shapes -m "$tmp/m.gguf" --json --no-embed-cache --packed-cache off "$@" |
        python3 -c '
import json, sys
r = json.load(sys.stdin)
cell = lambda n: "%.3f (%d/%d)" % (n["accuracy"], n["correct"], n["total"])
types = ["color", "shape", "count", "exists", "where", "describe"]
row = [cell(r["types"][t]) if t in r["types"] else "-" for t in types]
print("| %s | %s | %s | %s |" % (sys.argv[1], sys.argv[2], " | ".join(row), cell({"accuracy": r["accuracy"], "correct": r["correct"], "total": r["questions"]})))
' "$t" "$v"
done
