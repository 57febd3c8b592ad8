//! The qemu engine's processes, for real but without booting a real kernel:
//! simvm started as bangerd starts it (`--engine qemu --accel tcg`), the
//! tiny PVH kernel (it halts at once, so the VM stays Running and idle), a
//! root drive, a TAP and a vsock device. Then each way the guest can end:
//! QEMU killed, vhost-device-vsock killed, simvm itself killed. Each time
//! the rest must go too, no socket may stay behind and simvm must fail
//! (exit 1, naming what died) as a crashed Firecracker would; pause and resume are
//! checked through QEMU's own view (QMP `query-status`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_firecracker::ApiClient;
use banger_firecracker::api::{
    BootSource, Drive, InstanceState, MachineConfiguration, NetworkInterface, VmState, Vsock,
};
use banger_firecracker::launch::{self, LaunchSpec, VmConfig, VmmExit, VmmProcess};
use banger_firecracker::vmm::{ProcessVmm, Vmm};
use banger_simvm::qemu::qmp;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::support::{self, KillOnDrop};

/// How the test ends the guest.
#[derive(Debug, Clone, Copy)]
enum Kill {
    Qemu,
    VsockDevice,
    Simvm,
}

/// The command name of a process.
fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next()),
            Some("Z" | "X")
        )
    })
}

async fn started(dir: &Path, qemu: &Path, vhost: &Path) -> (VmmProcess, LaunchSpec) {
    let mut spec = LaunchSpec::new(
        support::simvm_bin(),
        "qemu-test",
        dir.join("api.sock"),
        dir.join("console.log"),
    );
    spec.vsock_socket = Some(dir.join("v.sock"));
    spec.log_path = Some(dir.join("vmm.log"));
    spec.extra_args = [
        OsString::from("--engine"),
        "qemu".into(),
        "--accel".into(),
        "tcg".into(),
        "--qemu-bin".into(),
        qemu.into(),
        "--vhost-vsock-bin".into(),
        vhost.into(),
    ]
    .into();
    let process = ProcessVmm
        .start(&spec, &CancellationToken::new())
        .await
        .unwrap();
    let config = VmConfig {
        logger: None,
        metrics: None,
        machine: MachineConfiguration::new(1, 128),
        boot_source: BootSource {
            kernel_image_path: dir.join("vmlinux").display().to_string(),
            initrd_path: None,
            boot_args: Some("console=ttyS0".into()),
        },
        drives: vec![Drive::virtio(
            "rootfs",
            dir.join("root.ext4").display().to_string(),
            true,
        )],
        network_interfaces: vec![NetworkInterface::new(
            "eth0",
            "qtap0",
            Some("02:fc:ac:1f:00:09".parse().unwrap()),
        )],
        vsock: Some(Vsock {
            vsock_id: None,
            guest_cid: 3,
            uds_path: dir.join("v.sock").display().to_string(),
        }),
    };
    ProcessVmm
        .configure(&process, &config)
        .await
        .unwrap_or_else(|e| {
            let log = fs_err::read_to_string(dir.join("vmm.log")).unwrap_or_default();
            panic!("configuring failed: {e}\n--- vmm log ---\n{log}")
        });
    (process, spec)
}

