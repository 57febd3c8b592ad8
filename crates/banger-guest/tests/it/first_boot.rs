//! `banger-first-boot`, as embedded in the crate, run by a POSIX shell
//! against fake root directories (BANGER_FIRST_BOOT_ROOT) — dry runs for the
//! package-manager dispatch and PID 1 paths, a real run for the oneshot work.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use banger_guest::files::FIRST_BOOT_SCRIPT;

use crate::util::{have, output};

/// A fake guest root plus the script written next to it.
struct FakeRoot {
    dir: tempfile::TempDir,
    script: PathBuf,
}

impl FakeRoot {
    fn new() -> FakeRoot {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("banger-first-boot");
        fs_err::write(&script, FIRST_BOOT_SCRIPT).expect("write script");
        fs_err::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("chmod script");
        fs_err::create_dir_all(dir.path().join("root/etc")).expect("etc");
        FakeRoot { dir, script }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn write(&self, guest_path: &str, contents: &str) {
        let path = self.root().join(guest_path.trim_start_matches('/'));
        fs_err::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs_err::write(path, contents).expect("write");
    }

    fn executable(&self, guest_path: &str) {
        self.write(guest_path, "#!/bin/sh\nexit 0\n");
        let path = self.root().join(guest_path.trim_start_matches('/'));
        fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn read(&self, guest_path: &str) -> String {
        fs_err::read_to_string(self.root().join(guest_path.trim_start_matches('/'))).expect("read")
    }

    fn mode(&self, guest_path: &str) -> u32 {
        fs_err::metadata(self.root().join(guest_path.trim_start_matches('/')))
            .expect("metadata")
            .permissions()
            .mode()
            & 0o7777
    }

    /// Runs the script with `args`; `dry_run` prints commands instead of running them.
    fn run(&self, dry_run: bool, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let mut cmd = Command::new(shell());
        cmd.arg(&self.script)
            .args(args)
            .env_clear()
            .env("BANGER_FIRST_BOOT_ROOT", self.root())
            .env("BANGER_FIRST_BOOT_DRY_RUN", if dry_run { "1" } else { "0" })
            .envs(env.iter().copied());
        output(&mut cmd)
    }

    fn dry_run(&self, args: &[&str]) -> (i32, String, String) {
        self.run(true, args, &[])
    }
}

/// dash where available: the strictest POSIX shell at hand.
fn shell() -> &'static str {
    if Path::new("/bin/dash").exists() {
        "/bin/dash"
    } else {
        "/bin/sh"
    }
}

/// The `would run:` / `would start:` / `would exec:` lines of a dry run.
fn actions(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| l.starts_with("would ")).collect()
}

#[test]
fn script_is_shellcheck_clean() {
    if !have("shellcheck", "script_is_shellcheck_clean") {
        return;
    }
    let root = FakeRoot::new();
    let (code, stdout, stderr) = output(
        Command::new("shellcheck")
            .args(["--shell=sh", "--severity=style"])
            .arg(&root.script),
    );
    assert_eq!(code, 0, "shellcheck findings:\n{stdout}{stderr}");
}

#[test]
fn script_parses_in_every_posix_shell_at_hand() {
    let root = FakeRoot::new();
    for sh in ["/bin/sh", "/bin/dash", "/bin/bash", "/bin/busybox"] {
        if !Path::new(sh).exists() {
            continue;
        }
        let mut cmd = Command::new(sh);
        if sh.ends_with("busybox") {
            cmd.arg("sh");
        } else if sh.ends_with("bash") {
            cmd.arg("--posix");
        }
        let (code, _, stderr) = output(cmd.arg("-n").arg(&root.script));
        assert_eq!(code, 0, "{sh} -n: {stderr}");
    }
}

const APT: [&str; 2] = [
    "would run: env DEBIAN_FRONTEND=noninteractive apt-get update",
    "would run: env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd-sysv openssh-server",
];
const APK: &str = "would run: apk add --no-cache openrc openssh";
const DNF: &str =
    "would run: dnf install -y --setopt=install_weak_deps=False systemd openssh-server";
const PACMAN: &str = "would run: pacman -Sy --noconfirm --needed systemd openssh";
const ZYPPER: &str =
    "would run: zypper --non-interactive install --no-recommends systemd openssh-server";

