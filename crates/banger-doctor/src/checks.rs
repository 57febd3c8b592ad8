//! One function per check. Each returns a [`DoctorCheck`]; none fails or
//! panics, whatever the host answers.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_model::check::DoctorCheck;
use banger_model::config::Config;
use banger_model::defaults::VmDefaults;
use banger_model::vm::{StorageStrategy, VmmKind};

use crate::host::{DeviceProbe, Host, KvmProbe};

/// Where to read about routing `.vm` through the host's resolver.
pub const DNS_ROUTING_DOC: &str = "docs/dns-routing.md";
/// The Firecracker release banger is built and tested against.
pub const FIRECRACKER_TESTED: (u32, u32) = (1, 16);
/// Below this much free space in the state dir, doctor warns.
pub const SPACE_WARN: u64 = 4 << 30;
/// Below this much, it fails: an image import or a VM disk will not fit.
pub const SPACE_FAIL: u64 = 1 << 30;
/// How long the `.vm` resolution probe may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the host-level checks need besides the host.
#[derive(Debug, Clone, Copy)]
pub struct HostInputs<'a> {
    pub config: &'a Config,
    pub config_path: &'a Path,
    pub state_dir: &'a Path,
    /// banger's own directories (state, config, cache, runtime): the
    /// ownership check walks them.
    pub own_dirs: &'a [PathBuf],
    pub defaults: &'a VmDefaults,
}

/// The checks any process can run about this host, in display order.
pub fn host_checks(host: &dyn Host, inputs: &HostInputs<'_>) -> Vec<DoctorCheck> {
    vec![
        arch(host),
        vmm(inputs.config),
        kvm(host, inputs.config.vmm),
        tun(host),
        vhost_vsock(host),
        firecracker(host, inputs.config),
        qemu(host, inputs.config),
        vhost_device_vsock(host, inputs.config),
        tools(host),
        privileges(host),
        ownership(host, inputs.own_dirs),
        disk_space(host, inputs.state_dir),
        vm_defaults(inputs.defaults, inputs.config_path),
    ]
}

/// banger is x86_64-only today; say where that assumption lives.
pub fn arch(host: &dyn Host) -> DoctorCheck {
    let arch = host.arch();
    if arch == "x86_64" {
        DoctorCheck::pass("arch", "x86_64")
    } else {
        DoctorCheck::fail(
            "arch",
            format!(
                "{arch} is not supported: banger assumes x86_64 in its kernels (catalog and \
                 imported vmlinux are x86_64 builds), its catalogs (x86_64 kernels, linux/amd64 \
                 images; OCI pulls pick linux/amd64) and its guest agent build (banger-vsock-agent \
                 is built for the host and injected into guests)"
            ),
            "run banger on an x86_64 Linux host",
        )
    }
}

/// Which VMM runs guests; the sim's isolation is said out loud.
pub fn vmm(config: &Config) -> DoctorCheck {
    match config.vmm {
        VmmKind::Firecracker => DoctorCheck::pass("vmm", "firecracker (guests run under KVM)"),
        VmmKind::Sim => DoctorCheck::warn(
            "vmm",
            "vmm = \"sim\": guests run in Linux namespaces on this kernel, NOT under a \
             hypervisor; their isolation is that of a container, not of a VM",
            "on a host with usable KVM set vmm = \"firecracker\" in config.toml (or drop the key)",
        ),
        VmmKind::Qemu => DoctorCheck::pass(
            "vmm",
            "qemu: guests boot their real kernel in QEMU microvm (banger-simvm's qemu engine); \
             KVM when the kernel boots under it, otherwise software emulation, which is slow",
        ),
    }
}

