//! banger-simvm: a stand-in VMM for hosts without KVM. It is started like
//! `firecracker` (`--api-sock PATH --id ID`), answers the Firecracker v1.16
//! API with Firecracker's paths, field names, status codes and error bodies,
//! and on `InstanceStart` boots the guest with one of two engines
//! (`--engine`):
//!
//! - `sim` runs the root drive as a container: its own mount, PID, UTS,
//!   network and IPC namespaces, the second drive at `/root`, a veth on the
//!   bridge of the configured TAP, and the image's first-boot script in
//!   container mode. Isolation is namespaces, not a hypervisor.
//! - `qemu` boots the configured kernel, initrd and drives in QEMU's
//!   `microvm` machine (KVM when the kernel boots under it, else software
//!   emulation), the TAP as its NIC and vsock through `vhost-device-vsock`:
//!   the real guest, slowly where there is no usable KVM.
//!
//! Layout:
//! - [`cli`]: Firecracker's command-line flags.
//! - [`controller`]: the API as a state machine (pure; no root needed).
//! - [`server`]: HTTP/1.1 on the API unix socket.
//! - [`vsock`]: Firecracker's hybrid vsock (`CONNECT <port>`) to guest unix sockets.
//! - [`guest`]: the `sim` engine's container boot (host side and the
//!   re-executed helper).
//! - [`qemu`]: the `qemu` engine (command line, QMP, accelerator probe).
//! - [`net`]: the guest's veth and addresses, over netlink.
//! - [`log`]: simvm's own log (`--log-path`, `PUT /logger`).
//! - `exec`: the only module that spawns processes.

pub mod cli;
pub mod controller;
mod exec;
pub mod guest;
pub mod log;
pub mod net;
pub mod qemu;
pub mod server;
pub mod vsock;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use banger_firecracker::api::LogLevel;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Mutex, watch};

use crate::controller::{Controller, Guest, GuestLauncher, GuestSlot};

