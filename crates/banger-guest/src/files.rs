//! The files banger puts into every guest, as data.
//!
//! [`GuestFiles::entries`] lists, parents first, the directories, regular
//! files and symlinks to create. Everything is owned by root (uid 0, gid 0).
//! Consumers apply each entry in order:
//! - [`EntryKind::Dir`]: create with `mode` when missing; an existing
//!   directory is left as it is.
//! - [`EntryKind::File`]: replace whatever non-directory is at the path
//!   (never write through a symlink), then set `mode`.
//! - [`EntryKind::Symlink`]: replace whatever non-directory is at the path.
//!   Used to enable units (`*.wants/` links) and to mask them (`-> /dev/null`),
//!   so no `systemctl` is needed.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// The first-boot script (POSIX sh).
pub const FIRST_BOOT_SCRIPT: &str = include_str!("../guest/banger-first-boot");
/// `banger-first-boot.service`: the script's oneshot mode, before sshd.
pub const FIRST_BOOT_UNIT: &str = include_str!("../guest/banger-first-boot.service");
/// `banger-vsock-agent.service`: the agent on vsock port 1024.
pub const AGENT_UNIT: &str = include_str!("../guest/banger-vsock-agent.service");
/// `ssh.service` started early (see the file).
pub const SSH_UNIT_DROP_IN: &str = include_str!("../guest/ssh-banger.conf");
/// The hardened sshd drop-in (StrictModes stays at its default, on).
pub const SSHD_DROP_IN: &str = include_str!("../guest/99-banger.conf");

pub use banger_model::contract::FIRST_BOOT_PATH;
/// Where the agent binary lives in the guest.
pub const AGENT_PATH: &str = "/usr/local/bin/banger-vsock-agent";
/// The session guard: a symlink to the agent, which answers to this name.
/// banger's remote command lines `exec` it around a `-- CMD` so that the
/// command stops when its SSH session goes away (see `banger-agent`).
pub const SESSION_PATH: &str = "/usr/local/libexec/banger-session";
/// The first-boot unit's path.
pub const FIRST_BOOT_UNIT_PATH: &str = "/etc/systemd/system/banger-first-boot.service";
/// The agent unit's path.
pub const AGENT_UNIT_PATH: &str = "/etc/systemd/system/banger-vsock-agent.service";
/// The `ssh.service` drop-in's path.
pub const SSH_UNIT_DROP_IN_PATH: &str = "/etc/systemd/system/ssh.service.d/banger.conf";
/// The sshd drop-in's path.
pub const SSHD_DROP_IN_PATH: &str = "/etc/ssh/sshd_config.d/99-banger.conf";

/// Units masked (linked to `/dev/null`). Some wait for minutes, or
/// forever, in a Firecracker guest built from a container rootfs: without
/// udev no `dev-ttyS0.device` ever appears for the serial getty to bind to,
/// `systemd-firstboot` prompts on the console when `/etc/machine-id` is
/// missing, and the network is configured by the kernel's `ip=` argument, so
/// nothing should wait for a network manager to bring it online. The rest
/// is housekeeping a disposable sandbox does not need and should not spend
/// its first minutes on: apt's daily downloads and upgrades (which also
/// hold apt's lock when the user wants to install), man-db's index, ext4
/// scrubbing of LVM snapshots, TRIM and dpkg database backups. Then what a
/// microVM has no use for at boot, each of which cost about a second of a
/// guest under emulation (measured on the qemu engine with TCG: time to SSH
/// from 27.5 s to 12.1 s with these and the early agent and sshd): consoles
/// and gettys, binfmt, the journal's flush to disk (it stays in /run),
/// utmp, the random seed (the CPU has RDRAND), hugepages, debugfs and
/// tracefs mounts (mount them by hand to trace), sysusers (packages made
/// their users), the static device nodes of modules (modprobe@fuse and
/// @loop still load those two), pstore, password agents, tmpfiles cleaning,
/// the root remount (the kernel mounts it rw) and modules-load.d (modules
/// load on demand from the modules drive).
pub const MASKED_UNITS: &[&str] = &[
    "dev-ttyS0.device",
    "serial-getty@ttyS0.service",
    "systemd-firstboot.service",
    "systemd-networkd-wait-online.service",
    "NetworkManager-wait-online.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "man-db.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "dpkg-db-backup.timer",
    "getty.target",
    "getty-static.service",
    "getty@tty1.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "systemd-journal-flush.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "systemd-random-seed.service",
    "dev-hugepages.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "systemd-sysusers.service",
    "kmod-static-nodes.service",
    "systemd-tmpfiles-setup-dev.service",
    "modprobe@configfs.service",
    "modprobe@dm_mod.service",
    "modprobe@efi_pstore.service",
    "systemd-pstore.service",
    "systemd-ask-password-console.path",
    "systemd-ask-password-wall.path",
    "systemd-tmpfiles-clean.timer",
    "systemd-remount-fs.service",
    "systemd-modules-load.service",
];