fn install_actions(os_release: &str) -> (i32, Vec<String>, String) {
    let root = FakeRoot::new();
    root.write("/etc/os-release", os_release);
    let (code, stdout, stderr) = root.dry_run(&["--install"]);
    let actions = actions(&stdout).into_iter().map(str::to_owned).collect();
    (code, actions, stdout + &stderr)
}

#[test]
fn dispatch_debian_and_ubuntu_use_apt() {
    for os_release in [
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n",
        "NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"24.04\"\n",
    ] {
        let (code, actions, out) = install_actions(os_release);
        assert_eq!(code, 0, "{out}");
        assert_eq!(actions, APT, "{out}");
    }
}

#[test]
fn dispatch_alpine_uses_apk() {
    let (code, actions, out) =
        install_actions("NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.3\n");
    assert_eq!(code, 0, "{out}");
    assert_eq!(actions, [APK], "{out}");
}

#[test]
fn dispatch_fedora_and_rhel_use_dnf() {
    for os_release in [
        "NAME=\"Fedora Linux\"\nID=fedora\nVERSION_ID=40\n",
        "NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n",
    ] {
        let (code, actions, out) = install_actions(os_release);
        assert_eq!(code, 0, "{out}");
        assert_eq!(actions, [DNF], "{out}");
    }
}

#[test]
fn dispatch_arch_uses_pacman() {
    let (code, actions, out) = install_actions("NAME=\"Arch Linux\"\nID=arch\n");
    assert_eq!(code, 0, "{out}");
    assert_eq!(actions, [PACMAN], "{out}");
}

