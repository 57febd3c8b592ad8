#!/usr/bin/env bash
# Prints banger's performance figures on this machine, each beside what a user would use instead.
# Run as root from the repository: scripts/bench.sh [--runs N] [--only SECTION]
#
# Figures, each with its target:
#   vm create control plane (request in -> InstanceStart sent), reflink, p50   < 30 ms
#   root overlay + work disk, 1/4/16 GiB images, reflink                       < 20 ms, flat
#   copy fallback vs `cp --sparse=always`                                      <= 1.2x
#   `banger vm list` with 100 VMs, wall                                         < 15 ms
#   idle daemon RSS                                                             < 20 MiB
#   `banger vm run --rm --vmm sim -- true`, warm image, p50                     < 1 s
#   workspace, 10k files / 100 MB, ready to run: written into the work disk
#   before boot (vm run PATH), over SSH (vm workspace prepare), and
#   `git push` over ssh to the guest, side by side                          < 500 ms before boot
#   image pull -> ext4 vs skopeo copy + umoci unpack + mkfs.ext4 -d             faster
#   DNS queries/s on loopback vs dnsmasq, side by side (dnsperf)               >= dnsmasq
#   qemu engine (vmm = "qemu"; KVM or software emulation, whichever this host
#   gives): time to InstanceStart, to the agent's /healthz, to SSH, and the
#   guest's systemd-analyze critical chain and top-10 blame    SSH <= 13 s under TCG
#
# Everything runs in a private network namespace with the state dir on a
# loop-mounted XFS (reflink); all of it is removed on exit.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

runs=20
only=
sections="control workspace list dns disks pull qemu"
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --only) only="$2"; shift 2 ;;
        *) echo "usage: scripts/bench.sh [--runs N] [--only SECTION]  (sections: $sections)" >&2; exit 2 ;;
    esac
done
case " $sections " in
    *" ${only:-control} "*) ;;
    *) echo "bench.sh: no section $only (sections: $sections)" >&2; exit 2 ;;
esac
# The figures of one section, or of all.
want() { [ -z "$only" ] || [ "$only" = "$1" ]; }
needs=()
want control && needs+=(hyperfine)
want dns && needs+=(dnsperf dnsmasq)
for tool in "${needs[@]}"; do
    command -v "$tool" >/dev/null || { echo "install $tool (apt-get install hyperfine dnsperf dnsmasq-base)" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "scripts/bench.sh needs root" >&2; exit 1; }


repo_root=$PWD
# Where cargo puts the release binaries (CARGO_TARGET_DIR is honoured).
release=$(realpath -m "${CARGO_TARGET_DIR:-target}")/release
rootfs=.cache/fixtures/debian-bookworm/rootfs
[ -d "$rootfs" ] || tests/fixtures/debian-rootfs.sh .cache/fixtures/debian-bookworm

echo "== building release binaries" >&2
cargo build --release --locked --workspace -q
cargo build --release --locked -q -p banger-disk --example disk_bench
cargo build --release --locked -q -p banger-image --example pull_bench

