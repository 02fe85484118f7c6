#!/usr/bin/env bash
# Builds the owlet static library for Android (aarch64-linux-android) and iOS (device
# aarch64-apple-ios and simulator aarch64-apple-ios-sim) without an NDK or Xcode (the runtime
# is pure Rust; nothing is linked), and checks with nm that every function declared in
# include/owlet.h is exported by each library. Linking into an app is not tested here.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
T="$CARGO_TARGET_DIR"
TARGETS=(aarch64-linux-android aarch64-apple-ios aarch64-apple-ios-sim)

# The simulator's std is not offered by every rustup mirror (this project's returns 404 for
# rust-std-1.95.0-aarch64-apple-ios-sim). Then the simulator library is built with its standard
# library compiled from source (`-Zbuild-std`, with the machine image's nightly toolchain and
# its rust-src component); owlet's own code is the same stable Rust either way. Without a
# nightly toolchain the target is skipped with a message, unless OWLET_REQUIRE_ALL_MOBILE=1.
installed=$(rustup target list --installed)
BUILD=()
BUILD_STD=()
for t in "${TARGETS[@]}"; do
    if grep -qx "$t" <<<"$installed" || rustup target add "$t" >/dev/null 2>&1; then
        BUILD+=("$t")
    elif [[ "$t" == aarch64-apple-ios-sim ]] && rustup toolchain list | grep -q '^nightly' \
        && rustup component add rust-src --toolchain nightly >/dev/null 2>&1; then
        echo "mobile.sh: $t: no prebuilt std from rustup; building std from source with nightly"
        BUILD_STD+=("$t")
    elif [[ "$t" == aarch64-apple-ios-sim && "${OWLET_REQUIRE_ALL_MOBILE:-0}" != 1 ]]; then
        echo "mobile.sh: SKIPPED $t: rustup cannot download its standard library here"
    else
        echo "mobile.sh: rustup target add $t failed" >&2
        exit 1
    fi
done
# The toolchain's own llvm-nm (rustup component llvm-tools) reads both ELF and Mach-O and the
# LLVM bitcode Apple targets embed; an older system llvm-nm (Debian's LLVM 14) fails on the
# bitcode of Rust 1.95's std objects, and binutils nm lists nothing for Mach-O.
NM="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-nm"
[[ -x "$NM" ]] || rustup component add llvm-tools
[[ -x "$NM" ]] || { echo "mobile.sh: no llvm-nm in $NM" >&2; exit 1; }

# The library never links the CLI's crates: the video decoders (feature `video`: mp4,
# rust_h264, gif), the HTTP server (feature `serve`: tiny_http, serde_json, base64), the
# argument parser and line editor (feature `cli`).
if cargo tree -q -p owlet --no-default-features -e normal --prefix none |
    grep -E '^(mp4|rust_h264|gif|tiny_http|serde_json|base64|clap|rustyline) '; then
    echo "mobile.sh: the library (--no-default-features) pulls in a CLI-only crate (above)" >&2
    exit 1
fi

# The functions the header declares (identifiers right before '(' outside comments).
grep -v '^ *//' include/owlet.h | grep -oE 'owlet_[a-z0-9_]+\(' | tr -d '(' | sort -u > "$T/owlet-h-functions.txt"
[[ $(wc -l < "$T/owlet-h-functions.txt") -ge 15 ]] || { echo "mobile.sh: too few functions parsed" >&2; exit 1; }

for t in "${BUILD[@]}" "${BUILD_STD[@]}"; do
    start=$SECONDS
    # --no-default-features: the library without the CLI's argument parser.
    if [[ " ${BUILD_STD[*]} " == *" $t "* ]]; then
        cargo +nightly build -q -Zbuild-std=std,panic_unwind --release --lib -p owlet \
            --no-default-features --target "$t"
    else
        cargo build -q --release --lib -p owlet --no-default-features --target "$t"
    fi
    lib="$T/$t/release/libowlet.a"
    case "$t" in *apple*) prefix=_ ;; *) prefix= ;; esac
    # Defined text symbols; Mach-O prefixes C names with '_'. (llvm-nm reports members without
    # symbols on stderr; its listing is what counts.)
    "$NM" -g --defined-only "$lib" > "$T/owlet-$t-nm.txt" 2>/dev/null || true
    awk '$2 == "T" { print $3 }' "$T/owlet-$t-nm.txt" | sed -n "s/^${prefix}\(owlet_.*\)/\1/p" \
        | sort -u > "$T/owlet-$t-exports.txt"
    missing=$(comm -23 "$T/owlet-h-functions.txt" "$T/owlet-$t-exports.txt")
    if [[ -n "$missing" ]]; then
        echo "mobile.sh: $t: libowlet.a does not export: $missing" >&2
        exit 1
    fi
    echo "mobile.sh: $t: $(du -h "$lib" | cut -f1) libowlet.a exports all $(wc -l < "$T/owlet-h-functions.txt") header functions ($((SECONDS - start)) s)"
done
