#!/usr/bin/env bash
# The C ABI's panic firewall on x86-64: with the test-only `ffi-panic-test` feature every
# exported function panics on purpose; the test shows each returns OWLET_ERR_PANIC (or its
# documented fallback) and the process survives. (aarch64.sh runs the same under qemu.)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo test -p owlet --features ffi-panic-test --test c_abi