#[test]
fn dispatch_opensuse_uses_zypper() {
    let (code, actions, out) = install_actions(
        "NAME=\"openSUSE Tumbleweed\"\nID=\"opensuse-tumbleweed\"\nID_LIKE=\"opensuse suse\"\n",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(actions, [ZYPPER], "{out}");
}

#[test]
fn dispatch_falls_back_to_id_like_in_order() {
    let (code, actions, out) =
        install_actions("NAME=\"elementary OS\"\nID=elementary\nID_LIKE=\"ubuntu debian\"\n");
    assert_eq!(code, 0, "{out}");
    assert_eq!(actions, APT, "{out}");

    let (code, actions, out) =
        install_actions("ID='somethingnew'\nID_LIKE='notadistro arch fedora'\n");
    assert_eq!(code, 0, "{out}");
    assert_eq!(actions, [PACMAN], "first known ID_LIKE entry wins: {out}");
}

#[test]
fn dispatch_reads_usr_lib_os_release_when_etc_has_none() {
    let root = FakeRoot::new();
    root.write("/usr/lib/os-release", "ID=alpine\n");
    let (code, stdout, stderr) = root.dry_run(&["--install"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(actions(&stdout), [APK]);
}

#[test]
fn dispatch_unknown_distro_fails_with_a_clear_message() {
    let (code, actions, out) = install_actions("NAME=\"Plan 9\"\nID=plan9\nID_LIKE=bell-labs\n");
    assert_eq!(code, 1, "{out}");
    assert!(actions.is_empty(), "nothing may run: {actions:?}");
    assert!(
        out.contains("unsupported distribution (ID=plan9 ID_LIKE=bell-labs)"),
        "{out}"
    );
    assert!(
        out.contains("Install systemd and openssh-server in the image"),
        "{out}"
    );

    // No os-release at all is unknown too.
    let root = FakeRoot::new();
    let (code, stdout, _) = root.dry_run(&["--install"]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("unsupported distribution (ID= ID_LIKE=)"),
        "{stdout}"
    );
}

#[test]
fn pid1_with_systemd_mounts_and_execs_it_with_the_kernel_arguments() {
    let root = FakeRoot::new();
    root.write("/etc/os-release", "ID=debian\n");
    root.executable("/lib/systemd/systemd");
    let (code, stdout, stderr) = root.dry_run(&["--init", "single"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        actions(&stdout),
        [
            "would run: mount -t proc -o nosuid,nodev,noexec proc /proc",
            "would run: mount -t sysfs -o nosuid,nodev,noexec sysfs /sys",
            "would run: mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev",
            "would run: mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run",
            "would exec: /lib/systemd/systemd single",
        ]
    );
}

/// The drive labelled banger-modules (whichever vdX it is) is mounted
/// read-only at /lib/modules/<release> before systemd starts; other drives
/// are left alone, and without one nothing happens.
#[test]
fn pid1_mounts_the_kernel_modules_drive_before_systemd() {
    let root = FakeRoot::new();
    root.write("/etc/os-release", "ID=debian\n");
    root.executable("/lib/systemd/systemd");
    let superblock_with = |label: &str| {
        let mut bytes = vec![0u8; 2048];
        bytes[1144..1144 + label.len()].copy_from_slice(label.as_bytes());
        bytes
    };
    let dev = root.root().join("dev");
    fs_err::create_dir_all(&dev).unwrap();
    fs_err::write(dev.join("vda"), superblock_with("rootfs")).unwrap();
    fs_err::write(dev.join("vdb"), superblock_with("banger-work")).unwrap();
    fs_err::write(dev.join("vdc"), superblock_with("banger-modules")).unwrap();
    let release = String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned();
    let (code, stdout, stderr) = root.dry_run(&["--init"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let actions = actions(&stdout);
    let mount = format!(
        "would run: mount -t ext4 -o ro,noload /dev/vdc {}/lib/modules/{release}",
        root.root().display()
    );
    let at = actions
        .iter()
        .position(|action| *action == mount)
        .unwrap_or_else(|| panic!("no {mount:?} in {actions:?}"));
    assert!(
        actions[at + 1..]
            .iter()
            .any(|a| a.starts_with("would exec: "))
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| a.contains("/lib/modules"))
            .count(),
        2,
        "mkdir and mount only: {actions:?}"
    );

    fs_err::remove_file(dev.join("vdc")).unwrap();
    let (_, stdout, _) = root.dry_run(&["--init"]);
    assert!(!stdout.contains("/lib/modules"), "{stdout}");
}

#[test]
fn pid1_skips_filesystems_that_are_already_mounted() {
    let root = FakeRoot::new();
    root.executable("/usr/lib/systemd/systemd");
    root.write(
        "/proc/self/mountinfo",
        "22 1 0:21 / /proc rw - proc proc rw\n23 1 0:5 / /dev rw - devtmpfs udev rw\n",
    );
    let (_, stdout, _) = root.dry_run(&["--init"]);
    assert_eq!(
        actions(&stdout),
        [
            "would run: mount -t sysfs -o nosuid,nodev,noexec sysfs /sys",
            "would run: mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run",
            "would exec: /usr/lib/systemd/systemd",
        ]
    );
}

#[test]
fn pid1_without_systemd_installs_it_then_boots_what_it_has() {
    let root = FakeRoot::new();
    root.write("/etc/os-release", "ID=alpine\n");
    root.write(
        "/proc/net/pnp",
        "#PROTO: MANUAL\nnameserver 9.9.9.9\nnameserver 0.0.0.0\n",
    );
    root.executable("/usr/sbin/sshd");
    root.executable("/usr/local/bin/banger-vsock-agent");
    root.executable("/sbin/init");
    root.write("/etc/ssh/ssh_host_ed25519_key", "key");
    let (code, stdout, stderr) = root.dry_run(&["--init"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let actions = actions(&stdout);
    let after_mounts: Vec<&str> = actions
        .iter()
        .copied()
        .skip_while(|a| a.starts_with("would run: mount -t"))
        .collect();
    let root_dir = root.root().display().to_string();
    assert_eq!(
        after_mounts,
        [
            "would run: mount -o remount,rw /".to_owned(),
            format!("would run: {}", &APK["would run: ".len()..]),
            format!("would run: mkdir -p {root_dir}/root/.ssh"),
            format!("would run: chown 0:0 {root_dir}/root {root_dir}/root/.ssh"),
            format!("would run: chmod 0755 {root_dir}/root"),
            format!("would run: chmod 0700 {root_dir}/root/.ssh"),
            format!("would run: mkdir -p {root_dir}/run/sshd"),
            format!("would run: chmod 0755 {root_dir}/run/sshd"),
            "would start: /usr/sbin/sshd -D -e".to_owned(),
            "would start: /usr/local/bin/banger-vsock-agent --listen vsock:1024".to_owned(),
            "would exec: /sbin/init".to_owned(),
        ]
    );
    assert_eq!(root.read("/etc/resolv.conf"), "nameserver 9.9.9.9\n");
}

#[test]
fn pid1_on_an_unknown_distro_says_so_on_the_console_and_keeps_going() {
    let root = FakeRoot::new();
    root.write("/etc/os-release", "ID=plan9\n");
    let (code, stdout, stderr) = root.dry_run(&["--init"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("banger-first-boot: unsupported distribution (ID=plan9"),
        "{stdout}"
    );
    assert!(stdout.contains("continuing without systemd"), "{stdout}");
    assert!(stdout.contains("staying as a minimal PID 1"), "{stdout}");
}

#[test]
fn container_mode_starts_sshd_and_the_agent_on_the_sim_vsock_socket() {
    let root = FakeRoot::new();
    root.executable("/usr/sbin/sshd");
    root.executable("/usr/local/bin/banger-vsock-agent");
    root.write("/etc/ssh/ssh_host_ed25519_key", "key");
    root.write("/proc/sys/kernel/hostname", "calm-heron\n");
    let (code, stdout, stderr) = root.run(true, &["--container"], &[("container", "banger-simvm")]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let actions = actions(&stdout);
    assert!(
        !actions.iter().any(|a| a.contains("mount")),
        "container mode mounts nothing: {actions:?}"
    );
    assert!(
        actions.contains(&"would start: /usr/sbin/sshd -D -e"),
        "{actions:?}"
    );
    assert_eq!(
        actions.last(),
        Some(
            &"would start: /usr/local/bin/banger-vsock-agent --listen unix:/run/banger/vsock/1024.sock"
        )
    );
    assert!(stdout.contains("container mode ready"), "{stdout}");
    assert!(!stdout.contains("warning"), "{stdout}");
    // The hostname banger-simvm gave the namespace lands in /etc.
    assert_eq!(root.read("/etc/hostname"), "calm-heron\n");
}

#[test]
fn container_mode_without_sshd_or_agent_says_what_is_missing() {
    let root = FakeRoot::new();
    root.write("/etc/ssh/ssh_host_ed25519_key", "key");
    let (code, stdout, _) = root.run(true, &["--container"], &[("container", "banger-simvm")]);
    assert_eq!(code, 0);
    assert!(stdout.contains("sshd not found"), "{stdout}");
    assert!(
        stdout.contains("/usr/local/bin/banger-vsock-agent not found"),
        "{stdout}"
    );
}

#[test]
fn oneshot_prepares_root_ssh_hostname_and_resolv_conf_for_real() {
    if !have(
        "ssh-keygen",
        "oneshot_prepares_root_ssh_hostname_and_resolv_conf_for_real",
    ) {
        return;
    }
    let root = FakeRoot::new();
    root.write(
        "/proc/cmdline",
        "console=ttyS0 reboot=k root=/dev/vda rw ip=172.30.0.5::172.30.0.1:255.255.255.0:happy-otter:eth0:off:1.1.1.1 init=/usr/local/libexec/banger-first-boot\n",
    );
    root.write("/proc/net/pnp", "#PROTO: MANUAL\nnameserver 1.1.1.1\n");
    root.write("/proc/sys/kernel/hostname", "(none)\n");
    root.write("/etc/hostname", "buildhost\n");
    root.write("/etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tbuildhost\n");
    root.write(
        "/etc/ssh/sshd_config",
        "Port 22\nSubsystem sftp /usr/lib/openssh/sftp-server\n",
    );
    root.write("/root/.ssh/authorized_keys", "ssh-ed25519 AAAA test\n");
    for (path, mode) in [
        ("root", 0o777),
        ("root/.ssh", 0o775),
        ("root/.ssh/authorized_keys", 0o666),
    ] {
        fs_err::set_permissions(
            root.root().join(path),
            std::fs::Permissions::from_mode(mode),
        )
        .expect("chmod");
    }

    for round in 0..2 {
        let (code, stdout, stderr) = root.run(false, &["--oneshot"], &[]);
        assert_eq!(code, 0, "round {round}: {stdout}{stderr}");
        assert!(stdout.contains("no work disk at /dev/vdb"), "{stdout}");

        assert_eq!(root.mode("/root"), 0o755);
        assert_eq!(root.mode("/root/.ssh"), 0o700);
        assert_eq!(root.mode("/root/.ssh/authorized_keys"), 0o600);
        for key in ["rsa", "ecdsa", "ed25519"] {
            let path = format!("/etc/ssh/ssh_host_{key}_key");
            assert!(!root.read(&path).is_empty(), "{path} generated");
        }
        assert_eq!(
            root.read("/etc/ssh/sshd_config"),
            "Include /etc/ssh/sshd_config.d/*.conf\nPort 22\nSubsystem sftp /usr/lib/openssh/sftp-server\n",
            "round {round}: the Include is added once"
        );
        assert_eq!(root.read("/etc/hostname"), "happy-otter\n");
        assert_eq!(
            root.read("/etc/hosts"),
            "127.0.0.1\tlocalhost\n127.0.1.1\thappy-otter\n",
            "round {round}"
        );
        assert_eq!(root.read("/proc/sys/kernel/hostname"), "happy-otter");
        assert_eq!(root.read("/etc/resolv.conf"), "nameserver 1.1.1.1\n");
    }
}

#[test]
fn oneshot_keeps_an_existing_resolv_conf_and_host_keys() {
    let root = FakeRoot::new();
    root.write("/proc/net/pnp", "nameserver 1.1.1.1\n");
    root.write("/etc/resolv.conf", "nameserver 10.0.0.53\n");
    root.write("/etc/ssh/ssh_host_ed25519_key", "existing");
    let (code, stdout, stderr) = root.dry_run(&["--oneshot"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stdout.contains("ssh-keygen"), "{stdout}");
    assert_eq!(root.read("/etc/resolv.conf"), "nameserver 10.0.0.53\n");
}

#[test]
fn oneshot_mounts_the_work_disk_when_it_is_there() {
    // The fake /dev/vdb must be a block device: bind a real one's node.
    let root = FakeRoot::new();
    let dev = root.root().join("dev");
    fs_err::create_dir_all(&dev).expect("dev");
    let Some(block) = ["/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/loop0"]
        .into_iter()
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_block_device()
            })
        })
    else {
        banger_testkit::skip(
            "oneshot_mounts_the_work_disk_when_it_is_there",
            "no block device to point at",
            banger_testkit::Prerequisite::NotInCi,
        );
        return;
    };
    fs_err::os::unix::fs::symlink(block, dev.join("vdb")).expect("fake vdb");
    root.write("/etc/ssh/ssh_host_ed25519_key", "key");
    let (code, stdout, stderr) = root.dry_run(&["--oneshot"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let root_dir = root.root().display().to_string();
    let actions = actions(&stdout);
    assert_eq!(
        actions[..2],
        [
            format!("would run: mkdir -p {root_dir}/root").as_str(),
            format!("would run: mount /dev/vdb {root_dir}/root").as_str(),
        ],
        "the work disk is mounted before /root is normalised: {actions:?}"
    );

    // Already mounted: left alone.
    root.write(
        "/proc/self/mountinfo",
        "30 1 254:16 / /root rw,relatime - ext4 /dev/vdb rw\n",
    );
    let (_, stdout, _) = root.dry_run(&["--oneshot"]);
    assert!(!stdout.contains("mount /dev/vdb"), "{stdout}");
}

#[test]
fn usage_errors() {
    let root = FakeRoot::new();
    let (code, _, stderr) = root.dry_run(&[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("usage: banger-first-boot"), "{stderr}");
    let (code, _, stderr) = root.run(false, &["--init"], &[]);
    assert_eq!(code, 2, "--init outside PID 1 needs a dry run");
    assert!(stderr.contains("only for dry runs"), "{stderr}");
}

/// The route to the ip= subnet gets quickack (ssh's handshake would wait
/// on delayed ACKs); the subnet and prefix come from the client and mask.
#[test]
fn oneshot_sets_quickack_on_the_route_to_the_ip_subnet() {
    for (ip, route) in [
        (
            "172.30.0.5::172.30.0.1:255.255.255.0:happy-otter:eth0:off:1.1.1.1",
            "172.30.0.0/24 dev eth0 proto kernel scope link src 172.30.0.5",
        ),
        (
            "10.1.18.3::10.1.16.1:255.255.240.0:x:ens3:off",
            "10.1.16.0/20 dev ens3 proto kernel scope link src 10.1.18.3",
        ),
    ] {
        let root = FakeRoot::new();
        root.write("/proc/cmdline", &format!("console=ttyS0 ip={ip} rw\n"));
        let (code, stdout, stderr) = root.dry_run(&["--oneshot"]);
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(
            actions(&stdout)
                .contains(&format!("would run: ip route change {route} quickack 1").as_str()),
            "{stdout}"
        );
    }
    // Without an ip= configuration nothing is changed.
    let root = FakeRoot::new();
    root.write("/proc/cmdline", "console=ttyS0 ip=dhcp rw\n");
    let (_, stdout, _) = root.dry_run(&["--oneshot"]);
    assert!(!stdout.contains("ip route"), "{stdout}");
}