/// `/dev/kvm` opens, speaks API 12 and creates a VM.
pub fn kvm(host: &dyn Host, vmm: VmmKind) -> DoctorCheck {
    let problem = |detail: String, fix: &str| match vmm {
        VmmKind::Sim => DoctorCheck::warn(
            "kvm",
            format!("{detail} (vmm = \"sim\" does not need it)"),
            fix,
        ),
        VmmKind::Qemu => DoctorCheck::warn(
            "kvm",
            format!("{detail}: qemu guests run under software emulation (TCG), slowly"),
            fix,
        ),
        VmmKind::Firecracker => DoctorCheck::fail("kvm", detail, fix),
    };
    match host.kvm() {
        KvmProbe::Usable { api_version } if vmm == VmmKind::Qemu => DoctorCheck::pass(
            "kvm",
            format!(
                "/dev/kvm usable (API {api_version}, VM created); with qemu_accel = \"auto\" each \
                 kernel is booted under KVM once to check (nested KVM may create VMs that cannot \
                 run a kernel; then guests run under TCG, slowly, and `vm show` says so)"
            ),
        ),
        KvmProbe::Usable { api_version } => DoctorCheck::pass(
            "kvm",
            format!("/dev/kvm usable (API {api_version}, VM created)"),
        ),
        KvmProbe::Missing => problem(
            "/dev/kvm does not exist".into(),
            "enable virtualisation (VT-x/AMD-V) in firmware and load kvm: `sudo modprobe kvm_intel` \
             (or kvm_amd); in a cloud VM pick an instance type with nested virtualisation; \
             without KVM use vmm = \"sim\"",
        ),
        KvmProbe::Open(err) => problem(
            format!("cannot open /dev/kvm: {err}"),
            "add yourself to the kvm group: `sudo usermod -aG kvm $USER` (then log in again), \
             or run the daemon as root",
        ),
        KvmProbe::ApiVersion(err) => problem(
            format!("/dev/kvm did not answer KVM_GET_API_VERSION: {err}"),
            "check that /dev/kvm is the KVM device (`ls -l /dev/kvm`: char 10,232)",
        ),
        KvmProbe::UnexpectedApi(version) => problem(
            format!("/dev/kvm speaks KVM API {version}, not 12"),
            "use a mainline Linux kernel",
        ),
        KvmProbe::CreateVm(err) => problem(
            format!("/dev/kvm cannot create a VM: {err}"),
            "enable virtualisation in firmware, and stop other hypervisors that hold VT-x \
             (VirtualBox, VMware)",
        ),
    }
}

/// `/dev/net/tun`: every VM's network is a TAP, which the VMM attaches to
/// through it, with the daemon's credentials (a daemon that is not root
/// needs the device world-usable, as Debian ships it).
pub fn tun(host: &dyn Host) -> DoctorCheck {
    let path = Path::new("/dev/net/tun");
    let uid = host.privileges().euid;
    match host.device(path) {
        DeviceProbe::Usable => {
            DoctorCheck::pass("tun", format!("/dev/net/tun usable by uid {uid}"))
        }
        DeviceProbe::Missing => DoctorCheck::fail(
            "tun",
            "/dev/net/tun does not exist: VMs cannot have a network",
            "sudo modprobe tun",
        ),
        DeviceProbe::Unusable(err) => DoctorCheck::fail(
            "tun",
            format!(
                "uid {uid} cannot open /dev/net/tun ({err}): its VMs' VMMs cannot attach to their TAPs"
            ),
            "sudo chmod 0666 /dev/net/tun (the mode Debian ships; a udev rule `KERNEL==\"tun\", \
             MODE=\"0666\"` keeps it), or run banger as root",
        ),
    }
}

/// `/dev/vhost-vsock`. Firecracker's vsock is hybrid (the host end is a unix
/// socket), so banger's VMs do not need the module: warn only.
pub fn vhost_vsock(host: &dyn Host) -> DoctorCheck {
    let path = Path::new("/dev/vhost-vsock");
    match host.device(path) {
        DeviceProbe::Usable => DoctorCheck::pass("vhost-vsock", "/dev/vhost-vsock usable"),
        DeviceProbe::Missing => DoctorCheck::warn(
            "vhost-vsock",
            "/dev/vhost-vsock is absent; banger's guest agent still works (Firecracker serves \
             vsock through a unix socket), tools that use kernel vsock will not",
            "sudo modprobe vhost_vsock",
        ),
        DeviceProbe::Unusable(err) => DoctorCheck::warn(
            "vhost-vsock",
            format!("cannot open /dev/vhost-vsock: {err}"),
            "run the daemon as root, or `sudo chmod 0660 /dev/vhost-vsock` for your group",
        ),
    }
}

