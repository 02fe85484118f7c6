#!/usr/bin/env bash
# The C ABI under the sanitizers (docs/robustness.md, "Sanitizers"): tests/c_abi.rs and
# tests/concurrency.rs under AddressSanitizer (with LeakSanitizer) and ThreadSanitizer, the forced
# panic in every C entry point under AddressSanitizer, and the C example (examples/c) linked
# against an ASan-instrumented libowlet.a with GCC's ASan runtime.
#
#   scripts/sanitizers.sh            # all four; ~25 min on 2 cores (std is rebuilt per sanitizer)
#   scripts/sanitizers.sh asan|tsan|panic|c
#
# Needs the nightly toolchain with rust-src (`rustup component add rust-src --toolchain
# nightly`): the sanitizers need std itself instrumented (-Zbuild-std), or ThreadSanitizer
# reports races inside std's own synchronisation. Not part of CI (each sanitizer rebuilds std).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=line-tables-only
HOST=x86_64-unknown-linux-gnu
OUT="${SANITIZER_TARGET_DIR:-$PWD/target/sanitizers}"
MODEL=models/owl2-tiny-a-f16.gguf
what="${1:-all}"

san_test() { # $1 = address|thread, then cargo test arguments
    local s="$1"; shift
    RUSTFLAGS="-Zsanitizer=$s" RUSTDOCFLAGS="-Zsanitizer=$s" CARGO_TARGET_DIR="$OUT/$s" \
        cargo +nightly test -Zbuild-std --target "$HOST" "$@"
}

if [[ $what == all || $what == asan ]]; then
    ASAN_OPTIONS=detect_leaks=1 san_test address --test c_abi --test concurrency
fi
if [[ $what == all || $what == tsan ]]; then
    TSAN_OPTIONS=halt_on_error=1 san_test thread --test c_abi --test concurrency
fi
if [[ $what == all || $what == panic ]]; then
    ASAN_OPTIONS=detect_leaks=1 san_test address --features ffi-panic-test --test c_abi
fi
if [[ $what == all || $what == c ]]; then
    # A Rust staticlib does not carry the ASan runtime; the C link (gcc -fsanitize=address)
    # brings GCC's, which shares the instrumentation ABI.
    RUSTFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR="$OUT/address" \
        cargo +nightly rustc -q -Zbuild-std --target "$HOST" --lib --crate-type staticlib
    exe="$OUT/owlet-c-example-asan"
    gcc -O1 -g -fsanitize=address -fno-omit-frame-pointer -Wall -Wextra -std=c99 -Iinclude \
        -o "$exe" examples/c/main.c "$OUT/address/$HOST/debug/libowlet.a" \
        -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
    ASAN_OPTIONS=detect_leaks=1 "$exe" "$MODEL" -t 2 -n 16 --ignore-eos \
        --image tests/data/assets/coffee.png "Describe the image." > "$OUT/c-asan.out"
    cargo run -q --bin owlet -- run -m "$MODEL" -t 2 -n 16 --ignore-eos \
        --image tests/data/assets/coffee.png -p "Describe the image." --print-ids > "$OUT/cli.out"
    diff -u "$OUT/cli.out" "$OUT/c-asan.out"
    ASAN_OPTIONS=detect_leaks=1 "$exe" "$MODEL" -t 1 -n 8 --ignore-eos "Tell me a story." > /dev/null
    echo "sanitizers.sh: the C example under ASan: no report, output equals the CLI's"
fi