work=$(mktemp -d /tmp/banger-bench.XXXXXX)
netns="banger-bench-$$"
cleanup() {
    set +e
    if [ -n "${BANGER:-}" ]; then
        ip netns exec "$netns" "$BANGER" daemon stop >/dev/null 2>&1
    fi
    ip netns del "$netns" 2>/dev/null
    umount "$work/state" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "bench.sh: failed at line $LINENO; last output:" >&2; tail -20 "$work/last.log" >&2 2>/dev/null' ERR

truncate -s 64G "$work/xfs.img"
mkfs.xfs -q -m reflink=1 "$work/xfs.img"
mkdir -p "$work/state" "$work/home" "$work/config/banger" "$work/run"
mount -o loop "$work/xfs.img" "$work/state"
ip netns add "$netns"
ip -n "$netns" link set lo up
vhost_vsock=$repo_root/.cache/tools/bin/vhost-device-vsock
printf 'vmm = "sim"\nlog_level = "info"\nvhost_vsock_bin = "%s"\nboot_timeout_seconds = 600\n' "$vhost_vsock" \
    > "$work/config/banger/config.toml"

export HOME="$work/home" XDG_STATE_HOME="$work/state" XDG_CONFIG_HOME="$work/config" \
    XDG_RUNTIME_DIR="$work/run" NO_COLOR=1
BANGER=$release/banger
b() { ip netns exec "$netns" "$BANGER" "$@"; }
p50() { sort -n | awk '{ v[NR] = $1 } END { printf "%.1f", v[int((NR + 1) / 2)] }'; }
p90() { sort -n | awk '{ v[NR] = $1 } END { printf "%.1f", v[int(NR * 0.9 + 0.5)] }'; }

b daemon start >/dev/null 2>&1
daemon_pid=$(cut -d' ' -f1 "$work/run/banger/bangerd.lock")
echo
echo "idle daemon RSS (fresh)                : $(awk '/VmRSS/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$daemon_pid/status")   target < 20 MiB"

b image import "$rootfs" --name debian >/dev/null 2>&1
strategy=$(grep -o '"strategy":"[a-z_]*"' "$work/state/banger/bangerd.log" | tail -1)
echo "storage                                : $strategy"

if want control; then
for i in $(seq 1 "$runs"); do
    b vm create --name "bench$i" >/dev/null 2>&1
    b vm delete "bench$i" >/dev/null
done
grep '"InstanceStart sent"' "$work/state/banger/bangerd.log" \
    | grep -o '"control_plane_ms":[0-9.]*' | cut -d: -f2 > "$work/control_plane.txt"
echo "vm create control plane, p50 / p90     : $(p50 < "$work/control_plane.txt") / $(p90 < "$work/control_plane.txt") ms over $runs runs   target p50 < 30 ms"

run_ms=$(hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/run.json" \
    "ip netns exec $netns $BANGER vm run --rm -- true" >/dev/null 2>&1 \
    && python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%.0f / %.0f" % (r["median"]*1000, max(r["times"])*1000))' "$work/run.json")
echo "vm run --rm -- true, p50 / max         : $run_ms ms over $runs runs   target p50 < 1000 ms"
fi

if want workspace; then
echo "== workspace: a repository of 10k files / 100 MB" >&2
repo="$work/bigrepo"
mkdir -p "$repo"
git -C "$repo" init -q -b main
for d in $(seq 0 99); do
    mkdir -p "$repo/d$d"
    for f in $(seq 0 99); do head -c 10240 /dev/urandom > "$repo/d$d/f$f"; done
done
git -C "$repo" add -A
git -C "$repo" -c user.name=bench -c user.email=bench@example.com -c gc.auto=0 commit -qm bench
# Packed, as repositories usually are (both sides below then reuse the pack).
git -C "$repo" gc -q
# 1. Written into the work disk before boot (vm run PATH): how much later
#    the command starts than in the same vm run without a workspace (the
#    command prints the time it starts; a sim guest shares the host's
#    clock), and the whole run, --rm's check of the guest's changes
#    included.
ms_of() { local start; start=$(date +%s%N); "$@" >"$work/last.log" 2>&1; echo $(( ($(date +%s%N) - start) / 1000000 )); }
ready_of() { local start started; start=$(date +%s%N); started=$("$@" 2>"$work/last.log" | tail -1); echo $(( (started - start) / 1000000 )); }
: > "$work/run_bare.txt"; : > "$work/run_ws.txt"; : > "$work/ready_bare.txt"; : > "$work/ready_ws.txt"
for i in 1 2 3 4 5; do
    ready_of b vm run --rm -- date +%s%N >> "$work/ready_bare.txt"
    ready_of b vm run --rm "$repo" -- date +%s%N >> "$work/ready_ws.txt"
    ms_of b vm run --rm -- true >> "$work/run_bare.txt"
    ms_of b vm run --rm "$repo" -- true >> "$work/run_ws.txt"