/// Owner of every entry.
pub const OWNER_UID: u32 = 0;
/// Group of every entry.
pub const OWNER_GID: u32 = 0;

/// One thing to create in the guest's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestEntry {
    /// Absolute path inside the guest.
    pub path: Cow<'static, str>,
    /// What to create there.
    pub kind: EntryKind,
}

impl GuestEntry {
    /// The guest path as a [`Path`].
    pub fn guest_path(&self) -> &Path {
        Path::new(self.path.as_ref())
    }
}

/// What a [`GuestEntry`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory, created with `mode` when missing.
    Dir {
        /// Permission bits, e.g. `0o755`.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Where its contents come from.
        source: FileSource,
        /// Permission bits, e.g. `0o644`.
        mode: u32,
    },
    /// A symbolic link.
    Symlink {
        /// The link's target, as the guest resolves it.
        target: Cow<'static, str>,
    },
}

/// Where a file's contents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// Embedded in this crate.
    Embedded(&'static str),
    /// A file on the host (the agent binary).
    Host(PathBuf),
}

impl FileSource {
    /// The contents, reading a host file when needed.
    pub fn read(&self) -> std::io::Result<Cow<'static, [u8]>> {
        match self {
            FileSource::Embedded(text) => Ok(Cow::Borrowed(text.as_bytes())),
            FileSource::Host(path) => Ok(Cow::Owned(fs_err::read(path)?)),
        }
    }
}

/// The complete set of guest files, in the order to apply them.
#[derive(Debug, Clone)]
pub struct GuestFiles {
    entries: Vec<GuestEntry>,
}

