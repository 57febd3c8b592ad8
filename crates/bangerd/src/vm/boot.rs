//! Booting a VM whose disks exist: its TAP (from the warm pool), NAT rules
//! when asked for, the VMM process and its configuration, then the two
//! readiness waits: the guest agent's `/healthz` through the hybrid vsock
//! socket, then sshd's banner. Every acquisition registers its release.

use std::future::Future;

use futures::future::BoxFuture;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use banger_firecracker::api::{
    BootSource, Drive, LogLevel, Logger, MacAddr, MachineConfiguration, NetworkInterface, Vsock,
};
use banger_firecracker::boot_args::{BootArgs, IpConfig};
use banger_firecracker::{LaunchSpec, VmConfig, VmmProcess};
use banger_guest::agent::{AGENT_VSOCK_PORT, AgentClient};
use banger_model::image::Image;
use banger_model::kernel::Kernel;
use banger_model::vm::{Vm, VmState, VmmKind};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::{Failure, save};
use crate::daemon::Daemon;
use crate::errors::{Cause, Doing, Hint, ServiceError};
use crate::server::EventSink;
use crate::undo::{Class, Undo};

/// Resolvers handed to guests (they reach them through NAT).
const GUEST_DNS: [Ipv4Addr; 2] = [Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(8, 8, 8, 8)];
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// Bound on one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a boot needs besides the VM record.
#[derive(Debug)]
pub struct BootInput<'a> {
    pub image: &'a Image,
    pub kernel: Option<&'a Kernel>,
    /// When the request arrived: the control-plane time (request in →
    /// `InstanceStart` sent) is logged as `control_plane_ms`.
    pub requested_at: std::time::Instant,
}

/// What disk preparation yields: the root device for the VMM, and the
/// rollback of what it made (returned even when it failed half-way).
pub type Prepared = (Result<PathBuf, Failure>, Undo);

/// A launched VMM, not configured yet.
#[derive(Debug)]
struct Launched {
    process: VmmProcess,
    tap: String,
    kernel: PathBuf,
    /// qemu VMs: what runs the vCPUs.
    accel: Option<banger_model::vm::Accel>,
}

/// Boots `vm`: `prepare` (its disks) runs alongside the VMM launch (TAP,
/// NAT, process, API), then the VMM is configured and started, then the
/// readiness waits run. On success the record has the pid and TAP but is
/// still `creating`/`starting` (the caller finishes it).
pub async fn boot(
    daemon: &Arc<Daemon>,
    vm: &mut Vm,
    input: BootInput<'_>,
    prepare: impl Future<Output = Prepared>,
    events: &EventSink,
    cancel: &CancellationToken,
    undo: &mut Undo,
) -> Result<VmmProcess, Failure> {
    let disks_stage = events.stage("prepare_disks");
    let vmm_stage = events.stage("start_vmm");
    let disks = async move {
        let prepared = prepare.await;
        if prepared.0.is_ok() {
            disks_stage.done();
        }
        prepared
    };
    let ((root, disk_undo), (launched, vmm_undo)) =
        tokio::join!(disks, launch(daemon, vm, &input, cancel));
    undo.extend(disk_undo);
    undo.extend(vmm_undo);
    let root_device = match root {
        Ok(root) => root,
        Err(failure) => {
            vmm_stage.skipped("the disks could not be prepared");
            return Err(failure);
        }
    };
    let launched = launched?;

    vm.pid = Some(launched.process.pid());
    vm.tap = Some(launched.tap.clone());
    vm.accel = launched.accel;
    // A create stays `creating` until ready, so that reconcile removes an
    // interrupted create entirely.
    if vm.state != VmState::Creating {
        vm.state = VmState::Starting;
    }
    save(daemon, vm).map_err(Failure::after_launch)?;
    daemon.checkpoint("record the VMM");
    let config =
        vm_config(vm, &input, &launched.kernel, &root_device).map_err(Failure::after_launch)?;
    let paths = vm.paths();
    daemon
        .vmm
        .configure(&launched.process, &config)
        .await
        .doing("configuring the VMM")
        .hint(format!("see {}", paths.vmm_log().display()))
        .map_err(Failure::after_launch)?;
    daemon.checkpoint("configure the VMM and start the guest");
    let control_plane_ms = input.requested_at.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(vm = %vm.name, control_plane_ms, "InstanceStart sent");
    vmm_stage.done();
    let process = launched.process;

    let deadline = tokio::time::Instant::now() + daemon.config.boot_timeout;
    let stage = events.stage("wait_vsock_agent");
    let vsock = paths.vsock_socket();
    wait_for(
        vm,
        "wait_vsock_agent",
        "the guest agent",
        &process,
        deadline,
        cancel,
        || daemon.readiness.agent(&vsock),
    )
    .await?;
    stage.done();

    let stage = events.stage("wait_ssh");
    let ip = vm.network.ip;
    wait_for(vm, "wait_ssh", "sshd", &process, deadline, cancel, || {
        daemon.readiness.ssh(ip)
    })
    .await?;
    stage.done();
    Ok(process)
}

