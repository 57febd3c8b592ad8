//! Real boots: a Debian rootfs as ext4 images, started by hand through the
//! launcher, reached over SSH on a bridge and through the hybrid vsock
//! socket, then stopped three ways (Ctrl-Alt-Del, SIGTERM, SIGKILL). After
//! each, nothing may remain: processes, namespaces, mounts, loop devices,
//! veth.
//!
//! The rootfs is `BANGER_TEST_ROOTFS` or the fixture
//! `.cache/fixtures/debian-bookworm/rootfs` (`tests/fixtures/debian-rootfs.sh`).
//! It is only read: the root image is made with `mkfs.ext4 -d` and banger's
//! guest files (banger-guest's first-boot script, units, sshd drop-in and the
//! `banger-vsock-agent` built next to simvm) are written into the image with
//! debugfs. When the agent has not been built (`cargo build -p banger-agent`),
//! a stand-in first-boot script with a unix-socket echo server takes its
//! place, and the test says so.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use banger_firecracker::api::{
    BootSource, Drive, MacAddr, MachineConfiguration, NetworkInterface, Vsock,
};
use banger_firecracker::boot_args::{BootArgs, IpConfig};
use banger_firecracker::launch::{LaunchSpec, VmConfig, VmmExit, VmmProcess};
use banger_firecracker::vmm::{ProcessVmm, Vmm};
use banger_guest::agent::{AGENT_VSOCK_PORT, AgentClient};
use banger_guest::{EntryKind, FileSource, GuestEntry};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::support::{self, KillOnDrop};

const FIRST_BOOT: &str = banger_guest::files::FIRST_BOOT_PATH;

/// Starts sshd and a unix-socket echo server on vsock port 1024, then exits
/// (what the real script does with sshd and the agent).
const STAND_IN_FIRST_BOOT: &str = r#"#!/bin/sh
echo "first-boot: $* container=$container"
mkdir -p /run/sshd /run/banger/vsock
ssh-keygen -A >/dev/null 2>&1
/usr/sbin/sshd -E /run/sshd.log
nohup python3 -c '
import socket, threading
s = socket.socket(socket.AF_UNIX)
s.bind("/run/banger/vsock/1024.sock")
s.listen()
def echo(c):
    while True:
        d = c.recv(4096)
        if not d:
            break
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
' >/dev/null 2>&1 &
echo "first-boot: done"
"#;

/// Writes guest entries into an ext4 image with debugfs (no mount): the
/// image editor banger's image import needs, in test form.
fn inject<'a>(image: &Path, entries: impl IntoIterator<Item = &'a GuestEntry>, scratch: &Path) {
    fs_err::create_dir_all(scratch).unwrap();
    let mut commands = String::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let path = entry.path.as_ref();
        match &entry.kind {
            EntryKind::Dir { mode } => {
                commands.push_str(&format!(
                    "mkdir {path}\nsif {path} mode 0{:o}\n",
                    0o040000 | mode
                ));
            }
            EntryKind::File { source, mode } => {
                let local = scratch.join(format!("file{i}"));
                fs_err::write(&local, source.read().unwrap()).unwrap();
                commands.push_str(&format!(
                    "rm {path}\nwrite {} {path}\nsif {path} mode 0{:o}\n",
                    local.display(),
                    0o100000 | mode
                ));
            }
            EntryKind::Symlink { target } => {
                commands.push_str(&format!("rm {path}\nsymlink {path} {target}\n"));
            }
        }
        commands.push_str(&format!("sif {path} uid 0\nsif {path} gid 0\n"));
    }
    let file = scratch.join("debugfs.cmd");
    fs_err::write(&file, commands).unwrap();
    support::run(
        "debugfs",
        &["-w", "-f", file.to_str().unwrap(), image.to_str().unwrap()],
    );
}

const GUEST_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 1);
const HOSTNAME: &str = "simguest";

