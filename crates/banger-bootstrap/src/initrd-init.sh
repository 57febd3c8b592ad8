#!/bin/sh
# banger's initrd init (crate banger-bootstrap): loads the drivers a
# Firecracker guest needs from modules, mounts the root disk, configures the
# network from the kernel's ip= argument and hands over to the real init.
#
# Kernel command line read:
#   root=DEV (default /dev/vda; LABEL=/UUID= through findfs), rootfstype=
#   (default ext4), rootflags=, ro|rw (default rw), rootdelay=SECONDS (how
#   long to wait for the root device, default 10),
#   ip=CLIENT:SERVER:GATEWAY:NETMASK:HOSTNAME:DEVICE:AUTOCONF:DNS0:DNS1
#   (static form; applied here because the drivers are modules, so the
#   kernel's own ip= autoconfiguration ran before the NIC existed),
#   init=PATH: the real init. Without it: banger's first-boot script when the
#   image has one (the same PID 1 as images booted without an initrd), else
#   /sbin/init.
#
# Files read: /etc/banger-initrd/release (the kernel release) and
# /etc/banger-initrd/modules (module paths under /lib/modules/RELEASE, in
# load order, dependencies first).
#
# Test seam (never set in a guest): BANGER_INITRD_DRY_RUN=1 with
# BANGER_INITRD_ROOT=DIR reads DIR/proc/cmdline and DIR/etc/banger-initrd/*,
# and prints "would run: ..." for every command that changes the system.

PATH=/bin:/sbin:/usr/bin:/usr/sbin
export PATH
set -u

ROOT="${BANGER_INITRD_ROOT:-}"
DRY_RUN="${BANGER_INITRD_DRY_RUN:-0}"
NEWROOT=/newroot
FIRST_BOOT=/usr/local/libexec/banger-first-boot

log() {
    echo "banger-initrd: $*"
}

# run CMD ARGS...: a command that changes the system, or its dry-run echo.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        echo "would run: $*"
        return 0
    fi
    "$@"
}

fail() {
    log "error: $*"
    log "cannot boot this guest; the kernel panics when this init exits"
    if [ "$DRY_RUN" = 1 ]; then
        exit 1
    fi
    sleep 2
    exit 1
}

mount_api_filesystems() {
    run mount -t proc -o nosuid,nodev,noexec proc /proc
    run mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
    run mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev ||
        log "warning: devtmpfs not mounted; using the initrd's /dev"
}

root_dev=/dev/vda
root_type=ext4
root_flags=""
root_mode=rw
root_delay=10
real_init=""
ip_config=""

parse_cmdline() {
    cmdline=""
    read -r cmdline <"$ROOT/proc/cmdline" || true
    set -f
    # Word splitting of the command line is intended.
    # shellcheck disable=SC2086
    set -- $cmdline
    set +f
    for arg in "$@"; do
        case "$arg" in
            --) break ;;
            root=*) root_dev="${arg#root=}" ;;
            rootfstype=*) root_type="${arg#rootfstype=}" ;;
            rootflags=*) root_flags="${arg#rootflags=}" ;;
            rootdelay=*) root_delay="${arg#rootdelay=}" ;;
            ro) root_mode=ro ;;
            rw) root_mode=rw ;;
            init=*) real_init="${arg#init=}" ;;
            ip=*) ip_config="${arg#ip=}" ;;
        esac
    done
}

load_modules() {
    release=$(cat "$ROOT/etc/banger-initrd/release") || fail "no kernel release in the initrd"
    while read -r module; do
        [ -n "$module" ] || continue
        run insmod "/lib/modules/$release/$module" || log "warning: insmod $module failed"
    done <"$ROOT/etc/banger-initrd/modules"
}

# The root device node, resolving LABEL=/UUID=/PARTUUID= with findfs.
resolve_root() {
    case "$root_dev" in
        LABEL=* | UUID=* | PARTUUID=*) findfs "$root_dev" 2>/dev/null ;;
        *) echo "$root_dev" ;;
    esac
}

wait_for_root() {
    [ "$DRY_RUN" = 1 ] && return 0
    tenths=$((root_delay * 10))
    while :; do
        device=$(resolve_root)
        if [ -n "$device" ] && [ -b "$device" ]; then
            root_dev=$device
            return 0
        fi
        [ "$tenths" -gt 0 ] || fail "root device $root_dev did not appear within ${root_delay}s"
        tenths=$((tenths - 1))
        sleep 0.1
    done
}

mount_root() {
    options=$root_mode
    if [ -n "$root_flags" ]; then
        options="$options,$root_flags"
    fi
    run mkdir -p "$NEWROOT"
    run mount -t "$root_type" -o "$options" "$root_dev" "$NEWROOT" ||
        fail "cannot mount $root_dev ($root_type, $options) on $NEWROOT"
}

