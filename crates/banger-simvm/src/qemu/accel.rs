//! KVM or software emulation (TCG), and how `auto` chooses.
//!
//! `/dev/kvm` can exist, open and create VMs while a guest kernel still
//! cannot run under it (nested, paravirtualised KVM does this: the vCPU
//! never gets as far as the kernel's first console line). So `auto` asks
//! the only question that matters: it boots the guest's own kernel under
//! KVM with nothing attached and waits for its banner (`Linux version`) on
//! the serial console. On a host where KVM works that takes a fraction of a
//! second; otherwise the probe gives up after [`PROBE_TIMEOUT`] and the
//! guest runs under TCG.

use std::ffi::OsString;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// How long the probe waits for the kernel's banner under KVM.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// What a booting Linux kernel prints first.
const BANNER: &[u8] = b"Linux version";

/// The accelerator a guest runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// QEMU's software emulation: correct, and slow.
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }

    /// `-cpu`: the host's CPU under KVM, everything TCG emulates otherwise.
    pub fn cpu(self) -> &'static str {
        match self {
            Self::Kvm => "host",
            Self::Tcg => "max",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Self::Kvm => "KVM (hardware virtualisation)",
            Self::Tcg => "TCG (software emulation, slow)",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--accel`: a fixed accelerator, or `auto` (probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    #[default]
    Auto,
    Fixed(Accel),
}

impl FromStr for AccelChoice {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "auto" => Ok(Self::Auto),
            "kvm" => Ok(Self::Fixed(Accel::Kvm)),
            "tcg" => Ok(Self::Fixed(Accel::Tcg)),
            _ => Err(format!(
                "{raw:?} is not an accelerator; use auto, kvm or tcg"
            )),
        }
    }
}

/// What the probe found, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    pub accel: Accel,
    pub reason: String,
}

impl AccelChoice {
    /// The accelerator for a guest booting `kernel`.
    pub async fn resolve(self, qemu: &Path, kernel: &Path) -> Accel {
        match self {
            Self::Fixed(accel) => accel,
            Self::Auto => {
                let probed = probe(qemu, kernel).await;
                tracing::info!(accel = %probed.accel, reason = %probed.reason, "accelerator probed");
                probed.accel
            }
        }
    }
}

/// Boots `kernel` under KVM until it prints its banner: KVM if it does
/// within [`PROBE_TIMEOUT`], TCG (with the reason) otherwise.
pub async fn probe(qemu: &Path, kernel: &Path) -> Probed {
    let tcg = |reason: String| Probed {
        accel: Accel::Tcg,
        reason,
    };
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return tcg(format!("/dev/kvm cannot be opened: {e}"));
    }
    let mut child = match crate::exec::spawn_qemu_probe(qemu, &probe_args(kernel)) {
        Ok(child) => child,
        Err(e) => return tcg(format!("could not run {}: {e}", qemu.display())),
    };
    let Some(mut console) = child.stdout.take() else {
        return tcg("the probe's console was not captured".into());
    };
    let watch = async {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match console.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(BANNER.len()).any(|w| w == BANNER) {
                        return true;
                    }
                }
            }
        }
    };
    let booted = tokio::time::timeout(PROBE_TIMEOUT, watch).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    match booted {
        Ok(true) => Probed {
            accel: Accel::Kvm,
            reason: "the guest kernel boots under KVM".into(),
        },
        Ok(false) => tcg("QEMU with KVM exited before the guest kernel printed anything".into()),
        Err(_) => tcg(format!(
            "/dev/kvm opens, but the guest kernel printed nothing under KVM within {}s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// QEMU for the probe: the kernel alone, its console on stdout.
fn probe_args(kernel: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "-M",
        super::args::MACHINE,
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "128M",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-append",
        "console=ttyS0 panic=-1",
        "-kernel",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(kernel.as_os_str().to_owned());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse() {
        assert_eq!("auto".parse(), Ok(AccelChoice::Auto));
        assert_eq!("kvm".parse(), Ok(AccelChoice::Fixed(Accel::Kvm)));
        assert_eq!("tcg".parse(), Ok(AccelChoice::Fixed(Accel::Tcg)));
        assert!("hvf".parse::<AccelChoice>().is_err());
    }

    #[tokio::test]
    async fn a_fixed_choice_runs_no_probe() {
        let accel = AccelChoice::Fixed(Accel::Tcg)
            .resolve(Path::new("/nonexistent/qemu"), Path::new("/nonexistent"))
            .await;
        assert_eq!(accel, Accel::Tcg);
    }

    #[tokio::test]
    async fn a_missing_qemu_means_emulation_with_the_reason() {
        let probed = probe(Path::new("/nonexistent/qemu"), Path::new("/nonexistent")).await;
        assert_eq!(probed.accel, Accel::Tcg);
        assert!(!probed.reason.is_empty());
    }
}
