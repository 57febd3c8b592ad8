#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages banger and its test suite use, and
# vhost-device-vsock (the qemu engine's vsock device) and cargo-deny from the
# crate registry, pinned, into the repository's ignored .cache/tools/bin.
# Idempotent: only missing pieces are installed. Needs root (or sudo) for
# the packages.
set -euo pipefail
cd "$(dirname "$0")/.."

# The vhost-user vsock device for vmm = "qemu" (its unix socket speaks
# Firecracker's hybrid vsock). Built once per machine (~2 min), then reused.
VHOST_VSOCK_VERSION=0.3.0
TOOLS_ROOT=.cache/tools
install_vhost_device_vsock() {
    local bin="$TOOLS_ROOT/bin/vhost-device-vsock"
    if [ -x "$bin" ] && grep -q "vhost-device-vsock $VHOST_VSOCK_VERSION" "$TOOLS_ROOT/.crates.toml" 2>/dev/null; then
        return 0
    fi
    echo "installing vhost-device-vsock $VHOST_VSOCK_VERSION into $TOOLS_ROOT/bin" >&2
    cargo install --locked --quiet vhost-device-vsock --version "$VHOST_VSOCK_VERSION" --root "$TOOLS_ROOT"
}

# cargo-deny, which the test script runs over the dependency graph (bans,
# licences, sources; offline). Built once per machine (~7 min on 2 cores).
CARGO_DENY_VERSION=0.20.2
install_cargo_deny() {
    local bin="$TOOLS_ROOT/bin/cargo-deny"
    if [ -x "$bin" ] && grep -q "cargo-deny $CARGO_DENY_VERSION" "$TOOLS_ROOT/.crates.toml" 2>/dev/null; then
        return 0
    fi
    echo "installing cargo-deny $CARGO_DENY_VERSION into $TOOLS_ROOT/bin" >&2
    cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION" --root "$TOOLS_ROOT"
}

packages=(
    # banger at runtime (kmod: depmod indexes a bootstrapped kernel's modules)
    e2fsprogs iproute2 iptables openssh-client git zstd kmod
    # building the guest image fixtures and default images
    debootstrap debian-archive-keyring ca-certificates
    # test suite: guests' sshd comes from the image, but sshd/ssh-keygen are used on the host too
    openssh-server dnsutils docker-registry skopeo umoci jq procps shellcheck btrfs-progs xfsprogs curl python3 make
    # checked against by tests: the system cpio reads our initrd, systemd-analyze verifies our units
    cpio systemd
    # boots the bootstrapped kernel and initrd for real (QEMU microvm, virtio-mmio over ACPI)
    qemu-system-x86
)

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
        missing+=("$package")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    install_vhost_device_vsock
    install_cargo_deny
    exit 0
fi

echo "installing: ${missing[*]}" >&2
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
install_vhost_device_vsock
install_cargo_deny
