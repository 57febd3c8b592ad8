//! Command-line arguments: Firecracker's, so the launcher can start either
//! binary the same way.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::qemu::AccelChoice;

/// How simvm runs guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// The root drive in Linux namespaces (no kernel, no hypervisor).
    Sim,
    /// The kernel, initrd and drives in QEMU microvm.
    Qemu,
}

/// The user simvm's sockets are given to (`--owner UID:GID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl std::str::FromStr for Owner {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (uid, gid) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?} is not UID:GID"))?;
        let number = |part: &str| {
            part.parse::<u32>()
                .map_err(|_| format!("{part:?} in {text:?} is not a number"))
        };
        Ok(Self {
            uid: number(uid)?,
            gid: number(gid)?,
        })
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

impl Owner {
    /// Gives the socket (or file) at `path` to this user, without following
    /// a symlink there.
    pub fn give(&self, path: &std::path::Path) -> std::io::Result<()> {
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            path,
            Some(nix::unistd::Uid::from_raw(self.uid)),
            Some(nix::unistd::Gid::from_raw(self.gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(std::io::Error::from)
    }
}

/// Firecracker's default API socket.
pub const DEFAULT_API_SOCK: &str = "/run/firecracker.socket";
/// Firecracker's default instance id.
pub const DEFAULT_ID: &str = "anonymous-instance";

/// banger-simvm: speaks the Firecracker API on a unix socket and, on
/// InstanceStart, runs the root drive as a container (Linux namespaces, not
/// a hypervisor) or, with `--engine qemu`, boots the kernel in QEMU.
#[derive(Debug, Clone, Parser)]
#[command(name = "banger-simvm", version, about, long_about = None)]
pub struct Args {
    /// Path of the unix socket the API is served on.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_API_SOCK)]
    pub api_sock: PathBuf,

    /// Instance id (1-64 alphanumerics or '-'), reported by `GET /` and used
    /// to name the host end of the guest's veth.
    #[arg(long, value_name = "ID", default_value = DEFAULT_ID)]
    pub id: String,

    /// File or named pipe for simvm's own log (the guest console goes to
    /// stdout, like Firecracker's serial port).
    #[arg(long, value_name = "PATH")]
    pub log_path: Option<PathBuf>,

    /// How guests run: `sim` (the root drive in Linux namespaces, no
    /// kernel) or `qemu` (the real kernel and drives in QEMU microvm).
    #[arg(long, value_enum, default_value_t = Engine::Sim)]
    pub engine: Engine,

    /// qemu engine: the QEMU binary.
    #[arg(long, value_name = "PATH", default_value = "qemu-system-x86_64")]
    pub qemu_bin: PathBuf,

    /// qemu engine: the vhost-user vsock device binary.
    #[arg(long, value_name = "PATH", default_value = "vhost-device-vsock")]
    pub vhost_vsock_bin: PathBuf,

    /// qemu engine: `kvm`, `tcg` (software emulation) or `auto` (KVM when
    /// the guest's kernel boots under it, else TCG).
    #[arg(long, value_name = "ACCEL", default_value = "auto")]
    pub accel: AccelChoice,

    /// Log level: Error, Warning, Info, Debug, Trace or Off.
    #[arg(long, value_name = "LEVEL")]
    pub level: Option<String>,

    /// Give the API and vsock sockets to this user (`UID:GID`), so a daemon
    /// running as that user can reach them. banger-helper passes it when it
    /// starts a sim guest, as root, for a user's daemon. Such a simvm stops
    /// by itself once its API socket is removed, or when no guest was
    /// started within a minute: nobody else could stop it.
    #[arg(long, value_name = "UID:GID")]
    pub owner: Option<Owner>,

    /// Accepted for Firecracker compatibility; ignored.
    #[arg(long, value_name = "MODULE", hide = true)]
    pub module: Option<String>,
    /// Accepted for Firecracker compatibility; ignored.
    #[arg(long, hide = true)]
    pub show_level: bool,
    /// Accepted for Firecracker compatibility; ignored.
    #[arg(long, hide = true)]
    pub show_log_origin: bool,
    /// Metrics file, as Firecracker's `--metrics-path`.
    #[arg(long, value_name = "PATH")]
    pub metrics_path: Option<PathBuf>,
    /// Accepted for Firecracker compatibility; ignored.
    #[arg(long, value_name = "PATH", hide = true)]
    pub seccomp_filter: Option<PathBuf>,
    /// Accepted for Firecracker compatibility; ignored.
    #[arg(long, hide = true)]
    pub no_seccomp: bool,
    /// Accepted for Firecracker compatibility; ignored.
    #[arg(long, hide = true)]
    pub boot_timer: bool,
    /// Accepted for Firecracker compatibility; ignored.
    #[arg(long, value_name = "BYTES", hide = true)]
    pub http_api_max_payload_size: Option<u64>,
    /// Accepted for Firecracker compatibility; ignored.
    #[arg(long, value_name = "BYTES", hide = true)]
    pub mmds_size_limit: Option<u64>,
    /// Accepted for Firecracker compatibility; ignored.
    #[arg(long, hide = true)]
    pub enable_pci: bool,
    /// Accepted for Firecracker compatibility; ignored.
    #[arg(long, value_name = "US", hide = true)]
    pub start_time_us: Option<u64>,
    /// Accepted for Firecracker compatibility; ignored.
    #[arg(long, value_name = "US", hide = true)]
    pub start_time_cpu_us: Option<u64>,
    /// Accepted for Firecracker compatibility; ignored.
    #[arg(long, value_name = "US", hide = true)]
    pub parent_cpu_time_us: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_firecracker_flags() {
        let args = Args::try_parse_from([
            "banger-simvm",
            "--api-sock",
            "/tmp/a.sock",
            "--id",
            "vm-1",
            "--level",
            "Debug",
            "--show-level",
            "--no-seccomp",
            "--boot-timer",
            "--http-api-max-payload-size",
            "51200",
        ])
        .unwrap();
        assert_eq!(args.api_sock, PathBuf::from("/tmp/a.sock"));
        assert_eq!(args.id, "vm-1");
        assert_eq!(args.level.as_deref(), Some("Debug"));
        assert_eq!(args.engine, Engine::Sim);
    }

    #[test]
    fn qemu_engine_flags() {
        let args = Args::try_parse_from([
            "banger-simvm",
            "--engine",
            "qemu",
            "--accel",
            "tcg",
            "--qemu-bin",
            "/usr/bin/qemu-system-x86_64",
        ])
        .unwrap();
        assert_eq!(args.engine, Engine::Qemu);
        assert_eq!(args.accel, AccelChoice::Fixed(crate::qemu::Accel::Tcg));
        assert!(Args::try_parse_from(["banger-simvm", "--accel", "hvf"]).is_err());
    }

    #[test]
    fn owner_is_uid_colon_gid() {
        let args = Args::try_parse_from(["banger-simvm", "--owner", "1000:1001"]).unwrap();
        assert_eq!(
            args.owner,
            Some(Owner {
                uid: 1000,
                gid: 1001
            })
        );
        assert_eq!(args.owner.unwrap().to_string(), "1000:1001");
        for bad in ["1000", "a:1", "1:", "-1:2"] {
            assert!(
                Args::try_parse_from(["banger-simvm", "--owner", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn defaults_are_firecrackers() {
        let args = Args::try_parse_from(["banger-simvm"]).unwrap();
        assert_eq!(args.api_sock, PathBuf::from(DEFAULT_API_SOCK));
        assert_eq!(args.id, DEFAULT_ID);
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        assert!(Args::try_parse_from(["banger-simvm", "--config-file", "x"]).is_err());
        assert!(Args::try_parse_from(["banger-simvm", "--no-api"]).is_err());
    }
}