/// TAP, NAT rules and the VMM process with its API answering.
async fn launch(
    daemon: &Arc<Daemon>,
    vm: &Vm,
    input: &BootInput<'_>,
    cancel: &CancellationToken,
) -> (Result<Launched, Failure>, Undo) {
    let mut undo = Undo::default();
    let result = launch_steps(daemon, vm, input, cancel, &mut undo).await;
    (result, undo)
}

async fn launch_steps(
    daemon: &Arc<Daemon>,
    vm: &Vm,
    input: &BootInput<'_>,
    cancel: &CancellationToken,
    undo: &mut Undo,
) -> Result<Launched, Failure> {
    let network = vm.network.clone();
    let pool = daemon
        .network
        .pool()
        .await
        .doing("preparing the bridge")
        .hint("bangerd needs root (CAP_NET_ADMIN) to manage networking")?;
    let tap = banger_net::vm_tap_name(&vm.id);
    pool.acquire(&tap).await.doing("creating the VM's TAP")?;
    undo.push(format!("release TAP {tap}"), Class::Host, {
        let daemon = Arc::clone(daemon);
        let tap = tap.clone();
        async move {
            let pool = daemon.network.pool().await.map_err(Cause::from)?;
            pool.release(&tap).await.map(drop).map_err(Cause::from)
        }
    });
    daemon.checkpoint("acquire the TAP");

    if vm.nat {
        let ops = &daemon.network.ops;
        ops.enable_ip_forward()
            .await
            .doing("enabling IP forwarding")?;
        ops.add_vm_nat(&vm.id, network.ip, &daemon.network.config.bridge)
            .await
            .map_err(|err| {
                let hint = if program_missing(&err) {
                    "install iptables (`sudo apt-get install iptables`), or create the VM without \
                     outbound network: --no-nat, or `nat = false` under [network] in config.toml"
                } else {
                    "or create the VM without outbound network: --no-nat, or `nat = false` \
                     under [network] in config.toml"
                };
                ServiceError::failed("adding NAT rules", err).with_hint(hint)
            })?;
        undo.push("remove NAT rules", Class::Host, {
            let (ops, id) = (Arc::clone(ops), vm.id.clone());
            async move { ops.remove_vm_nat(&id).await.map(drop).map_err(Cause::from) }
        });
        daemon.checkpoint("add NAT rules");
    }

    let paths = vm.paths();
    let kernel = match (input.kernel, vm.vmm) {
        (Some(kernel), _) => kernel.vmlinux_path.clone(),
        (None, VmmKind::Sim) => sim_placeholder_kernel(&paths.dir)?,
        (None, VmmKind::Firecracker | VmmKind::Qemu) => {
            return Err(Failure::before_launch(ServiceError::precondition(format!(
                "image {} has no kernel",
                input.image.name
            ))));
        }
    };
    let (extra_args, accel) = match vm.vmm {
        VmmKind::Qemu => {
            let engine = super::qemu::engine(daemon, &kernel)
                .await
                .map_err(Failure::before_launch)?;
            (engine.args, Some(engine.accel))
        }
        VmmKind::Sim | VmmKind::Firecracker => (Vec::new(), None),
    };
    let spec = LaunchSpec {
        vsock_socket: Some(paths.vsock_socket()),
        log_path: Some(paths.vmm_log()),
        extra_args,
        needs_root: vm.vmm == VmmKind::Sim,
        ..LaunchSpec::new(
            vmm_binary(daemon, vm.vmm)?,
            vm.id.as_str(),
            paths.api_socket(),
            paths.console_log(),
        )
    };
    let hint = match vm.vmm {
        VmmKind::Firecracker => "install Firecracker v1.16 (or set firecracker_bin); on hosts without KVM use --vmm qemu or --vmm sim".to_owned(),
        VmmKind::Sim | VmmKind::Qemu => format!("see {}", paths.console_log().display()),
    };
    let process = daemon
        .vmm
        .start(&spec, cancel)
        .await
        .doing("starting the VMM")
        .hint(hint)?;
    undo.push("stop the VMM", Class::Host, {
        let (vmm, process) = (Arc::clone(&daemon.vmm), process.clone());
        async move { vmm.kill(&process).await.map_err(Cause::from) }
    });
    daemon.checkpoint("start the VMM");
    Ok(Launched {
        process,
        tap,
        kernel,
        accel,
    })
}