/// How long guest processes get between SIGTERM and SIGKILL.
pub const GUEST_GRACE: Duration = Duration::from_secs(3);
/// How long simvm waits for the guest to go after asking it to.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// How long a simvm started by banger-helper waits for `InstanceStart`.
const UNBOOTED_LIMIT: Duration = Duration::from_secs(60);
/// How long simvm waits for loop devices and the veth to disappear.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Runs the VMM until the guest is gone or simvm is told to stop.
pub async fn run(args: cli::Args) -> anyhow::Result<()> {
    banger_firecracker::launch::validate_id(&args.id).context("invalid --id")?;
    let level = args
        .level
        .as_deref()
        .map(str::parse::<LogLevel>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("invalid --level: {e}"))?;
    let log = log::LogControl::init(args.log_path.as_deref(), level).with_context(|| {
        format!(
            "could not open the log {}",
            args.log_path.as_deref().unwrap_or(Path::new("")).display()
        )
    })?;
    tracing::info!(id = %args.id, api = %args.api_sock.display(), "banger-simvm starting");

    let (slot, _) = watch::channel(None);
    let slot: Arc<GuestSlot> = Arc::new(slot);
    let launcher: Arc<dyn GuestLauncher> = match args.engine {
        cli::Engine::Sim => Arc::new(
            guest::NamespaceLauncher::new(GUEST_GRACE)
                .context("could not start the guest spawner")?,
        ),
        cli::Engine::Qemu => Arc::new(qemu::QemuLauncher::new(
            qemu::QemuConfig {
                qemu: args.qemu_bin.clone(),
                vhost_vsock: args.vhost_vsock_bin.clone(),
                accel: args.accel,
            },
            args.api_sock.clone(),
        )),
    };
    tracing::info!(engine = ?args.engine, "engine");
    let mut controller = Controller::new(args.id.clone(), launcher, log, slot.clone());
    controller.set_owner(args.owner);
    if let Some(metrics) = &args.metrics_path {
        controller
            .init_metrics(metrics)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let controller = Arc::new(Mutex::new(controller));

    let listener = tokio::net::UnixListener::bind(&args.api_sock).with_context(|| {
        format!(
            "could not bind the api socket {}; remove it if no vmm uses it",
            args.api_sock.display()
        )
    })?;
    if let Some(owner) = args.owner {
        owner.give(&args.api_sock).with_context(|| {
            format!(
                "could not give the api socket {} to {owner}",
                args.api_sock.display()
            )
        })?;
    }
    let server = tokio::spawn(server::serve(listener, controller.clone()));

    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut guests = slot.subscribe();
    let orphaned = async {
        match args.owner {
            Some(_) => orphaned(&args.api_sock, &slot).await,
            None => std::future::pending().await,
        }
    };
    let stopped_by_signal = tokio::select! {
        _ = sigterm.recv() => true,
        _ = sigint.recv() => true,
        () = orphaned => true,
        () = guest_gone(&mut guests) => false,
    };
    let guest = slot.borrow().clone();
    if stopped_by_signal {
        tracing::info!("signal received, stopping");
        if let Some(guest) = &guest {
            stop_guest(guest.as_ref()).await;
        }
    } else if let Some(failure) = guest.as_ref().and_then(|g| g.failure()) {
        tracing::error!(%failure, "the guest failed");
    } else {
        tracing::info!("guest is gone, exiting");
    }
    server.abort();
    if let Some(guest) = &guest {
        wait_released(guest.as_ref()).await;
    }
    let vsock = controller
        .try_lock()
        .ok()
        .and_then(|c| c.vsock_path().map(Path::to_path_buf));
    remove_sockets([Some(args.api_sock.clone()), vsock]);
    match guest.as_ref().and_then(|g| g.failure()) {
        Some(failure) if !stopped_by_signal => Err(anyhow::anyhow!("the guest failed: {failure}")),
        _ => Ok(()),
    }
}

/// Resolves once a guest has been started and has exited.
async fn guest_gone(guests: &mut watch::Receiver<Option<Arc<dyn Guest>>>) {
    let guest = loop {
        if let Some(guest) = guests.borrow_and_update().clone() {
            break guest;
        }
        if guests.changed().await.is_err() {
            return std::future::pending().await;
        }
    };
    let mut exited = guest.exited();
    let _ = exited.wait_for(|gone| *gone).await;
}

/// Resolves when a simvm that banger-helper started (`--owner`) has nobody
/// left to drive it: its API socket is gone (the VM's directory was
/// removed, as a daemon's rollback does when the helper died before telling
/// it the pid), or no guest was started within [`UNBOOTED_LIMIT`]. As root,
/// out of its user's reach, it must not outlive its VM.
async fn orphaned(api_sock: &Path, slot: &GuestSlot) {
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if std::fs::symlink_metadata(api_sock).is_err() {
            tracing::warn!(api = %api_sock.display(), "the api socket is gone: stopping");
            return;
        }
        if slot.borrow().is_none() && started.elapsed() > UNBOOTED_LIMIT {
            tracing::warn!(limit = ?UNBOOTED_LIMIT, "no guest was started: stopping");
            return;
        }
    }
}

/// Ctrl-Alt-Del, then SIGKILL if the guest does not go in time.
async fn stop_guest(guest: &dyn Guest) {
    let mut exited = guest.exited();
    if let Err(error) = guest.ctrl_alt_del() {
        tracing::warn!(%error, "could not ask the guest to stop");
    }
    if tokio::time::timeout(STOP_WAIT, exited.wait_for(|gone| *gone))
        .await
        .is_err()
    {
        tracing::warn!("guest did not stop in time; killing it");
        guest.kill();
        let _ = tokio::time::timeout(STOP_WAIT, exited.wait_for(|gone| *gone)).await;
    }
}

/// Waits until the kernel has released the guest's loop devices and veth.
async fn wait_released(guest: &dyn Guest) {
    let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
    loop {
        let left = guest.leftovers();
        if left.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(?left, "guest resources still present at exit");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn remove_sockets(paths: impl IntoIterator<Item = Option<PathBuf>>) {
    for path in paths.into_iter().flatten() {
        if let Err(error) = fs_err::remove_file(&path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, "could not remove socket");
        }
    }
}
