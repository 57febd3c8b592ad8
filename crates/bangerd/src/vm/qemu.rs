//! `vmm = "qemu"`: banger-simvm's qemu engine. The daemon decides what it
//! needs once and passes it down resolved: the QEMU and vhost-device-vsock
//! binaries (config keys, else next to bangerd or in `PATH`) and the
//! accelerator (`qemu_accel`; `auto` boots the VM's kernel under KVM for a
//! few seconds, once per kernel for the daemon's life). The choice is
//! recorded on the VM so `vm show` and `vm list` can say it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use banger_model::config::QemuAccel;
use banger_model::vm::Accel;
use banger_simvm::qemu::accel as probe;

use crate::daemon::Daemon;
use crate::errors::ServiceError;

/// The QEMU binary looked up in `PATH` when `qemu_bin` is not set.
pub const QEMU: &str = "qemu-system-x86_64";
/// The vsock device looked up when `vhost_vsock_bin` is not set.
pub const VHOST_VSOCK: &str = "vhost-device-vsock";

/// What the qemu engine is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    /// banger-simvm's arguments beyond Firecracker's.
    pub args: Vec<OsString>,
    pub accel: Accel,
}

/// Resolves the engine for a guest booting `kernel`.
pub async fn engine(daemon: &Daemon, kernel: &Path) -> Result<Engine, ServiceError> {
    let qemu = program(
        daemon.config.qemu_bin.as_deref(),
        QEMU,
        "qemu_bin",
        "sudo apt-get install qemu-system-x86",
    )?;
    let vhost = program(
        daemon.config.vhost_vsock_bin.as_deref(),
        VHOST_VSOCK,
        "vhost_vsock_bin",
        "scripts/install-deps.sh installs it (cargo install --locked vhost-device-vsock --version 0.3.0)",
    )?;
    let accel = match daemon.config.qemu_accel {
        QemuAccel::Kvm => Accel::Kvm,
        QemuAccel::Tcg => Accel::Tcg,
        QemuAccel::Auto => probed(&qemu, kernel).await,
    };
    let args = [
        OsString::from("--engine"),
        "qemu".into(),
        "--accel".into(),
        accel.as_str().into(),
        "--qemu-bin".into(),
        qemu.into_os_string(),
        "--vhost-vsock-bin".into(),
        vhost.into_os_string(),
    ]
    .into();
    Ok(Engine { args, accel })
}

/// A configured path, or `name` found next to bangerd or in `PATH`.
pub fn program(
    configured: Option<&Path>,
    name: &str,
    key: &str,
    install: &str,
) -> Result<PathBuf, ServiceError> {
    if let Some(path) = configured {
        return if crate::binaries::is_executable(path) {
            Ok(path.to_owned())
        } else {
            Err(ServiceError::precondition(format!(
                "{key} = {} is not an executable file",
                path.display()
            ))
            .with_hint(install.to_owned()))
        };
    }
    crate::binaries::find(name).map_err(|_| {
        ServiceError::precondition(format!("{name} (needed by vmm = \"qemu\") is not in PATH"))
            .with_hint(format!("{install}, or set {key} in config.toml"))
    })
}

/// Probe answers so far: (QEMU, kernel) → accelerator, and the last reason.
type Seen = Mutex<(HashMap<(PathBuf, PathBuf), Accel>, Option<(Accel, String)>)>;

fn seen() -> &'static Seen {
    static SEEN: OnceLock<Seen> = OnceLock::new();
    SEEN.get_or_init(Seen::default)
}

/// The last probe's answer and its reason, if a qemu VM has booted.
pub fn last_probe() -> Option<(Accel, String)> {
    seen().lock().unwrap_or_else(|e| e.into_inner()).1.clone()
}

/// `auto`: the probe's answer for this QEMU and kernel, probed once.
async fn probed(qemu: &Path, kernel: &Path) -> Accel {
    let seen = seen();
    let key = (qemu.to_owned(), kernel.to_owned());
    if let Some(accel) = seen.lock().unwrap_or_else(|e| e.into_inner()).0.get(&key) {
        return *accel;
    }
    let result = probe::probe(qemu, kernel).await;
    let accel = match result.accel {
        probe::Accel::Kvm => Accel::Kvm,
        probe::Accel::Tcg => Accel::Tcg,
    };
    tracing::info!(%accel, reason = %result.reason, kernel = %kernel.display(), "qemu accelerator probed");
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    seen.0.insert(key, accel);
    seen.1 = Some((accel, result.reason));
    accel
}