impl GuestFiles {
    /// The guest files, with the agent binary taken from `agent_binary` on
    /// the host (a statically linked `banger-vsock-agent`).
    pub fn new(agent_binary: impl Into<PathBuf>) -> Self {
        let mut entries = Vec::new();
        let dir = |path: &'static str| GuestEntry {
            path: Cow::Borrowed(path),
            kind: EntryKind::Dir { mode: 0o755 },
        };
        let file = |path: &'static str, source: FileSource, mode: u32| GuestEntry {
            path: Cow::Borrowed(path),
            kind: EntryKind::File { source, mode },
        };
        let link = |path: String, target: &'static str| GuestEntry {
            path: Cow::Owned(path),
            kind: EntryKind::Symlink {
                target: Cow::Borrowed(target),
            },
        };

        for path in [
            "/usr",
            "/usr/local",
            "/usr/local/bin",
            "/usr/local/libexec",
            "/etc",
            "/etc/ssh",
            "/etc/ssh/sshd_config.d",
            "/etc/systemd",
            "/etc/systemd/system",
            "/etc/systemd/system/sysinit.target.wants",
            "/etc/systemd/system/multi-user.target.wants",
            "/etc/systemd/system/ssh.service.d",
        ] {
            entries.push(dir(path));
        }

        entries.push(file(
            FIRST_BOOT_PATH,
            FileSource::Embedded(FIRST_BOOT_SCRIPT),
            0o755,
        ));
        entries.push(file(
            AGENT_PATH,
            FileSource::Host(agent_binary.into()),
            0o755,
        ));
        entries.push(file(
            FIRST_BOOT_UNIT_PATH,
            FileSource::Embedded(FIRST_BOOT_UNIT),
            0o644,
        ));
        entries.push(file(
            AGENT_UNIT_PATH,
            FileSource::Embedded(AGENT_UNIT),
            0o644,
        ));
        entries.push(file(
            SSH_UNIT_DROP_IN_PATH,
            FileSource::Embedded(SSH_UNIT_DROP_IN),
            0o644,
        ));
        entries.push(file(
            SSHD_DROP_IN_PATH,
            FileSource::Embedded(SSHD_DROP_IN),
            0o644,
        ));

        entries.push(link(SESSION_PATH.to_owned(), AGENT_PATH));
        entries.push(link(
            "/etc/systemd/system/sysinit.target.wants/banger-first-boot.service".to_owned(),
            FIRST_BOOT_UNIT_PATH,
        ));
        entries.push(link(
            "/etc/systemd/system/multi-user.target.wants/banger-vsock-agent.service".to_owned(),
            AGENT_UNIT_PATH,
        ));
        for unit in MASKED_UNITS {
            entries.push(link(format!("/etc/systemd/system/{unit}"), "/dev/null"));
        }

        Self { entries }
    }

    /// The entries, parents before children.
    pub fn entries(&self) -> std::slice::Iter<'_, GuestEntry> {
        self.entries.iter()
    }

    /// Writes every entry into the root filesystem directory `rootfs`.
    pub fn install_into_dir(&self, rootfs: &Path) -> Result<(), crate::InstallGuestFilesError> {
        crate::install::install_entries(rootfs, self.entries())
    }
}

impl<'a> IntoIterator for &'a GuestFiles {
    type Item = &'a GuestEntry;
    type IntoIter = std::slice::Iter<'a, GuestEntry>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshd_drop_in_is_exactly_the_hardened_five_lines() {
        assert_eq!(
            SSHD_DROP_IN,
            "PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             AuthorizedKeysFile /root/.ssh/authorized_keys\n"
        );
        assert!(!SSHD_DROP_IN.to_lowercase().contains("strictmodes"));
    }

    #[test]
    fn units_point_at_the_installed_paths() {
        assert!(FIRST_BOOT_UNIT.contains(&format!("ExecStart={FIRST_BOOT_PATH} --oneshot\n")));
        assert!(AGENT_UNIT.contains(&format!("ExecStart={AGENT_PATH} --listen vsock:1024\n")));
        assert!(FIRST_BOOT_UNIT.contains("Before=ssh.service sshd.service"));
    }

    #[test]
    fn parents_come_before_children_and_paths_are_unique() {
        let files = GuestFiles::new("/nonexistent/agent");
        let paths: Vec<&str> = files.entries().map(|e| e.path.as_ref()).collect();
        for (i, path) in paths.iter().enumerate() {
            assert!(path.starts_with('/'), "{path} is not absolute");
            assert_eq!(
                paths.iter().filter(|p| *p == path).count(),
                1,
                "{path} twice"
            );
            let parent = Path::new(path)
                .parent()
                .expect("absolute path has a parent");
            if parent != Path::new("/") {
                let parent_index = paths
                    .iter()
                    .position(|p| Path::new(p) == parent)
                    .unwrap_or_else(|| panic!("parent of {path} is not listed"));
                assert!(parent_index < i, "{path} comes before its parent");
            }
        }
    }

    #[test]
    fn agent_binary_comes_from_the_host_path() {
        let files = GuestFiles::new("/opt/agent-build/banger-vsock-agent");
        let agent = files
            .entries()
            .find(|e| e.path == AGENT_PATH)
            .expect("agent entry");
        assert_eq!(
            agent.kind,
            EntryKind::File {
                source: FileSource::Host("/opt/agent-build/banger-vsock-agent".into()),
                mode: 0o755
            }
        );
    }
}
