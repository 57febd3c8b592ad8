//! `install_into_dir` on temporary root filesystems.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use banger_guest::files::{AGENT_PATH, MASKED_UNITS, SSHD_DROP_IN, SSHD_DROP_IN_PATH};
use banger_guest::{EntryKind, GuestFiles, InstallGuestFilesError, install_into_dir};

use crate::util::{have, output};

const AGENT_BYTES: &[u8] = b"\x7fELF pretend agent";

struct Rootfs {
    dir: tempfile::TempDir,
    agent: PathBuf,
}

impl Rootfs {
    fn new() -> Rootfs {
        let dir = tempfile::tempdir().expect("tempdir");
        fs_err::create_dir(dir.path().join("rootfs")).expect("rootfs");
        let agent = dir.path().join("banger-vsock-agent");
        fs_err::write(&agent, AGENT_BYTES).expect("agent");
        Rootfs { dir, agent }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn host(&self, guest: &str) -> PathBuf {
        self.path().join(guest.trim_start_matches('/'))
    }

    fn install(&self) -> Result<(), InstallGuestFilesError> {
        install_into_dir(&self.path(), &self.agent)
    }
}

/// Checks every entry of the list against what is on disk under `rootfs`.
fn assert_installed(rootfs: &Path, files: &GuestFiles) {
    let root_user = nix::unistd::geteuid().is_root();
    for entry in files {
        let host = rootfs.join(entry.path.trim_start_matches('/'));
        let meta = fs_err::symlink_metadata(&host).expect("entry exists");
        match &entry.kind {
            EntryKind::Dir { .. } => assert!(meta.is_dir(), "{} is a dir", entry.path),
            EntryKind::File { source, mode } => {
                assert!(meta.is_file(), "{} is a regular file", entry.path);
                assert_eq!(meta.permissions().mode() & 0o7777, *mode, "{}", entry.path);
                assert_eq!(
                    fs_err::read(&host).expect("read"),
                    source.read().expect("source").as_ref(),
                    "{} contents",
                    entry.path
                );
            }
            EntryKind::Symlink { target } => {
                assert!(meta.file_type().is_symlink(), "{} is a symlink", entry.path);
                assert_eq!(
                    fs_err::read_link(&host).expect("readlink"),
                    Path::new(target.as_ref()),
                    "{} target",
                    entry.path
                );
            }
        }
        if root_user {
            assert_eq!(
                (meta.uid(), meta.gid()),
                (0, 0),
                "{} owned by root",
                entry.path
            );
        }
    }
}

#[test]
fn installs_files_modes_symlinks_and_contents() {
    let rootfs = Rootfs::new();
    rootfs.install().expect("install");
    let files = GuestFiles::new(&rootfs.agent);
    assert_installed(&rootfs.path(), &files);

    // Spot checks of what matters to the guest.
    assert_eq!(
        fs_err::read(rootfs.host(AGENT_PATH)).expect("agent"),
        AGENT_BYTES
    );
    let first_boot = rootfs.host("/usr/local/libexec/banger-first-boot");
    assert_eq!(
        fs_err::metadata(&first_boot)
            .expect("script")
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
    assert_eq!(
        fs_err::read_to_string(rootfs.host(SSHD_DROP_IN_PATH)).expect("drop-in"),
        SSHD_DROP_IN
    );
    assert_eq!(
        fs_err::read_link(
            rootfs.host("/etc/systemd/system/multi-user.target.wants/banger-vsock-agent.service")
        )
        .expect("agent enabled"),
        Path::new("/etc/systemd/system/banger-vsock-agent.service")
    );
    assert_eq!(
        fs_err::read_link(
            rootfs.host("/etc/systemd/system/sysinit.target.wants/banger-first-boot.service")
        )
        .expect("first boot enabled"),
        Path::new("/etc/systemd/system/banger-first-boot.service")
    );
    for unit in MASKED_UNITS {
        assert_eq!(
            fs_err::read_link(rootfs.host(&format!("/etc/systemd/system/{unit}"))).expect("mask"),
            Path::new("/dev/null"),
            "{unit} masked"
        );
    }
}

#[test]
fn installing_twice_replaces_and_keeps_existing_directories() {
    let rootfs = Rootfs::new();
    // An image's own /etc with its own mode, a stale agent and a unit link
    // that is a regular file: replaced, never written through.
    fs_err::create_dir_all(rootfs.host("/etc")).expect("etc");
    fs_err::set_permissions(rootfs.host("/etc"), std::fs::Permissions::from_mode(0o750))
        .expect("chmod etc");
    fs_err::create_dir_all(rootfs.host("/usr/local/bin")).expect("bin");
    let outside = rootfs.dir.path().join("host-file");
    fs_err::write(&outside, "host data").expect("outside");
    fs_err::os::unix::fs::symlink(&outside, rootfs.host(AGENT_PATH)).expect("agent symlink");

    rootfs.install().expect("first install");
    rootfs.install().expect("second install");

    assert_installed(&rootfs.path(), &GuestFiles::new(&rootfs.agent));
    assert_eq!(
        fs_err::metadata(rootfs.host("/etc"))
            .expect("etc")
            .permissions()
            .mode()
            & 0o7777,
        0o750,
        "an existing directory keeps its mode"
    );
    assert_eq!(
        fs_err::read_to_string(&outside).expect("outside"),
        "host data",
        "a symlink at a file's path is replaced, not followed"
    );
}

#[test]
fn rootfs_symlinks_resolve_inside_the_rootfs() {
    let rootfs = Rootfs::new();
    let canary = rootfs.dir.path().join("outside");
    // /usr/local -> /opt/local (absolute), /etc/ssh -> ../../../../outside
    // (escapes the root when followed on the host).
    fs_err::create_dir_all(rootfs.host("/usr")).expect("usr");
    fs_err::create_dir_all(rootfs.host("/opt/local")).expect("opt/local");
    fs_err::os::unix::fs::symlink("/opt/local", rootfs.host("/usr/local")).expect("link");
    fs_err::create_dir_all(rootfs.host("/etc")).expect("etc");
    fs_err::os::unix::fs::symlink("../../../../outside", rootfs.host("/etc/ssh"))
        .expect("escaping link");

    rootfs.install().expect("install");

    assert_eq!(
        fs_err::read(rootfs.host("/opt/local/bin/banger-vsock-agent")).expect("agent"),
        AGENT_BYTES,
        "/usr/local/bin resolved through the absolute link inside the rootfs"
    );
    assert_eq!(
        fs_err::read_to_string(rootfs.host("/outside/sshd_config.d/99-banger.conf"))
            .expect("drop-in"),
        SSHD_DROP_IN,
        "`..` stops at the rootfs"
    );
    assert!(!canary.exists(), "nothing written outside the rootfs");
    assert!(
        !Path::new("/opt/local/bin/banger-vsock-agent").exists()
            || fs_err::read("/opt/local/bin/banger-vsock-agent").expect("host file") != AGENT_BYTES,
        "the host's /opt/local is untouched"
    );
}

#[test]
fn obstacles_are_errors_that_name_the_path() {
    let rootfs = Rootfs::new();
    fs_err::create_dir_all(rootfs.host("/etc/ssh/sshd_config.d/99-banger.conf")).expect("dir");
    let err = rootfs.install().expect_err("directory in the way");
    assert!(
        matches!(err, InstallGuestFilesError::DirectoryInTheWay { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("/etc/ssh/sshd_config.d/99-banger.conf"),
        "{err}"
    );

    let rootfs = Rootfs::new();
    fs_err::create_dir_all(rootfs.host("/usr")).expect("usr");
    fs_err::write(rootfs.host("/usr/local"), "not a dir").expect("file");
    let err = rootfs.install().expect_err("file in the way");
    assert!(
        matches!(&err, InstallGuestFilesError::NotADirectory { component, .. } if component == Path::new("/usr/local")),
        "{err:?}"
    );

    let rootfs = Rootfs::new();
    fs_err::create_dir_all(rootfs.host("/usr")).expect("usr");
    fs_err::os::unix::fs::symlink("/usr/local", rootfs.host("/usr/local")).expect("loop");
    let err = rootfs.install().expect_err("loop");
    assert!(
        matches!(err, InstallGuestFilesError::SymlinkLoop { .. }),
        "{err:?}"
    );

    let rootfs = Rootfs::new();
    let err = install_into_dir(&rootfs.path(), &rootfs.dir.path().join("no-agent"))
        .expect_err("missing agent");
    assert!(err.to_string().contains(AGENT_PATH), "{err}");
    let source = std::error::Error::source(&err).expect("cause").to_string();
    assert!(source.contains("no-agent"), "{source}");
}

#[test]
fn systemd_accepts_the_installed_units() {
    if !have("systemd-analyze", "systemd_accepts_the_installed_units") {
        return;
    }
    let host_units = Path::new("/usr/lib/systemd/system");
    if !host_units.join("sysinit.target").exists() {
        banger_testkit::skip(
            "systemd_accepts_the_installed_units",
            "no systemd units on this host (apt-get install systemd)",
            banger_testkit::Prerequisite::ProvidedByCi,
        );
        return;
    }
    let rootfs = Rootfs::new();
    rootfs.install().expect("install");
    // systemd-analyze --root needs the targets our units hang off.
    fs_err::create_dir_all(rootfs.host("/usr/lib/systemd")).expect("usr/lib/systemd");
    let (code, _, stderr) = output(
        Command::new("cp")
            .arg("-a")
            .arg(host_units)
            .arg(rootfs.host("/usr/lib/systemd/")),
    );
    assert_eq!(code, 0, "copying host units: {stderr}");
    let (code, stdout, stderr) = output(
        Command::new("systemd-analyze")
            .arg(format!("--root={}", rootfs.path().display()))
            .args([
                "verify",
                "banger-first-boot.service",
                "banger-vsock-agent.service",
            ]),
    );
    assert_eq!(code, 0, "systemd-analyze verify failed:\n{stdout}{stderr}");
    assert_eq!(stderr.trim(), "", "systemd-analyze warnings");
}
