#!/usr/bin/env bash
# Checks that include/owlet.h is what cbindgen generates from src/ffi/mod.rs, and that it
# compiles as C and C++. Installs cbindgen (pinned) when missing. Fails if the header is stale:
# run `scripts/ci/header.sh --write` to regenerate it.
set -euo pipefail
cd "$(dirname "$0")/../.."
CBINDGEN_VERSION=0.29.4

if ! command -v cbindgen >/dev/null || [[ "$(cbindgen --version)" != "cbindgen $CBINDGEN_VERSION" ]]; then
    echo "header.sh: installing cbindgen $CBINDGEN_VERSION"
    cargo install cbindgen --locked --version "$CBINDGEN_VERSION"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A single source file: only the C ABI's items go into the header.
cbindgen --quiet --config cbindgen.toml --output "$tmp/owlet.h" src/ffi/mod.rs

if [[ "${1:-}" == "--write" ]]; then
    cp "$tmp/owlet.h" include/owlet.h
    echo "header.sh: wrote include/owlet.h"
elif ! diff -u include/owlet.h "$tmp/owlet.h"; then
    echo "header.sh: include/owlet.h is stale; run scripts/ci/header.sh --write and commit it" >&2
    exit 1
fi

# The header must stand alone in C99 and C++.
printf '#include "owlet.h"\nint main(void) { return owlet_version() == 0; }\n' > "$tmp/t.c"
cc -std=c99 -Wall -Wextra -Werror -pedantic -fsyntax-only -Iinclude "$tmp/t.c"
if command -v c++ >/dev/null; then
    c++ -x c++ -Wall -Wextra -Werror -fsyntax-only -Iinclude "$tmp/t.c"
fi
echo "header.sh: include/owlet.h is up to date"