/// The Firecracker binary (config `firecracker_bin`, else `PATH`) and its version.
pub fn firecracker(host: &dyn Host, config: &Config) -> DoctorCheck {
    let needed = config.vmm == VmmKind::Firecracker;
    let problem = |detail: String, fix: String| {
        if needed {
            DoctorCheck::fail("firecracker", detail, fix)
        } else {
            DoctorCheck::warn(
                "firecracker",
                format!("{detail} (vmm = \"{}\" does not need it)", config.vmm),
                fix,
            )
        }
    };
    let install = "install Firecracker v1.16 (the release's `firecracker-v1.16.*-x86_64` binary) \
                   as /usr/local/bin/firecracker, or set firecracker_bin in config.toml";
    let binary = match &config.firecracker_bin {
        Some(path) if host.is_executable(path) => path.clone(),
        Some(path) => {
            return problem(
                format!(
                    "firecracker_bin = {} is not an executable file",
                    path.display()
                ),
                install.to_owned(),
            );
        }
        None => match host.find_program("firecracker") {
            Some(path) => path,
            None => return problem("firecracker is not in PATH".into(), install.to_owned()),
        },
    };
    let version = match host.program_version(&binary) {
        Ok(version) => version,
        Err(err) => return problem(err, install.to_owned()),
    };
    match parse_firecracker_version(&version) {
        Some((major, minor)) if (major, minor) >= FIRECRACKER_TESTED => {
            DoctorCheck::pass("firecracker", format!("{} ({version})", binary.display()))
        }
        Some(_) => DoctorCheck::warn(
            "firecracker",
            format!(
                "{} is {version}; banger is tested with v{}.{}",
                binary.display(),
                FIRECRACKER_TESTED.0,
                FIRECRACKER_TESTED.1
            ),
            install.to_owned(),
        ),
        None => DoctorCheck::warn(
            "firecracker",
            format!(
                "{} printed an unexpected version: {version}",
                binary.display()
            ),
            install.to_owned(),
        ),
    }
}

/// The QEMU binary the qemu engine runs (config `qemu_bin`, else `PATH`).
pub fn qemu(host: &dyn Host, config: &Config) -> DoctorCheck {
    let fix = "sudo apt-get install qemu-system-x86 (or set qemu_bin in config.toml)";
    companion(
        host,
        config,
        "qemu",
        config.qemu_bin.as_deref(),
        "qemu-system-x86_64",
        fix,
    )
}

/// The vhost-user vsock device the qemu engine runs (config
/// `vhost_vsock_bin`, else `PATH`).
pub fn vhost_device_vsock(host: &dyn Host, config: &Config) -> DoctorCheck {
    let fix = "cargo install --locked vhost-device-vsock --version 0.3.0 (scripts/install-deps.sh \
               does this into .cache/tools/bin), then put it in PATH or set vhost_vsock_bin in \
               config.toml";
    companion(
        host,
        config,
        "vhost-device-vsock",
        config.vhost_vsock_bin.as_deref(),
        "vhost-device-vsock",
        fix,
    )
}

/// A program only `vmm = "qemu"` needs: fails when it is the VMM and the
/// program is missing, warns otherwise.
fn companion(
    host: &dyn Host,
    config: &Config,
    check: &str,
    configured: Option<&Path>,
    program: &str,
    fix: &str,
) -> DoctorCheck {
    let problem = |detail: String| {
        if config.vmm == VmmKind::Qemu {
            DoctorCheck::fail(check, detail, fix)
        } else {
            DoctorCheck::warn(
                check,
                format!("{detail} (only vmm = \"qemu\" needs it)"),
                fix,
            )
        }
    };
    let binary = match configured {
        Some(path) if host.is_executable(path) => path.to_owned(),
        Some(path) => return problem(format!("{} is not an executable file", path.display())),
        None => match host.find_program(program) {
            Some(path) => path,
            None => return problem(format!("{program} is not in PATH")),
        },
    };
    match host.program_version(&binary) {
        Ok(version) => DoctorCheck::pass(check, format!("{} ({version})", binary.display())),
        Err(_) => DoctorCheck::pass(check, binary.display().to_string()),
    }
}