done
bare_ms=$(p50 < "$work/run_bare.txt"); ws_ms=$(p50 < "$work/run_ws.txt")
ready_bare_ms=$(p50 < "$work/ready_bare.txt"); ready_ws_ms=$(p50 < "$work/ready_ws.txt")
before_boot_ms=$(python3 -c "print(round($ready_ws_ms - $ready_bare_ms))")
# 2. Streamed over SSH into a running VM (vm workspace prepare).
b vm create --name ws >"$work/last.log" 2>&1
prepare_ms=$(ms_of b vm workspace prepare ws "$repo")
# 3. What a user would do by hand: git push over ssh, then a checkout.
ws_ip=$(b vm show ws --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["network"]["ip"])')
ssh_opts=(-i "$work/state/banger/ssh/id_ed25519" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)
start=$(date +%s%N)
ip netns exec "$netns" ssh "${ssh_opts[@]}" "root@$ws_ip" 'git init -q --bare /root/push.git' \
    && ip netns exec "$netns" env GIT_SSH_COMMAND="ssh ${ssh_opts[*]}" git -C "$repo" push -q "root@$ws_ip:/root/push.git" main \
    && ip netns exec "$netns" ssh "${ssh_opts[@]}" "root@$ws_ip" 'git clone -q -b main /root/push.git /root/pushed'
push_ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "workspace, 10k files / 100 MB, ready to run: written before boot +$before_boot_ms ms (command starts at p50 $ready_ws_ms vs $ready_bare_ms ms bare; whole vm run --rm p50 $ws_ms vs $bare_ms ms) | over SSH (vm workspace prepare) $prepare_ms ms | git push over ssh + checkout $push_ms ms   target before boot < 500 ms"
b vm delete ws >/dev/null
fi

if want list; then
echo "== creating 100 VMs for vm list" >&2
for batch in $(seq 0 9); do
    for i in $(seq 0 9); do b vm create --name "list$batch$i" >/dev/null 2>&1 & done
    wait
done
count=$(b vm list --json | grep -c '"name"')
echo "VMs                                    : $count"
list_ms=$(hyperfine -N --warmup 3 --runs 30 --export-json "$work/list.json" \
    "ip netns exec $netns $BANGER vm list" >/dev/null 2>&1 \
    && python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%.1f" % (r["median"]*1000))' "$work/list.json")
echo "vm list with 100 VMs, median wall      : $list_ms ms (includes ip netns exec)   target < 15 ms"
echo "idle daemon RSS (100 VMs)              : $(awk '/VmRSS/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$daemon_pid/status")"
fi

if want dns; then
echo "== DNS: banger vs dnsmasq, 10 s each, 100 names" >&2
queries="$work/queries.txt"
mapfile -t dns_names < <(b vm list --json | grep -o '"name": "[a-z0-9-]*"' | cut -d'"' -f4)
: > "$queries"
for name in "${dns_names[@]}"; do echo "$name.vm A" >> "$queries"; done
echo "nobody.vm A" >> "$queries"
hosts="$work/dnsmasq.hosts"
: > "$hosts"
for name in "${dns_names[@]}"; do echo "172.30.0.9 $name.vm" >> "$hosts"; done
ip netns exec "$netns" dnsmasq --keep-in-foreground --no-resolv --no-hosts --addn-hosts="$hosts" \
    --listen-address=127.0.0.2 --bind-interfaces --port=5353 --cache-size=1000 --pid-file="$work/dnsmasq.pid" &
dnsmasq_pid=$!
ip -n "$netns" addr add 127.0.0.2/8 dev lo 2>/dev/null || true
sleep 1
qps() { ip netns exec "$netns" dnsperf -s "$1" -p "$2" -d "$queries" -l 10 -c 4 -Q 200000 2>/dev/null | awk '/Queries per second/ { print int($4) }'; }
banger_qps=$(qps 127.0.0.1 42069)
dnsmasq_qps=$(qps 127.0.0.2 5353)
kill "$dnsmasq_pid" 2>/dev/null; wait "$dnsmasq_pid" 2>/dev/null || true
echo "DNS queries/s (UDP, loopback)          : banger $banger_qps, dnsmasq $dnsmasq_qps   target banger >= dnsmasq"

