//! First use without `--image`: when the daemon finds no default image (none
//! registered, none configured, and none in the catalog or the catalog
//! unreachable), build one from Debian's packages (and, for Firecracker,
//! Debian's cloud kernel) — after asking on a terminal, straight away
//! otherwise — and say what was done and how long it took. Used by the
//! create step `vm create` and `vm run` share.

use banger_rpc::{NoParams, method};
use std::io::{BufRead, IsTerminal, Write};
use std::time::Instant;

use anyhow::Context;
use banger_model::config::Config;
use banger_model::distro::{DEBIAN_MIRROR, DEFAULT, ImageProfile, profile_packages};
use banger_model::layout::Layout;
use banger_model::vm::VmmKind;
use banger_rpc::request::{ImageBootstrapParams, KernelBootstrapParams};
use banger_rpc::response::KernelListResult;
use banger_rpc::{CallError, ErrorCode, RpcError};

use crate::commands::bootstrap::{bootstrap_image, bootstrap_kernel, bootstrapped_line};
use crate::daemon_client;
use crate::output::{EXIT_USAGE, ExitError};
use banger_doctor::{CheckStatus, checks};

/// What the fallback would build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) distro: &'static str,
    /// Also bootstrap a kernel (Firecracker with no kernel at all).
    pub(crate) kernel: bool,
}

/// Whether a failed `vm.create` means "there is no default image" (the
/// daemon found none and the catalog supplied none).
pub(crate) fn is_no_default_image(err: &anyhow::Error) -> bool {
    let rpc = match err.downcast_ref::<CallError>() {
        Some(CallError::Rpc(rpc)) => Some(rpc),
        _ => err.downcast_ref::<RpcError>(),
    };
    rpc.is_some_and(|rpc| rpc.code == ErrorCode::NoDefaultImage)
}

/// Bootstraps the default image for a `vm create`/`vm run` whose VM the
/// daemon resolved to run on `vmm` (and, for Firecracker on a host with no
/// kernel at all, Debian's kernel first):
/// asks on a terminal, goes ahead otherwise, and says what it did and how
/// long it took.
pub(crate) async fn bootstrap_default_image(layout: &Layout, vmm: VmmKind) -> anyhow::Result<()> {
    let mut client = daemon_client::connect(layout).await?;
    let kernels: KernelListResult = client
        .call::<method::KernelList>(NoParams {}, |_| {})
        .await?;
    drop(client);
    let simvm = match Config::load(&layout.config_file())
        .ok()
        .and_then(|config| config.simvm_bin)
    {
        Some(path) if path.is_file() => Ok(path),
        Some(path) => Err(format!("simvm_bin = {}", path.display())),
        None => crate::daemon_client::companion_binary("banger-simvm"),
    };
    preflight(vmm, &banger_doctor::RealHost, simvm)?;
    let plan = Plan {
        distro: DEFAULT,
        kernel: vmm.boots_kernel() && kernels.kernels.is_empty(),
    };
    eprintln!("{}", describe(&plan));
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if interactive && !confirm("Build it now? [y/N] ")? {
        return Err(ExitError {
            message: "no default image\nhint: `banger image bootstrap` builds one, `banger image import DIR --name N` imports one, or pass --image".into(),
            code: EXIT_USAGE,
        }
        .into());
    }
    let started = Instant::now();
    let kernel_ref = if plan.kernel {
        let kernel = bootstrap_kernel(
            layout,
            KernelBootstrapParams {
                distro: plan.distro.into(),
                name: None,
            },
        )
        .await?;
        eprintln!(
            "kernel {} bootstrapped ({})",
            kernel.name,
            kernel.version.as_deref().unwrap_or("unknown version")
        );
        Some(kernel.id.to_string())
    } else {
        None
    };
    let image = bootstrap_image(
        layout,
        ImageBootstrapParams {
            distro: plan.distro.into(),
            name: None,
            profile: None,
            packages: Vec::new(),
            mirror: None,
            kernel_ref,
        },
    )
    .await?;
    eprintln!("{}", bootstrapped_line(&image, started.elapsed()));
    Ok(())
}

/// The cheap checks that fail any VM whatever its image, run before minutes
/// of building one: the VMM and its pieces (Firecracker; banger-simvm for
/// sim and qemu VMs, QEMU and vhost-device-vsock for qemu VMs), `/dev/kvm`
/// (Firecracker), privileges.
/// Fails with each failing check and its fix; nothing has been built.
/// `simvm` is where banger-simvm was found (or where it was looked for).
pub(crate) fn preflight(
    vmm: VmmKind,
    host: &dyn banger_doctor::Host,
    simvm: Result<std::path::PathBuf, String>,
) -> anyhow::Result<()> {
    let mut config = crate::config();
    config.vmm = vmm;
    let simvm = banger_doctor::Companion {
        name: "banger-simvm".into(),
        found: simvm,
        role: "runs sim and qemu VMs".into(),
        needed: matches!(vmm, VmmKind::Sim | VmmKind::Qemu),
    };
    let failed: Vec<_> = [
        checks::kvm(host, vmm),
        checks::firecracker(host, &config),
        checks::qemu(host, &config),
        checks::vhost_device_vsock(host, &config),
        checks::companions(std::slice::from_ref(&simvm)),
    ]
    .into_iter()
    .filter(|check| check.status == CheckStatus::Fail)
    .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(ExitError {
        message: format!(
            "this host cannot run {vmm} VMs yet, so no default image was built:\n{}hint: `banger doctor` checks everything; on hosts without KVM use --vmm sim",
            crate::commands::doctor::render(&failed, false)
        ),
        code: 1,
    }
    .into())
}