/// `Firecracker v1.16.0` → `(1, 16)`.
pub fn parse_firecracker_version(line: &str) -> Option<(u32, u32)> {
    let word = line.split_whitespace().find(|word| {
        word.starts_with('v') && word[1..].starts_with(|c: char| c.is_ascii_digit())
    })?;
    let mut parts = word[1..].split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The host programs banger runs, with the package that provides each.
pub const TOOLS: &[(&str, &str)] = &[
    ("mkfs.ext4", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
    ("resize2fs", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
    ("iptables", "iptables"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
];

pub fn tools(host: &dyn Host) -> DoctorCheck {
    let missing: Vec<(&str, &str)> = TOOLS
        .iter()
        .copied()
        .filter(|(tool, _)| host.find_program(tool).is_none())
        .collect();
    if missing.is_empty() {
        let names: Vec<&str> = TOOLS.iter().map(|(tool, _)| *tool).collect();
        return DoctorCheck::pass("tools", names.join(", "));
    }
    let mut packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
    packages.dedup();
    let tools: Vec<&str> = missing.iter().map(|(tool, _)| *tool).collect();
    DoctorCheck::fail(
        "tools",
        format!(
            "not found on PATH, /usr/sbin or /sbin: {}",
            tools.join(", ")
        ),
        format!("sudo apt install {}", packages.join(" ")),
    )
}

/// Who does the privileged work: a root daemon itself; for anyone else
/// banger-helper (whether it is reachable is the `helper` check's).
pub fn privileges(host: &dyn Host) -> DoctorCheck {
    let privileges = host.privileges();
    if privileges.is_root() {
        return DoctorCheck::pass(
            "privileges",
            "root: bangerd makes bridges, TAPs, NAT rules and sim guests itself",
        );
    }
    DoctorCheck::pass(
        "privileges",
        format!(
            "uid {}: bangerd runs as you; banger-helper makes bridges, TAPs, NAT rules and sim \
             guests for you (see the helper check)",
            privileges.euid
        ),
    )
}

/// Whether the process owns everything in banger's directories: a root
/// daemon started for the user's dirs (`sudo -E banger …`) leaves files a
/// daemon running as the user can neither read nor replace.
pub fn ownership(host: &dyn Host, dirs: &[PathBuf]) -> DoctorCheck {
    let privileges = host.privileges();
    if privileges.is_root() {
        return DoctorCheck::pass(
            "ownership",
            "root may use every file in banger's directories",
        );
    }
    let found = host.foreign_owned(dirs, privileges.euid);
    if found.is_empty() {
        return DoctorCheck::pass(
            "ownership",
            format!(
                "uid {} owns every file in banger's directories",
                privileges.euid
            ),
        );
    }
    DoctorCheck::fail(
        "ownership",
        format!(
            "{} in banger's directories (left by running banger as root?)",
            found.summary()
        ),
        format!(
            "give them back to yourself: {}",
            crate::ownership::fix_command(dirs, privileges.euid)
        ),
    )
}

/// Free space where VMs and images live.
pub fn disk_space(host: &dyn Host, state_dir: &Path) -> DoctorCheck {
    let space = match host.free_space(state_dir) {
        Ok(space) => space,
        Err(err) => {
            return DoctorCheck::warn(
                "disk-space",
                err,
                format!("make sure {} can be created", state_dir.display()),
            );
        }
    };
    let detail = format!(
        "{} free of {} in {}",
        human(space.available),
        human(space.total),
        state_dir.display()
    );
    let fix = "free space there, or move the state dir to a larger filesystem \
               (XDG_STATE_HOME=/big/disk)";
    if space.available < SPACE_FAIL {
        DoctorCheck::fail("disk-space", detail, fix)
    } else if space.available < SPACE_WARN {
        DoctorCheck::warn("disk-space", detail, fix)
    } else {
        DoctorCheck::pass("disk-space", detail)
    }
}

/// `1.5 GiB`, `512 MiB`.
fn human(bytes: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

/// The VM size defaults and where each came from.
pub fn vm_defaults(defaults: &VmDefaults, config_path: &Path) -> DoctorCheck {
    DoctorCheck::pass(
        "vm-defaults",
        format!(
            "{} vcpu ({}) · {} MiB ({}) · {} disk ({}); override in [vm_defaults] of {}",
            defaults.vcpu.value,
            defaults.vcpu.provenance,
            defaults.memory_mib.value,
            defaults.memory_mib.provenance,
            defaults.disk_size.value,
            defaults.disk_size.provenance,
            config_path.display()
        ),
    )
}

/// How the daemon makes VM root disks, as probed in the state dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageFacts {
    pub dir: PathBuf,
    pub strategy: StorageStrategy,
    /// Why reflink is not usable, when it is not.
    pub reflink_problem: Option<String>,
    /// Why device-mapper is not usable, when it was probed and is not.
    pub dm_problem: Option<String>,
}

pub fn storage(facts: &StorageFacts) -> DoctorCheck {
    let dir = facts.dir.display();
    match facts.strategy {
        StorageStrategy::Reflink => DoctorCheck::pass(
            "storage",
            format!("reflink clones in {dir} (instant, shared extents)"),
        ),
        StorageStrategy::DmSnapshot => DoctorCheck::pass(
            "storage",
            format!(
                "device-mapper snapshots in {dir} ({})",
                facts
                    .reflink_problem
                    .as_deref()
                    .unwrap_or("no reflink here")
            ),
        ),
        StorageStrategy::Copy => DoctorCheck::warn(
            "storage",
            format!(
                "sparse copies in {dir}: each VM copies its image ({}; {})",
                facts.reflink_problem.as_deref().unwrap_or("no reflink"),
                facts.dm_problem.as_deref().unwrap_or("no device-mapper")
            ),
            "put the state dir on btrfs or xfs (XDG_STATE_HOME=/path/on/btrfs), or install \
             dmsetup and run the daemon as root for dm-snapshots",
        ),
    }
}

/// One of banger's companion binaries as the daemon looks for it (next to
/// `bangerd`, in `../lib/banger/`, in `PATH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Companion {
    /// `banger-vsock-agent`, `banger-simvm`, …
    pub name: String,
    /// Where it was found, or where it was looked for.
    pub found: Result<PathBuf, String>,
    /// What it is for, e.g. `copied into every image`.
    pub role: String,
    /// Whether this configuration cannot work without it.
    pub needed: bool,
}

/// The companion binaries: each found, or what is missing and the fix.
pub fn companions(list: &[Companion]) -> DoctorCheck {
    let fix = "reinstall banger: `make install` puts banger-vsock-agent and banger-simvm in \
               PREFIX/lib/banger next to PREFIX/bin/bangerd";
    let missing: Vec<&Companion> = list.iter().filter(|c| c.found.is_err()).collect();
    if missing.is_empty() {
        let found = list
            .iter()
            .map(|c| match &c.found {
                Ok(path) => format!("{} ({})", c.name, path.display()),
                Err(_) => c.name.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        return DoctorCheck::pass("companions", found);
    }
    let detail = missing
        .iter()
        .map(|c| {
            let searched = c.found.as_ref().err().map_or("", String::as_str);
            format!("{} is missing ({}; looked in {searched})", c.name, c.role)
        })
        .collect::<Vec<_>>()
        .join("; ");
    if missing.iter().any(|c| c.needed) {
        DoctorCheck::fail("companions", detail, fix)
    } else {
        DoctorCheck::warn("companions", detail, fix)
    }
}

/// What the image catalog says about the wanted default image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogLookup {
    Found,
    NotFound,
    /// The catalog could not be read (e.g. `catalog_url` unreachable).
    Unavailable(String),
}

/// The default image as `vm create` resolves it: the store's default;
/// else `default_image` from config (or the catalog's default name), taken
/// from the local images or pulled from the catalog on first use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    /// `default_image` from config, if set.
    pub configured: Option<String>,
    /// The name `vm create` looks for without a store default:
    /// `configured`, else the catalog's default image name.
    pub wanted: String,
    /// The image the store marks as default.
    pub store_default: Option<String>,
    /// Where that image came from, e.g. `developer profile, bootstrapped
    /// from debian:bookworm packages (…)`.
    pub store_default_origin: Option<String>,
    /// Every image name in the store.
    pub local: Vec<String>,
    /// The catalog's answer for `wanted` (only asked without a usable local
    /// image).
    pub catalog: CatalogLookup,
}

pub fn default_image(facts: &ImageFacts) -> DoctorCheck {
    let import = "`banger image pull REF` (OCI or catalog) or `banger image import DIR --name N`; \
                  the first image becomes the default (`banger image promote N` picks another)";
    if let Some(name) = &facts.store_default {
        let shown = match &facts.store_default_origin {
            Some(origin) => format!("{name}, {origin}"),
            None => name.clone(),
        };
        let detail = match &facts.configured {
            Some(configured) if configured != name => format!(
                "{shown} (local default; default_image = {configured:?} in config only applies \
                 while no image is promoted)"
            ),
            _ => format!("{shown} (local default)"),
        };
        return DoctorCheck::pass("default-image", detail);
    }
    let wanted = &facts.wanted;
    if facts.local.iter().any(|local| local == wanted) {
        return DoctorCheck::pass(
            "default-image",
            format!("{wanted} (local; becomes the default on first use)"),
        );
    }
    match (&facts.catalog, &facts.configured) {
        (CatalogLookup::Found, _) => DoctorCheck::pass(
            "default-image",
            format!("{wanted} (in the catalog; pulled with its kernel on first use)"),
        ),
        (CatalogLookup::NotFound, Some(_)) => DoctorCheck::fail(
            "default-image",
            format!("default_image = {wanted:?} is neither a local image nor in the catalog"),
            format!("fix default_image in config.toml, or {import}"),
        ),
        (CatalogLookup::NotFound, None) => DoctorCheck::warn(
            "default-image",
            format!(
                "no default image, and the catalog does not list {wanted}: the first `vm run` or \
                 `vm create` without --image bootstraps debian:bookworm (developer profile) from \
                 Debian's packages (a few minutes; needs debootstrap)"
            ),
            format!("`banger image bootstrap` builds it now, or {import}"),
        ),
        (CatalogLookup::Unavailable(err), _) => DoctorCheck::warn(
            "default-image",
            format!("no local default image, and the catalog cannot be read: {err}"),
            format!("check catalog_url in config.toml, or {import}"),
        ),
    }
}

/// The daemon's DNS server and the resolver routing in front of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsFacts {
    /// `udp://…`, `tcp://…` while serving; the bind error otherwise.
    pub listener: Result<Vec<String>, String>,
    pub routing: RoutingFacts,
}

/// What the daemon did about systemd-resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingFacts {
    /// systemd-resolved is not running: nothing is routed automatically.
    ResolvedInactive,
    /// systemd-resolved runs, but the daemon does not route through it.
    Skipped {
        reason: String,
    },
    /// resolved runs; routing is applied once the bridge exists.
    Pending {
        link: String,
    },
    Applied {
        link: String,
        dns: String,
    },
    Failed {
        link: String,
        error: String,
    },
}

/// How the daemon reaches the host network: as root itself, otherwise
/// through banger-helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelperFacts {
    /// The daemon is root: it needs no helper.
    Root,
    /// The daemon's network goes through the helper at this socket.
    Reached(PathBuf),
    /// The daemon is not root and the helper at `socket` was not reached.
    Unreached { socket: PathBuf, error: String },
}

