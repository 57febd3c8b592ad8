#!/usr/bin/env bash
# Runs banger's whole test suite: lints, unit, integration and end-to-end
# tests. End-to-end tests need root (network namespaces, mounts, loop devices).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== format and lints" >&2
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
shellcheck scripts/*.sh tests/fixtures/*.sh .ci/run contrib/debian/postinst contrib/debian/prerm contrib/debian/postrm
echo "== dependencies (cargo deny: bans, licences, sources; see deny.toml)" >&2
.cache/tools/bin/cargo-deny --offline --log-level error check bans licenses sources

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
# Tests that cannot run here append `test: reason` to this log
# (banger-testkit's skip); with CI=true, those whose prerequisite this
# script provides fail instead.
export BANGER_SKIP_LOG="$PWD/target/skipped-tests.log"
rm -f "$BANGER_SKIP_LOG"
status=0
cargo nextest run --workspace --locked --no-fail-fast "$@" || status=$?
# nextest does not run documentation examples; cargo test does.
cargo test --doc --workspace --locked -q || status=$?

if [ -s "$BANGER_SKIP_LOG" ]; then
    echo "== skipped: $(wc -l < "$BANGER_SKIP_LOG") tests did not run here" >&2
    sort "$BANGER_SKIP_LOG" | sed 's/^/  /' >&2
else
    echo "== skipped: none" >&2
fi
exit "$status"