# prefix_of NETMASK: 255.255.255.0 -> 24.
prefix_of() {
    bits=0
    old_ifs=$IFS
    IFS=.
    set -f
    # shellcheck disable=SC2086
    set -- $1
    set +f
    IFS=$old_ifs
    for octet in "$@"; do
        case "$octet" in
            255) bits=$((bits + 8)) ;;
            254) bits=$((bits + 7)) ;;
            252) bits=$((bits + 6)) ;;
            248) bits=$((bits + 5)) ;;
            240) bits=$((bits + 4)) ;;
            224) bits=$((bits + 3)) ;;
            192) bits=$((bits + 2)) ;;
            128) bits=$((bits + 1)) ;;
        esac
    done
    echo "$bits"
}

# Static ip= only; the kernel did nothing when /proc/net/pnp is absent.
configure_network() {
    case "$ip_config" in
        "" | off | none | on | any | dhcp | bootp | rarp | both) return 0 ;;
    esac
    if [ -e "$ROOT/proc/net/pnp" ]; then
        log "the kernel configured ip= itself"
        return 0
    fi
    old_ifs=$IFS
    IFS=:
    set -f
    # shellcheck disable=SC2086
    set -- $ip_config
    set +f
    IFS=$old_ifs
    client=${1:-}
    gateway=${3:-}
    netmask=${4:-255.255.255.0}
    host=${5:-}
    device=${6:-eth0}
    dns0=${8:-}
    dns1=${9:-}
    [ -n "$client" ] || return 0
    if [ "$DRY_RUN" != 1 ]; then
        tries=50
        while [ ! -e "/sys/class/net/$device" ] && [ "$tries" -gt 0 ]; do
            tries=$((tries - 1))
            sleep 0.1
        done
        [ -e "/sys/class/net/$device" ] || log "warning: no network device $device"
    fi
    run ip link set lo up
    run ip addr add "$client/$(prefix_of "$netmask")" dev "$device" ||
        log "warning: cannot address $device"
    run ip link set "$device" up || log "warning: cannot bring $device up"
    if [ -n "$gateway" ]; then
        run ip route add default via "$gateway" dev "$device" ||
            log "warning: no default route via $gateway"
    fi
    if [ -n "$host" ]; then
        if [ "$DRY_RUN" = 1 ]; then
            echo "would set hostname: $host"
        else
            echo "$host" >/proc/sys/kernel/hostname
        fi
    fi
    write_resolv_conf "$dns0" "$dns1"
    log "network: $client/$(prefix_of "$netmask") on $device${gateway:+ via $gateway}"
}

# The resolvers from ip= when the image has none (a dangling symlink, e.g. to
# systemd-resolved's stub, counts as none), as banger-first-boot does.
write_resolv_conf() {
    [ "$root_mode" = rw ] || return 0
    [ -n "$1$2" ] || return 0
    conf="$ROOT$NEWROOT/etc/resolv.conf"
    [ -s "$conf" ] && return 0
    [ -d "$ROOT$NEWROOT/etc" ] || return 0
    rm -f "$conf"
    for server in "$1" "$2"; do
        [ -n "$server" ] && [ "$server" != 0.0.0.0 ] && echo "nameserver $server"
    done >"$conf"
}

choose_init() {
    if [ -z "$real_init" ]; then
        if [ -x "$ROOT$NEWROOT$FIRST_BOOT" ]; then
            real_init=$FIRST_BOOT
        else
            real_init=/sbin/init
        fi
    fi
    # An absolute symlink (/sbin/init -> /lib/systemd/systemd) only resolves
    # inside the new root, so a link counts as present.
    if [ ! -e "$ROOT$NEWROOT$real_init" ] && [ ! -L "$ROOT$NEWROOT$real_init" ]; then
        fail "init $real_init not found on $root_dev"
    fi
}

move_api_filesystems() {
    for fs in /dev /proc /sys; do
        if [ -d "$ROOT$NEWROOT$fs" ]; then
            run mount -o move "$fs" "$NEWROOT$fs" || run umount -l "$fs"
        else
            run umount -l "$fs"
        fi
    done
}

main() {
    [ "$DRY_RUN" = 1 ] || mount_api_filesystems
    parse_cmdline
    load_modules
    wait_for_root
    mount_root
    configure_network
    choose_init
    log "switching to $root_dev, init $real_init"
    move_api_filesystems
    if [ "$DRY_RUN" = 1 ]; then
        echo "would exec: switch_root $NEWROOT $real_init"
        exit 0
    fi
    exec switch_root "$NEWROOT" "$real_init"
}

main