pub fn helper(facts: &HelperFacts) -> DoctorCheck {
    match facts {
        HelperFacts::Root => DoctorCheck::pass(
            "helper",
            "the daemon is root and makes its network itself (no banger-helper needed)",
        ),
        HelperFacts::Reached(socket) => DoctorCheck::pass(
            "helper",
            format!(
                "the daemon's bridge, TAPs and NAT go through banger-helper at {}",
                socket.display()
            ),
        ),
        HelperFacts::Unreached { socket, error } => DoctorCheck::fail(
            "helper",
            format!(
                "the daemon is not root and banger-helper is not reachable at {} ({error}): its \
                 VMs cannot get a network",
                socket.display()
            ),
            "install the helper (`sudo make install-helper`, or the package `make deb` builds), \
             join its group (`sudo usermod -aG banger $USER`, then log in again) and run \
             `banger daemon stop` so that the next command starts a daemon that uses it; or run \
             banger as root",
        ),
    }
}

pub fn dns_listener(facts: &DnsFacts, configured: &str) -> DoctorCheck {
    match &facts.listener {
        Ok(listeners) => {
            DoctorCheck::pass("dns", format!("serving .vm on {}", listeners.join(", ")))
        }
        Err(err) => DoctorCheck::warn(
            "dns",
            format!(
                "not serving .vm on {configured}: {err}; VMs still work by IP and `banger vm ssh`"
            ),
            "free that port (`ss -lunp | grep 42069`), or set network.dns_listen in config.toml",
        ),
    }
}