/// Whether an error comes from a program that is not installed (a spawn
/// that failed with "not found" somewhere down its causes).
fn program_missing(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(error) = current {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
        {
            return true;
        }
        current = error.source();
    }
    false
}

/// Everything sent to the VMM before `InstanceStart`. A stored value the
/// VMM cannot take (a vcpu count past `u8`, a malformed MAC) is an error
/// naming it, never silently truncated or dropped.
fn vm_config(
    vm: &Vm,
    input: &BootInput<'_>,
    kernel: &Path,
    root_device: &Path,
) -> Result<VmConfig, ServiceError> {
    let network = &vm.network;
    let paths = vm.paths();
    let mut ip = IpConfig::new(
        network.ip,
        network.prefix_len,
        network.gateway,
        vm.name.as_str(),
    )
    .expect("stored prefixes are valid");
    ip.dns = GUEST_DNS.to_vec();
    let mut args = BootArgs::new(ip);
    let initrd = input.kernel.and_then(|kernel| kernel.initrd_path.as_ref());
    if initrd.is_none() {
        args.init = Some(banger_guest::files::FIRST_BOOT_PATH.to_owned());
    }
    let vcpus = u8::try_from(vm.spec.vcpu).map_err(|_| {
        ServiceError::invalid(format!(
            "VM {} has {} vcpus; the VMM takes at most {}",
            vm.name,
            vm.spec.vcpu,
            u8::MAX
        ))
    })?;
    let memory_mib = usize::try_from(vm.spec.memory_mib).map_err(|_| {
        ServiceError::invalid(format!(
            "VM {} has {} MiB of memory, more than this host can address",
            vm.name, vm.spec.memory_mib
        ))
    })?;
    let mac = network
        .mac
        .parse::<MacAddr>()
        .rejected(format!("VM {} has a malformed MAC address", vm.name))?;
    Ok(VmConfig {
        logger: Some(Logger {
            log_path: Some(paths.vmm_log()),
            level: Some(LogLevel::Info),
            show_level: Some(true),
            show_log_origin: Some(false),
            module: None,
        }),
        metrics: None,
        machine: MachineConfiguration::new(vcpus, memory_mib),
        boot_source: BootSource {
            kernel_image_path: kernel.to_string_lossy().into_owned(),
            initrd_path: initrd.map(|path| path.to_string_lossy().into_owned()),
            boot_args: Some(args.to_string()),
        },
        drives: {
            let mut drives = vec![
                Drive::virtio("rootfs", root_device.to_string_lossy(), true),
                Drive::virtio("work", paths.work_disk().to_string_lossy(), false),
            ];
            if let Some(modules) = modules_image(vm, input) {
                drives.push(Drive {
                    is_read_only: Some(true),
                    ..Drive::virtio("modules", modules.to_string_lossy(), false)
                });
            }
            drives
        },
        network_interfaces: vec![NetworkInterface::new(
            "eth0",
            vm.tap
                .clone()
                .expect("the TAP is acquired before configuring"),
            Some(mac),
        )],
        vsock: Some(Vsock {
            vsock_id: None,
            guest_cid: vm.vsock_cid,
            uds_path: paths.vsock_socket().to_string_lossy().into_owned(),
        }),
    })
}

/// The kernel's modules image (`modules.ext4` next to its `vmlinux`, made
/// by `kernel bootstrap`), attached read-only as the third drive (`vdc`) of
/// VMs that boot the kernel; the guest's first boot mounts it at
/// `/lib/modules/$(uname -r)`, so every image gets its kernel's modules.
/// Sim VMs run on the host's kernel and get none.
fn modules_image(vm: &Vm, input: &BootInput<'_>) -> Option<PathBuf> {
    if vm.vmm == VmmKind::Sim {
        return None;
    }
    let kernel = input.kernel?;
    let image = kernel
        .vmlinux_path
        .parent()?
        .join(banger_bootstrap::kernel::MODULES_IMAGE);
    image.is_file().then_some(image)
}