fn rootfs() -> Option<PathBuf> {
    let dir = std::env::var_os("BANGER_TEST_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../.cache/fixtures/debian-bookworm/rootfs")
        });
    dir.join("usr/sbin/sshd").exists().then_some(dir)
}

/// The agent binary built next to simvm, if any.
fn agent_binary() -> Option<PathBuf> {
    let agent = support::simvm_bin().parent()?.join("banger-vsock-agent");
    agent.exists().then_some(agent)
}

/// Whether the boot tests can run here; prints why not.
fn prerequisites(test: &str) -> Option<PathBuf> {
    if !support::is_root() {
        support::skip(
            test,
            "needs root (mounts, loop devices, namespaces)",
            support::Prerequisite::ProvidedByCi,
        );
        return None;
    }
    for tool in ["mkfs.ext4", "debugfs", "ssh", "ssh-keygen", "ip"] {
        if !support::have(tool) {
            support::skip(
                test,
                &format!("{tool} is not installed"),
                support::Prerequisite::ProvidedByCi,
            );
            return None;
        }
    }
    let Some(rootfs) = rootfs() else {
        support::skip(
            test,
            "no rootfs: build it with tests/fixtures/debian-rootfs.sh .cache/fixtures/debian-bookworm \
             or set BANGER_TEST_ROOTFS to a Debian tree with openssh-server, iproute2 and python3",
            support::Prerequisite::ProvidedByCi,
        );
        return None;
    };
    Some(rootfs)
}

/// How the guest's vsock listener is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// The real banger-vsock-agent: `GET /healthz`.
    Agent,
    /// The stand-in echo server.
    Echo,
}

/// The images and key for one boot.
struct Fixture {
    dir: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
    key: PathBuf,
    kernel: PathBuf,
    listener: Listener,
}

impl Fixture {
    fn build(rootfs: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);

        let root = path("root.ext4");
        support::mkfs_ext4(rootfs, &root, "2G");
        let listener = match agent_binary() {
            Some(agent) => {
                inject(
                    &root,
                    &banger_guest::GuestFiles::new(agent),
                    &path("inject"),
                );
                Listener::Agent
            }
            None => {
                eprintln!(
                    "note: banger-vsock-agent is not built next to banger-simvm; \
                     using a stand-in first-boot script with an echo listener"
                );
                let mut files = vec![GuestEntry {
                    path: FIRST_BOOT.into(),
                    kind: EntryKind::File {
                        source: FileSource::Embedded(STAND_IN_FIRST_BOOT),
                        mode: 0o755,
                    },
                }];
                files.insert(
                    0,
                    GuestEntry {
                        path: "/usr/local/libexec".into(),
                        kind: EntryKind::Dir { mode: 0o755 },
                    },
                );
                inject(&root, &files, &path("inject"));
                Listener::Echo
            }
        };