pub fn dns_routing(facts: &DnsFacts) -> DoctorCheck {
    match &facts.routing {
        RoutingFacts::ResolvedInactive => DoctorCheck::pass(
            "dns-routing",
            format!(
                "systemd-resolved is not running, so banger routes nothing itself; other \
                 resolvers are configured by hand ({DNS_ROUTING_DOC})"
            ),
        ),
        RoutingFacts::Skipped { reason } => DoctorCheck::pass(
            "dns-routing",
            format!(
                "systemd-resolved runs, but banger does not route ~vm through it: {reason} \
                 ({DNS_ROUTING_DOC})"
            ),
        ),
        RoutingFacts::Pending { link } => DoctorCheck::pass(
            "dns-routing",
            format!("systemd-resolved: ~vm is routed on {link} once the bridge is up (first VM)"),
        ),
        RoutingFacts::Applied { link, dns } => DoctorCheck::pass(
            "dns-routing",
            format!("systemd-resolved routes ~vm to {dns} on {link}"),
        ),
        RoutingFacts::Failed { link, error } => DoctorCheck::warn(
            "dns-routing",
            format!("routing ~vm through systemd-resolved on {link} failed: {error}"),
            format!(
                "run the daemon as root (resolvectl needs it), check `resolvectl status {link}`, \
                 or route .vm by hand ({DNS_ROUTING_DOC})"
            ),
        ),
    }
}