/// banger-simvm boots no kernel but, like Firecracker, wants a readable
/// `kernel_image_path`: an empty file stands in.
fn sim_placeholder_kernel(dir: &Path) -> Result<PathBuf, Failure> {
    let path = dir.join("sim-kernel.placeholder");
    if !path.exists() {
        fs_err::write(&path, b"").doing("writing the sim kernel placeholder")?;
    }
    Ok(path)
}

fn vmm_binary(daemon: &Daemon, kind: VmmKind) -> Result<PathBuf, Failure> {
    match kind {
        VmmKind::Firecracker => Ok(daemon
            .config
            .firecracker_bin
            .clone()
            .unwrap_or_else(|| PathBuf::from("firecracker"))),
        VmmKind::Sim | VmmKind::Qemu => match &daemon.config.simvm_bin {
            Some(path) => Ok(path.clone()),
            None => Ok(crate::binaries::find(crate::binaries::SIMVM).unmet()?),
        },
    }
}

/// How boot tells that a guest is ready: the real probes, or a fake in
/// unit tests of the lifecycle.
pub trait Readiness: Send + Sync + std::fmt::Debug {
    /// The guest agent answered `/healthz` through the hybrid vsock socket.
    fn agent<'a>(&'a self, vsock: &'a Path) -> BoxFuture<'a, bool>;
    /// sshd accepted a connection and sent its `SSH-` banner.
    fn ssh(&self, ip: Ipv4Addr) -> BoxFuture<'_, bool>;
}

/// The real probes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Probes;

impl Readiness for Probes {
    fn agent<'a>(&'a self, vsock: &'a Path) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            AgentClient::hybrid_vsock(vsock, AGENT_VSOCK_PORT)
                .with_step_timeout(PROBE_TIMEOUT)
                .health()
                .await
                .is_ok()
        })
    }

    fn ssh(&self, ip: Ipv4Addr) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let probe = async {
                let address = SocketAddr::from((ip, 22));
                let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
                let mut banner = [0u8; 4];
                stream.read_exact(&mut banner).await.ok()?;
                (&banner == b"SSH-").then_some(())
            };
            matches!(
                tokio::time::timeout(PROBE_TIMEOUT, probe).await,
                Ok(Some(()))
            )
        })
    }
}

/// Probes until `ready` answers, the VMM exits, the client cancels or the
/// deadline passes.
async fn wait_for<F, Fut>(
    vm: &Vm,
    stage: &str,
    what: &str,
    process: &VmmProcess,
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
    mut ready: F,
) -> Result<(), Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let logs = format!(
        "see `banger vm logs {}` ({})",
        vm.name,
        vm.paths().console_log().display()
    );
    loop {
        if cancel.is_cancelled() {
            return Err(Failure::after_launch(ServiceError::Cancelled));
        }
        if let Some(exit) = process.exited() {
            return Err(Failure::after_launch(
                ServiceError::precondition(format!("the VMM exited during {stage} ({exit})"))
                    .with_hint(logs),
            ));
        }
        if ready().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::still_booting(
                ServiceError::timeout(format!(
                    "{what} did not answer within the boot timeout ({stage})"
                ))
                .with_hint(format!(
                    "{logs}; raise boot_timeout_seconds in config.toml if the guest is just slow"
                )),
                process.clone(),
            ));
        }
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A NAT rule that cannot be added because `iptables` is not installed
    /// is told apart from other failures, so the hint can say what to
    /// install.
    #[tokio::test]
    async fn a_missing_iptables_is_recognised_down_the_error_chain() {
        let ops = banger_net::nat::Iptables::new("/nonexistent/iptables");
        let id = banger_model::Id::from_stored("0123456789abcdef0123456789abcdef");
        let err = ops
            .add_vm_nat(&id, Ipv4Addr::new(172, 30, 0, 2), "br-banger")
            .await
            .unwrap_err();
        assert!(program_missing(&err), "{err:?}");
        let other = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no");
        assert!(!program_missing(&other));
    }
}