        let key = path("id_ed25519");
        support::run(
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()],
        );
        let work_src = path("work-src");
        support::run(
            "cp",
            &[
                "-a",
                rootfs.join("root").to_str().unwrap(),
                work_src.to_str().unwrap(),
            ],
        );
        let ssh = work_src.join(".ssh");
        fs_err::create_dir_all(&ssh).unwrap();
        fs_err::copy(key.with_extension("pub"), ssh.join("authorized_keys")).unwrap();
        support::run("chmod", &["700", ssh.to_str().unwrap()]);
        support::run(
            "chmod",
            &["600", ssh.join("authorized_keys").to_str().unwrap()],
        );
        let work = path("work.ext4");
        support::mkfs_ext4(&work_src, &work, "256M");

        let kernel = path("vmlinux");
        fs_err::write(&kernel, "simvm boots no kernel").unwrap();
        Self {
            dir,
            root,
            work,
            key,
            kernel,
            listener,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self, tap: &str) -> VmConfig {
        let ip = IpConfig::new(GUEST_IP, 24, GATEWAY, HOSTNAME)
            .unwrap()
            .with_dns([Ipv4Addr::new(192, 0, 2, 53)]);
        VmConfig {
            machine: MachineConfiguration::new(2, 1024),
            boot_source: BootSource {
                kernel_image_path: self.kernel.display().to_string(),
                initrd_path: None,
                boot_args: Some(BootArgs::new(ip).with_first_boot_init().to_string()),
            },
            drives: vec![
                Drive::virtio("rootfs", self.root.display().to_string(), true),
                Drive::virtio("work", self.work.display().to_string(), false),
            ],
            network_interfaces: vec![NetworkInterface::new(
                "eth0",
                tap,
                Some("02:fc:ac:1f:00:02".parse::<MacAddr>().unwrap()),
            )],
            vsock: Some(Vsock {
                vsock_id: None,
                guest_cid: 3,
                uds_path: self.path("vsock.sock").display().to_string(),
            }),
            logger: None,
            metrics: None,
        }
    }

    fn diagnostics(&self) -> String {
        let read = |name: &str| fs_err::read_to_string(self.path(name)).unwrap_or_default();
        format!(
            "--- console.log ---\n{}\n--- vmm.log ---\n{}\n--- ip link ---\n{}",
            read("console.log"),
            read("vmm.log"),
            Command::new("ip")
                .args(["-d", "-br", "link"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        )
    }
}

/// What a running guest consists of on the host.
#[derive(Debug)]
struct Trace {
    simvm: u32,
    namespaces: Vec<String>,
    veth: String,
    images: PathBuf,
}

impl Trace {
    fn capture(simvm: u32, images: &Path, id: &str) -> Self {
        let helpers = support::children_of(simvm);
        assert_eq!(helpers.len(), 1, "simvm has one guest helper: {helpers:?}");
        let inits = support::children_of(helpers[0]);
        assert_eq!(
            inits.len(),
            1,
            "the helper has one child, the guest's PID 1"
        );
        let namespaces = ["mnt", "pid", "net", "uts", "ipc"]
            .iter()
            .map(|kind| {
                fs_err::read_link(format!("/proc/{}/ns/{kind}", inits[0]))
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect::<Vec<_>>();
        let own_net = fs_err::read_link("/proc/thread-self/ns/net").unwrap();
        assert_ne!(
            namespaces[2],
            own_net.display().to_string(),
            "the guest has a network namespace of its own"
        );
        Self {
            simvm,
            namespaces,
            veth: banger_simvm::net::host_veth_name(id),
            images: images.to_owned(),
        }
    }

    /// Everything of the guest that still exists.
    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        if Path::new(&format!("/proc/{}", self.simvm)).exists()
            && !fs_err::read_to_string(format!("/proc/{}/stat", self.simvm))
                .unwrap_or_default()
                .contains(") Z ")
        {
            left.push(format!("simvm pid {} is alive", self.simvm));
        }
        for entry in fs_err::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            for kind in ["mnt", "pid", "net", "uts", "ipc"] {
                if let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
                    && self.namespaces.contains(&ns.display().to_string())
                {
                    left.push(format!("pid {pid} is in the guest's {}", ns.display()));
                }
            }
        }
        for entry in fs_err::read_dir("/sys/block").unwrap().flatten() {
            let backing = entry.path().join("loop/backing_file");
            if let Ok(file) = std::fs::read_to_string(&backing)
                && file.trim().starts_with(&self.images.display().to_string())
            {
                left.push(format!(
                    "{} still backs {}",
                    entry.file_name().to_string_lossy(),
                    file.trim()
                ));
            }
        }
        let mounts = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
        for line in mounts.lines() {
            if line.contains(&self.images.display().to_string()) {
                left.push(format!("host mount: {line}"));
            }
        }
        if banger_simvm::net::link_exists(&self.veth) {
            left.push(format!("veth {} exists", self.veth));
        }
        left
    }
}

async fn ssh(key: &Path, command: &str) -> std::process::Output {
    tokio::process::Command::new("ssh")
        .args([
            "-i",
            key.to_str().unwrap(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=3",
            "-o",
            "LogLevel=ERROR",
            &format!("root@{GUEST_IP}"),
            command,
        ])
        .output()
        .await
        .unwrap()
}

/// Talks to guest vsock port 1024 through the hybrid vsock socket.
async fn vsock_echo(socket: &Path) -> Result<String, String> {
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"CONNECT 1024\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\n") {
        if stream.read(&mut byte).await.map_err(|e| e.to_string())? == 0 {
            return Err(format!(
                "closed after {:?}",
                String::from_utf8_lossy(&reply)
            ));
        }
        reply.push(byte[0]);
    }
    let ok = String::from_utf8_lossy(&reply).into_owned();
    if !ok.starts_with("OK ") {
        return Err(format!("unexpected answer {ok:?}"));
    }
    stream
        .write_all(b"hello guest\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut echo = [0u8; 12];
    stream
        .read_exact(&mut echo)
        .await
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&echo).into_owned())
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    CtrlAltDel,
    Sigterm,
    Sigkill,
}

