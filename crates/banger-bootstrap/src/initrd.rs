//! The initrd a distribution kernel boots with under Firecracker: a gzip'd
//! `newc` cpio holding a static busybox, [`INIT_SCRIPT`] as `/init`, and the
//! kernel modules the guest needs (see [`crate::modules`]) with their load
//! order.

use std::collections::BTreeMap;
use std::io::Write;

use crate::cpio::{Archive, CpioPathError};
use crate::modules::LoadPlan;

/// `/init`: loads modules, mounts the root, configures `ip=`, switches root.
pub const INIT_SCRIPT: &str = include_str!("initrd-init.sh");
/// Where the load order is written inside the initrd.
pub const MODULE_LIST: &str = "/etc/banger-initrd/modules";
/// Where the kernel release is written inside the initrd.
pub const RELEASE_FILE: &str = "/etc/banger-initrd/release";
/// The busybox applets `/init` uses (plus a few for reading a failed boot).
pub const APPLETS: &[&str] = &[
    "sh",
    "cat",
    "dmesg",
    "findfs",
    "insmod",
    "ip",
    "ls",
    "mkdir",
    "mount",
    "rm",
    "sleep",
    "switch_root",
    "umount",
];

/// What goes into an initrd.
#[derive(Debug)]
pub struct InitrdInput<'a> {
    /// The kernel release (`6.1.0-50-cloud-amd64`).
    pub release: &'a str,
    /// A statically linked busybox.
    pub busybox: &'a [u8],
    pub plan: &'a LoadPlan,
    /// Uncompressed `.ko` contents by path under `lib/modules/<release>/`;
    /// every path of `plan.load_order` must be here.
    pub modules: &'a BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildInitrdError {
    #[error("module {0} is in the load order but was not extracted")]
    MissingModule(String),
    #[error("bad path in the initrd")]
    Path(#[from] CpioPathError),
    #[error("compressing the initrd")]
    Compress(#[source] std::io::Error),
}

/// The cpio archive (uncompressed), for inspection and tests.
pub fn archive(input: &InitrdInput<'_>) -> Result<Archive, BuildInitrdError> {
    let mut archive = Archive::new();
    for dir in ["/dev", "/proc", "/sys", "/run", "/tmp", "/newroot", "/sbin"] {
        archive.dir(dir, 0o755)?;
    }
    // The kernel opens /dev/console for /init before anything is mounted.
    archive.char_device("/dev/console", 5, 1, 0o600)?;
    archive.char_device("/dev/null", 1, 3, 0o666)?;
    archive.file("/init", INIT_SCRIPT.as_bytes().to_vec(), 0o755)?;
    archive.file("/bin/busybox", input.busybox.to_vec(), 0o755)?;
    for applet in APPLETS {
        archive.symlink(&format!("/bin/{applet}"), "busybox")?;
    }
    let base = format!("/lib/modules/{}", input.release);
    let mut list = String::new();
    for path in &input.plan.load_order {
        let data = input
            .modules
            .get(path)
            .ok_or_else(|| BuildInitrdError::MissingModule(path.clone()))?;
        archive.file(&format!("{base}/{path}"), data.clone(), 0o644)?;
        list.push_str(path);
        list.push('\n');
    }
    archive.file(MODULE_LIST, list.into_bytes(), 0o644)?;
    archive.file(
        RELEASE_FILE,
        format!("{}\n", input.release).into_bytes(),
        0o644,
    )?;
    Ok(archive)
}

/// The initrd's bytes: the archive, gzip-compressed.
pub fn build(input: &InitrdInput<'_>) -> Result<Vec<u8>, BuildInitrdError> {
    let bytes = archive(input)?.to_bytes();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(&bytes)
        .map_err(BuildInitrdError::Compress)?;
    encoder.finish().map_err(BuildInitrdError::Compress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::Node;

    #[test]
    fn holds_init_busybox_and_the_modules_in_order() {
        let plan = LoadPlan {
            load_order: vec!["kernel/a.ko".into(), "kernel/b.ko".into()],
            builtin: Default::default(),
        };
        let modules = BTreeMap::from([
            ("kernel/a.ko".to_owned(), b"A".to_vec()),
            ("kernel/b.ko".to_owned(), b"B".to_vec()),
        ]);
        let input = InitrdInput {
            release: "6.1.0-test",
            busybox: b"\x7fELF busybox",
            plan: &plan,
            modules: &modules,
        };
        let gz = build(&input).unwrap();
        let cpio = crate::decompress::Compression::Gzip
            .decompress(&gz, 1 << 20)
            .unwrap();
        let parsed = Archive::parse(&cpio).unwrap();
        let entries = parsed.entries();
        assert_eq!(
            entries["init"].node,
            Node::File(INIT_SCRIPT.as_bytes().to_vec())
        );
        assert_eq!(entries["init"].mode, 0o755);
        assert_eq!(entries["bin/sh"].node, Node::Symlink("busybox".into()));
        assert_eq!(
            entries["dev/console"].node,
            Node::CharDevice { major: 5, minor: 1 }
        );
        assert_eq!(
            entries["lib/modules/6.1.0-test/kernel/b.ko"].node,
            Node::File(b"B".to_vec())
        );
        assert_eq!(
            entries["etc/banger-initrd/modules"].node,
            Node::File(b"kernel/a.ko\nkernel/b.ko\n".to_vec())
        );
    }

    #[test]
    fn a_module_missing_from_the_extraction_is_an_error() {
        let plan = LoadPlan {
            load_order: vec!["kernel/a.ko".into()],
            builtin: Default::default(),
        };
        let input = InitrdInput {
            release: "r",
            busybox: b"",
            plan: &plan,
            modules: &BTreeMap::new(),
        };
        assert!(matches!(
            build(&input),
            Err(BuildInitrdError::MissingModule(_))
        ));
    }

    #[test]
    fn the_init_script_passes_shellcheck() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("init");
        std::fs::write(&script, INIT_SCRIPT).unwrap();
        match crate::exec::tests_support::shellcheck(&script) {
            None => banger_testkit::skip(
                "the_init_script_passes_shellcheck",
                "shellcheck is not installed (apt-get install shellcheck)",
                banger_testkit::Prerequisite::ProvidedByCi,
            ),
            Some(output) => assert!(
                output.status.success(),
                "shellcheck:\n{}",
                String::from_utf8_lossy(&output.stdout)
            ),
        }
    }

    /// The init script's dry run against a fake root: the commands it would
    /// run for banger's command line, in order.
    #[test]
    fn the_init_script_dry_run() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("proc")).unwrap();
        std::fs::create_dir_all(root.join("etc/banger-initrd")).unwrap();
        std::fs::create_dir_all(root.join("newroot/etc")).unwrap();
        std::fs::create_dir_all(root.join("newroot/usr/local/libexec")).unwrap();
        std::fs::create_dir_all(root.join("newroot/dev")).unwrap();
        let first_boot = root.join("newroot/usr/local/libexec/banger-first-boot");
        std::fs::write(&first_boot, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&first_boot, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            root.join("proc/cmdline"),
            "console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw ip=172.30.0.5::172.30.0.1:255.255.255.0:web:eth0:off:1.1.1.1:8.8.8.8\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/banger-initrd/release"), "6.1.0-test\n").unwrap();
        std::fs::write(
            root.join("etc/banger-initrd/modules"),
            "kernel/virtio.ko\nkernel/virtio_blk.ko\n",
        )
        .unwrap();
        let script = root.join("init");
        std::fs::write(&script, INIT_SCRIPT).unwrap();
        let output = crate::exec::tests_support::dry_run_init(&script, root);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{output:?}");
        let expected = [
            "would run: insmod /lib/modules/6.1.0-test/kernel/virtio.ko",
            "would run: insmod /lib/modules/6.1.0-test/kernel/virtio_blk.ko",
            "would run: mount -t ext4 -o rw /dev/vda /newroot",
            "would run: ip addr add 172.30.0.5/24 dev eth0",
            "would run: ip route add default via 172.30.0.1 dev eth0",
            "would set hostname: web",
            "would run: mount -o move /dev /newroot/dev",
            "would run: umount -l /proc",
            "would exec: switch_root /newroot /usr/local/libexec/banger-first-boot",
        ];
        let mut rest = stdout.as_ref();
        for line in expected {
            let at = rest
                .find(line)
                .unwrap_or_else(|| panic!("missing or out of order: {line}\n{stdout}"));
            rest = &rest[at + line.len()..];
        }
        assert_eq!(
            std::fs::read_to_string(root.join("newroot/etc/resolv.conf")).unwrap(),
            "nameserver 1.1.1.1\nnameserver 8.8.8.8\n"
        );

        // init= wins; a missing init is a clear failure.
        std::fs::write(
            root.join("proc/cmdline"),
            "root=/dev/vda ro init=/sbin/nothing-here\n",
        )
        .unwrap();
        let output = crate::exec::tests_support::dry_run_init(&script, root);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(!output.status.success());
        assert!(stdout.contains("mount -t ext4 -o ro /dev/vda"), "{stdout}");
        assert!(
            stdout.contains("init /sbin/nothing-here not found on /dev/vda"),
            "{stdout}"
        );
    }
}