/// A name the daemon published only for this check, and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveProbe {
    pub name: String,
    pub expected: IpAddr,
}

/// Whether `NAME.vm` resolves through the system resolver (getaddrinfo, so
/// nsswitch, resolv.conf and any stub resolver all take part).
pub fn vm_resolution(host: &dyn Host, probe: Option<&ResolveProbe>) -> DoctorCheck {
    let fix = format!(
        "route .vm to banger's DNS server ({DNS_ROUTING_DOC}: systemd-resolved, dnsmasq, \
         NetworkManager, resolv.conf); meanwhile `banger vm ssh NAME` works without it"
    );
    let Some(probe) = probe else {
        return DoctorCheck::warn(
            "vm-resolution",
            "not checked: banger's DNS server is not serving",
            fix,
        );
    };
    match host.resolve(&probe.name, RESOLVE_TIMEOUT) {
        Ok(addresses) if addresses.contains(&probe.expected) => DoctorCheck::pass(
            "vm-resolution",
            format!("{} resolves through the system resolver", probe.name),
        ),
        Ok(addresses) => DoctorCheck::warn(
            "vm-resolution",
            format!(
                "{} resolves to {} instead of {}: another resolver answers .vm",
                probe.name,
                addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                probe.expected
            ),
            fix,
        ),
        Err(err) => DoctorCheck::warn(
            "vm-resolution",
            format!(
                ".vm names do not resolve through the system resolver ({}: {err})",
                probe.name
            ),
            fix,
        ),
    }
}

/// Whether `~/.ssh/config` includes banger's ssh_config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncludeState {
    Installed,
    /// banger's block sits inside a `Host`/`Match` block (moved by hand),
    /// where it only applies to that block.
    Misplaced,
    /// Only the pre-Include inline block of older banger versions.
    Legacy,
    Missing,
    Unreadable(String),
}

pub fn ssh_include(state: &IncludeState, user_config: &Path) -> DoctorCheck {
    let fix = "banger ssh-config --install (optional: `banger vm ssh` works without it)";
    match state {
        IncludeState::Installed => DoctorCheck::pass(
            "ssh-config",
            format!(
                "{} includes banger's ssh_config: `ssh NAME.vm` works",
                user_config.display()
            ),
        ),
        IncludeState::Misplaced => DoctorCheck::warn(
            "ssh-config",
            format!(
                "banger's Include sits inside a Host/Match block of {}, so it only applies there",
                user_config.display()
            ),
            "banger ssh-config --install (moves it to the top)",
        ),
        IncludeState::Legacy => DoctorCheck::warn(
            "ssh-config",
            format!(
                "{} holds an old inline banger block instead of the Include",
                user_config.display()
            ),
            "banger ssh-config --install (migrates the old block)",
        ),
        IncludeState::Missing => DoctorCheck::warn(
            "ssh-config",
            format!(
                "{} does not include banger's ssh_config, so plain `ssh NAME.vm` does not use \
                 banger's key",
                user_config.display()
            ),
            fix,
        ),
        IncludeState::Unreadable(err) => DoctorCheck::warn(
            "ssh-config",
            format!("cannot read {}: {err}", user_config.display()),
            fix,
        ),
    }
}

/// The daemon, as the CLI reached it (or did not).
pub fn daemon(reached: Result<String, String>) -> DoctorCheck {
    match reached {
        Ok(detail) => DoctorCheck::pass("daemon", detail),
        Err(err) => DoctorCheck::fail(
            "daemon",
            format!("{err}; the checks below ran in the CLI instead"),
            "see `banger daemon status` and the daemon log it names",
        ),
    }
}