async fn boot_and_stop(rootfs: PathBuf, stop: Stop) {
    let fixture = Fixture::build(&rootfs);
    let tap = "tap-boot";
    support::bridge_with_tap("br-boot", &format!("{GATEWAY}/24"), tap);

    let vmm = ProcessVmm;
    let api = fixture.path("api.sock");
    let id = format!("boot-{}", support::random_suffix());
    let mut spec = LaunchSpec::new(support::simvm_bin(), &id, &api, fixture.path("console.log"));
    spec.vsock_socket = Some(fixture.path("vsock.sock"));
    spec.log_path = Some(fixture.path("vmm.log"));
    spec.extra_args = vec!["--level".into(), "Debug".into()];
    let process: VmmProcess = vmm.start(&spec, &CancellationToken::new()).await.unwrap();
    let _kill = KillOnDrop(process.pid());
    let fail = |what: &str| -> ! { panic!("{what}\n{}", fixture.diagnostics()) };

    let started = Instant::now();
    if let Err(e) = vmm.configure(&process, &fixture.config(tap)).await {
        fail(&format!("configure and InstanceStart failed: {e}"));
    }
    eprintln!("InstanceStart answered after {:?}", started.elapsed());

    // The daemon finds a running VMM again by its API socket.
    let adopted = vmm
        .adopt(&api)
        .await
        .unwrap()
        .expect("simvm found by its socket");
    assert_eq!(adopted.pid(), process.pid());

    let trace = Trace::capture(process.pid(), fixture.dir.path(), &id);
    assert!(
        banger_simvm::net::link_exists(&trace.veth),
        "host end {} of the guest's veth exists",
        trace.veth
    );
    let host_mounts = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts.contains(&fixture.dir.path().display().to_string()),
        "the guest's mounts never appear in the host's mount namespace"
    );

    // SSH over the bridge (sshd starts in the background: retry briefly).
    let deadline = Instant::now() + Duration::from_secs(30);
    let hostname = loop {
        let output = ssh(
            &fixture.key,
            "hostname; cat /etc/resolv.conf; ip -4 -br addr show eth0; ip -4 route show dev eth0",
        )
        .await;
        if output.status.success() {
            break String::from_utf8_lossy(&output.stdout).into_owned();
        }
        if Instant::now() >= deadline {
            fail(&format!(
                "ssh never answered: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut lines = hostname.lines();
    assert_eq!(lines.next(), Some(HOSTNAME), "{hostname}");
    assert!(hostname.contains("nameserver 192.0.2.53"), "{hostname}");
    assert!(hostname.contains(&format!("{GUEST_IP}/24")), "{hostname}");
    // The subnet's route acknowledges TCP at once (ssh waits on delayed
    // ACKs otherwise).
    assert!(
        hostname
            .lines()
            .any(|line| line.contains("/24 proto kernel")
                && line.contains(&format!("scope link src {GUEST_IP}"))
                && line.trim_end().ends_with("quickack 1")),
        "{hostname}"
    );

    // The agent (or its stand-in) through the hybrid vsock socket.
    let vsock = fixture.path("vsock.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = match fixture.listener {
            Listener::Agent => AgentClient::hybrid_vsock(&vsock, AGENT_VSOCK_PORT)
                .health()
                .await
                .map_err(|e| e.to_string())
                .and_then(|h| {
                    h.is_ok()
                        .then_some(())
                        .ok_or_else(|| format!("unhealthy: {h:?}"))
                }),
            Listener::Echo => vsock_echo(&vsock).await.and_then(|echo| {
                (echo == "hello guest\n")
                    .then_some(())
                    .ok_or_else(|| format!("echo {echo:?}"))
            }),
        };
        match answer {
            Ok(()) => break,
            Err(e) if Instant::now() >= deadline => fail(&format!("vsock never answered: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    if fixture.listener == Listener::Agent {
        let console = fs_err::read_to_string(fixture.path("console.log")).unwrap();
        assert!(
            console.contains("banger-first-boot: container mode ready"),
            "the real first-boot script ran in container mode:\n{console}"
        );
    }
    // A port nobody listens on: the connection is closed, as Firecracker does.
    let mut stream = tokio::net::UnixStream::connect(&vsock).await.unwrap();
    stream.write_all(b"CONNECT 5\n").await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "unexpected answer {rest:?}");

    // The leak check sees the running guest (so an empty answer later means
    // something): its processes, loop devices and veth.
    let running = trace.leftovers();
    for what in ["is in the guest's", "still backs", "veth"] {
        assert!(
            running.iter().any(|l| l.contains(what)),
            "the leak check does not see {what:?} of a running guest: {running:?}"
        );
    }

    let mut exit = process.exit_watch();
    match stop {
        Stop::CtrlAltDel => vmm.stop(&process).await.unwrap(),
        Stop::Sigterm => {
            nix::sys::signal::kill(Pid::from_raw(process.pid() as i32), Signal::SIGTERM).unwrap()
        }
        Stop::Sigkill => vmm.kill(&process).await.unwrap(),
    }
    let status = tokio::time::timeout(Duration::from_secs(60), exit.wait())
        .await
        .unwrap_or_else(|_| fail("simvm did not exit"));
    match stop {
        Stop::Sigkill => assert_eq!(status, VmmExit::Signal(9)),
        _ => assert_eq!(status, VmmExit::Code(0), "{}", fixture.diagnostics()),
    }
    let left = support::eventually(Duration::from_secs(30), || trace.leftovers()).await;
    assert!(
        left.is_empty(),
        "left behind after {stop:?}:\n{}\n{}",
        left.join("\n"),
        fixture.diagnostics()
    );
    if !matches!(stop, Stop::Sigkill) {
        assert!(
            !api.exists(),
            "simvm removes its api socket on a clean exit"
        );
        assert!(
            !vsock.exists(),
            "simvm removes its vsock socket on a clean exit"
        );
    }
}

#[test]
fn boot_reach_and_stop_with_ctrl_alt_del() {
    let Some(rootfs) = prerequisites("boot_reach_and_stop_with_ctrl_alt_del") else {
        return;
    };
    support::in_netns(move || boot_and_stop(rootfs, Stop::CtrlAltDel));
}

#[test]
fn boot_reach_and_stop_with_sigterm() {
    let Some(rootfs) = prerequisites("boot_reach_and_stop_with_sigterm") else {
        return;
    };
    support::in_netns(move || boot_and_stop(rootfs, Stop::Sigterm));
}

#[test]
fn boot_reach_and_sigkill_leaves_nothing() {
    let Some(rootfs) = prerequisites("boot_reach_and_sigkill_leaves_nothing") else {
        return;
    };
    support::in_netns(move || boot_and_stop(rootfs, Stop::Sigkill));
}