/// What the user is told before the bootstrap.
pub(crate) fn describe(plan: &Plan) -> String {
    let mut text = format!(
        "There is no default image yet, and the catalog offers none. banger can build one on this host from Debian's own packages:\n  \
         debootstrap {}, developer profile (minbase + {}) from {DEBIAN_MIRROR}, verified against Debian's archive keyring",
        plan.distro,
        profile_packages(ImageProfile::Developer).join(", ")
    );
    if plan.kernel {
        text.push_str(
            "\n  plus Debian's cloud kernel (linux-image-cloud-amd64) as vmlinux + initrd, downloaded with apt into banger's cache",
        );
    }
    text.push_str(
        "\nThis needs debootstrap and takes a few minutes the first time (packages are cached for later builds); `banger image bootstrap --profile minimal` builds a small image instead.",
    );
    text
}

fn confirm(prompt: &str) -> anyhow::Result<bool> {
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_the_no_default_image_error() {
        let missing = RpcError::new(ErrorCode::NoDefaultImage, "there is no default image");
        assert!(is_no_default_image(&anyhow::Error::from(CallError::Rpc(
            missing.clone()
        ))));
        assert!(is_no_default_image(&anyhow::Error::from(missing)));
        // Codes decide, never the message.
        let other = RpcError::not_found("there is no default image");
        assert!(!is_no_default_image(&anyhow::Error::from(other)));
        let internal = RpcError::internal("no default image, oddly");
        assert!(!is_no_default_image(&anyhow::Error::from(internal)));
    }

    #[test]
    fn preflight_fails_before_building_on_a_host_that_cannot_run_the_vmm() {
        use banger_doctor::{FakeHost, KvmProbe};
        let healthy = FakeHost::default();
        let simvm = || Ok("/usr/lib/banger/banger-simvm".into());
        assert!(preflight(VmmKind::Firecracker, &healthy, simvm()).is_ok());
        let mut no_kvm = FakeHost {
            kvm: KvmProbe::Missing,
            ..FakeHost::default()
        };
        no_kvm.programs.remove("firecracker");
        let err = preflight(VmmKind::Firecracker, &no_kvm, simvm()).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("no default image was built"), "{text}");
        assert!(text.contains("/dev/kvm does not exist"), "{text}");
        assert!(text.contains("fix: "), "{text}");
        assert!(text.contains("firecracker"), "{text}");
        // The sim needs neither.
        assert!(preflight(VmmKind::Sim, &no_kvm, simvm()).is_ok());
        // ...but banger-simvm.
        let text = format!(
            "{:#}",
            preflight(VmmKind::Sim, &no_kvm, Err("/x/banger-simvm, PATH".into())).unwrap_err()
        );
        assert!(text.contains("banger-simvm is missing"), "{text}");
        assert!(text.contains("make install"), "{text}");
        // Firecracker VMs do not need it.
        assert!(preflight(VmmKind::Firecracker, &healthy, Err("x".into())).is_ok());
        // qemu VMs need QEMU and vhost-device-vsock too.
        let mut with_qemu = FakeHost::default();
        for program in ["qemu-system-x86_64", "vhost-device-vsock"] {
            with_qemu
                .programs
                .insert(program.into(), format!("/usr/bin/{program}").into());
        }
        assert!(preflight(VmmKind::Qemu, &with_qemu, simvm()).is_ok());
        let mut without_qemu = with_qemu.clone();
        without_qemu.programs.remove("qemu-system-x86_64");
        let text = format!(
            "{:#}",
            preflight(VmmKind::Qemu, &without_qemu, simvm()).unwrap_err()
        );
        assert!(text.contains("qemu-system-x86_64 is not in PATH"), "{text}");
    }

    #[test]
    fn the_description_says_what_and_from_where() {
        let text = describe(&Plan {
            distro: DEFAULT,
            kernel: true,
        });
        assert!(text.contains("debootstrap debian:bookworm"), "{text}");
        assert!(text.contains("openssh-server"), "{text}");
        assert!(text.contains("deb.debian.org"), "{text}");
        assert!(text.contains("linux-image-cloud-amd64"), "{text}");
        let text = describe(&Plan {
            distro: DEFAULT,
            kernel: false,
        });
        assert!(!text.contains("kernel"), "{text}");
    }
}