async fn ends_cleanly(kill: Kill, qemu: PathBuf, vhost: PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    fs_err::write(dir.path().join("vmlinux"), support::tiny_kernel()).unwrap();
    let empty = dir.path().join("empty");
    fs_err::create_dir(&empty).unwrap();
    support::mkfs_ext4(&empty, &dir.path().join("root.ext4"), "8M");
    support::bridge_with_tap("qbr0", "172.31.0.1/24", "qtap0");
    let (process, spec) = started(dir.path(), &qemu, &vhost).await;
    let _guard = KillOnDrop(process.pid());
    let log = || fs_err::read_to_string(dir.path().join("vmm.log")).unwrap_or_default();

    let children = support::children_of(process.pid());
    let find = |name: &str| {
        children
            .iter()
            .copied()
            .find(|pid| comm(*pid).starts_with(name))
            .unwrap_or_else(|| panic!("no {name} under simvm: {children:?}\n{}", log()))
    };
    let qemu_pid = find("qemu-system");
    let device_pid = find("vhost-device");
    let _children = (KillOnDrop(qemu_pid), KillOnDrop(device_pid));
    let qmp_socket = dir.path().join("api.sock.qmp");

    // Pause and resume reach QEMU.
    let mut client = ApiClient::connect(&spec.api_socket).await.unwrap();
    client.set_vm_state(VmState::Paused).await.unwrap();
    let status = qmp::execute(&qmp_socket, "query-status", None).unwrap();
    assert_eq!(status["status"], "paused", "{status}");
    assert_eq!(
        client.describe_instance().await.unwrap().state,
        InstanceState::Paused
    );
    client.set_vm_state(VmState::Resumed).await.unwrap();
    let status = qmp::execute(&qmp_socket, "query-status", None).unwrap();
    assert_eq!(status["status"], "running", "{status}");
    drop(client);

    // No driver in this guest ever starts the vsock device, so simvm
    // closes hybrid vsock connections instead of handing them to
    // vhost-device-vsock.
    let mut stream = tokio::net::UnixStream::connect(dir.path().join("v.sock"))
        .await
        .unwrap();
    stream.write_all(b"CONNECT 1024\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the connection is closed, not left hanging")
        .unwrap();
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    let victim = match kill {
        Kill::Qemu => qemu_pid,
        Kill::VsockDevice => device_pid,
        Kill::Simvm => process.pid(),
    };
    nix::sys::signal::kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(15), process.exit_watch().wait())
        .await
        .unwrap_or_else(|_| panic!("simvm did not exit after {kill:?} was killed\n{}", log()));
    let left = support::eventually(Duration::from_secs(10), || {
        [qemu_pid, device_pid]
            .into_iter()
            .filter(|pid| alive(*pid))
            .map(|pid| format!("pid {pid} ({})", comm(pid)))
            .collect()
    })
    .await;
    assert!(
        left.is_empty(),
        "{kill:?}: still running: {left:?}\n{}",
        log()
    );
    match kill {
        // simvm cleans up after its guest, and fails like a crashed
        // Firecracker, naming what died.
        Kill::Qemu | Kill::VsockDevice => {
            assert_eq!(exit, VmmExit::Code(1), "{}", log());
            let named = match kill {
                Kill::Qemu => "qemu exited (signal: 9",
                _ => "vhost-device-vsock exited (signal: 9",
            };
            assert!(log().contains(named), "{named} not in the log:\n{}", log());
            for socket in [
                "api.sock",
                "api.sock.qmp",
                "api.sock.vhost",
                "api.sock.vsock",
                "v.sock",
            ] {
                assert!(
                    !dir.path().join(socket).exists(),
                    "{kill:?}: {socket} left behind\n{}",
                    log()
                );
            }
        }
        // A SIGKILLed VMM removes nothing (as Firecracker); the next launch
        // removes stale sockets. Its children die with it.
        Kill::Simvm => assert_eq!(exit, VmmExit::Signal(9)),
    }
    let _ = launch::kill(&process, Duration::from_secs(5)).await;
}

fn run(kill: Kill, test: &str) {
    if !support::is_root() {
        support::skip(
            test,
            "needs root (a TAP in a network namespace)",
            support::Prerequisite::ProvidedByCi,
        );
        return;
    }
    let Some((qemu, vhost)) = support::qemu_engine_programs(test) else {
        return;
    };
    support::in_netns(move || ends_cleanly(kill, qemu, vhost));
}

#[test]
fn qemu_killed_ends_the_vmm_and_its_vsock_device() {
    run(Kill::Qemu, "qemu_killed_ends_the_vmm_and_its_vsock_device");
}

#[test]
fn vsock_device_killed_ends_the_vmm_and_qemu() {
    run(
        Kill::VsockDevice,
        "vsock_device_killed_ends_the_vmm_and_qemu",
    );
}

#[test]
fn simvm_killed_takes_qemu_and_the_vsock_device_along() {
    run(
        Kill::Simvm,
        "simvm_killed_takes_qemu_and_the_vsock_device_along",
    );
}
