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

if [ "$(id -u)" -eq 0 ]; then
    # The end-to-end suite again, as banger is meant to run: as an ordinary
    # user in the helper's group, each world's daemon taking its network
    # (and sim guests) from a banger-helper serving as root
    # (banger-testkit's `user` module).
    echo "== end-to-end tests as an unprivileged user, through banger-helper" >&2
    e2e_user=banger-ci
    getent group banger >/dev/null || groupadd --system banger
    if ! id -u "$e2e_user" >/dev/null 2>&1; then
        useradd --create-home --user-group --shell /bin/bash "$e2e_user"
    fi
    usermod -aG banger "$e2e_user"
    if getent group kvm >/dev/null; then
        usermod -aG kvm "$e2e_user"
    fi
    # Debian's default; some hosts ship 0600, which keeps a user's VMM
    # from opening the TAP the helper made for it.
    chmod 0666 /dev/net/tun
    # The user runs the binaries under target/ and reads the fixtures under
    # .cache/: each directory down to the checkout must let it pass (a
    # checkout under /root would not).
    as_user=(setpriv --reuid="$e2e_user" --regid="$e2e_user" --init-groups)
    dir=""
    IFS=/ read -ra parts <<< "${PWD#/}"
    for part in "${parts[@]}"; do
        dir="$dir/$part"
        if ! "${as_user[@]}" test -x "$dir"; then
            echo "letting $e2e_user pass through $dir (search permission for others)" >&2
            chmod o+x "$dir"
        fi
    done
    if ! "${as_user[@]}" test -x target/debug/banger; then
        echo "error: $e2e_user cannot run $PWD/target/debug/banger" >&2
        status=1
    else
        started=$SECONDS
        BANGER_E2E_USER="$e2e_user" cargo nextest run -p banger-cli --locked --no-fail-fast \
            -E 'test(/^e2e_/)' || status=$?
        echo "== the unprivileged end-to-end pass took $((SECONDS - started)) s" >&2
    fi
fi

if [ -s "$BANGER_SKIP_LOG" ]; then
    echo "== skipped: $(wc -l < "$BANGER_SKIP_LOG") tests did not run here" >&2
    sort "$BANGER_SKIP_LOG" | sed 's/^/  /' >&2
else
    echo "== skipped: none" >&2
fi
exit "$status"