mapfile -t names < <(b vm list --json | grep -o '"name": "[a-z0-9-]*"' | cut -d'"' -f4)
b vm delete "${names[@]}" >/dev/null
fi

if want disks; then
echo
echo "== disks (banger-disk's disk_bench)" >&2
"$release/examples/disk_bench" --runs "$runs" --sizes 1,4,16
fi

if want pull; then
echo
echo "== image pull (banger-image's pull_bench, on tmpfs)" >&2
"$release/examples/pull_bench" --rootfs-tar "$repo_root/.cache/fixtures/debian-bookworm/rootfs.tar" \
    --runs 3 --mkfs --work-dir /dev/shm
fi

if want qemu; then
echo
echo "== qemu engine: the bootstrapped kernel and the Debian image in QEMU microvm" >&2
if ! command -v qemu-system-x86_64 >/dev/null || [ ! -x "$vhost_vsock" ]; then
    echo "qemu engine                            : skipped (needs qemu-system-x86 and $vhost_vsock: scripts/install-deps.sh)"
    exit 0
fi
# The kernel users get, bootstrapped by a second banger in the host's
# network namespace (it downloads Debian's kernel package), then imported.
kernel_env=(env HOME="$work/home" XDG_STATE_HOME="$work/kstate" XDG_CONFIG_HOME="$work/kconfig"
    XDG_CACHE_HOME="$repo_root/.cache/bench-kernel" XDG_RUNTIME_DIR="$work/krun")
"${kernel_env[@]}" "$BANGER" kernel bootstrap debian >"$work/last.log" 2>&1
"${kernel_env[@]}" "$BANGER" daemon stop >/dev/null 2>&1
kernel_dir=$(dirname "$(find "$work/kstate/banger/kernels" -name vmlinux | head -1)")
b kernel import "$kernel_dir" --name bench-kernel >"$work/last.log" 2>&1
b image import "$rootfs" --name qdebian --kernel-ref bench-kernel >"$work/last.log" 2>&1
# Seconds of one stage in `vm create`'s progress lines.
stage_s() {
    awk -v stage="$1" '$1 == stage && $2 == "done" {
        v = $3; if ($4 == "ms") v /= 1000; printf "%.1f", v }' "$2"
}
for run in 1 2; do
    b vm create --name "q$run" --vmm qemu --image qdebian >"$work/q$run.log" 2>&1 \
        || { cp "$work/q$run.log" "$work/last.log"; false; }
    accel=$(b vm show "q$run" --json | python3 -c 'import json,sys; print(json.load(sys.stdin).get("accel", "?"))')
    start_vmm=$(stage_s start_vmm "$work/q$run.log")
    disks=$(stage_s prepare_disks "$work/q$run.log")
    agent=$(stage_s wait_vsock_agent "$work/q$run.log")
    ssh=$(stage_s wait_ssh "$work/q$run.log")
    to_start=$(python3 -c "print('%.1f' % max($start_vmm, $disks))")
    to_agent=$(python3 -c "print('%.1f' % ($to_start + $agent))")
    to_ssh=$(python3 -c "print('%.1f' % ($to_start + $agent + $ssh))")
    label="first VM, accelerator probe included"
    [ "$run" -eq 2 ] && label="second VM"
    echo "qemu ($accel), $label: InstanceStart ${to_start} s, agent /healthz ${to_agent} s, SSH ${to_ssh} s   target SSH <= 13 s under TCG (half of the ~26 s to sshd before the host did the boot's work)"
done
echo "guest systemd-analyze critical-chain (q2):"
b vm ssh q2 -- systemd-analyze critical-chain --no-pager 2>&1 | sed 's/^/    /'
echo "guest systemd-analyze blame, top 10 (q2):"
b vm ssh q2 -- sh -c 'systemd-analyze blame --no-pager | head -10' 2>&1 | sed 's/^/    /'
b vm delete q1 q2 >/dev/null
fi
