#!/usr/bin/env bash
# Runs banger's whole test suite: lints, unit, integration and end-to-end
# tests. End-to-end tests need root (network namespaces, mounts, loop devices).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== format and lints" >&2
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
shellcheck scripts/*.sh tests/fixtures/*.sh .ci/run

echo "== build" >&2
cargo build --workspace --locked

echo "== test fixtures" >&2
if [ "$(id -u)" -eq 0 ]; then
    # Cached under .cache/: built once per machine (a few minutes), then reused.
    tests/fixtures/debian-rootfs.sh .cache/fixtures/debian-bookworm
else
    echo "not root: the end-to-end tests will be skipped" >&2
fi

echo "== tests" >&2
cargo nextest run --workspace --locked --no-fail-fast "$@"
