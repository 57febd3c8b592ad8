//! `kernel.bootstrap`: the distribution's cloud kernel, downloaded with a
//! private apt into banger's cache (never installed on the host), turned
//! into `vmlinux` + `initrd.img` and registered.
//!
//! Files: apt's state and the `.deb`s live in `<cache>/apt/<distro>-amd64/`
//! (reused by the next bootstrap; apt re-verifies them), its log is
//! `apt.log` there; the kernel is built in `staging/<id>/` and renamed into
//! `kernels/<id>/`.

use std::path::Path;

use banger_bootstrap::apt::{AptEnv, AptError};
use banger_bootstrap::distro::Distro;
use banger_bootstrap::exec::DepmodError;
use banger_bootstrap::kernel;
use banger_model::kernel::{Kernel, KernelSource};
use banger_model::{Id, Name};
use banger_rpc::request::KernelBootstrapParams;
use tokio_util::sync::CancellationToken;

use crate::daemon::Daemon;
use crate::errors::{Doing, Hint, ServiceError, blocking};
use crate::server::EventSink;

/// One kernel bootstrap at a time: they share apt's directories and locks.
static KERNEL_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn bootstrap(
    daemon: &Daemon,
    params: KernelBootstrapParams,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<Kernel, ServiceError> {
    let distro = Distro::parse(&params.distro)
        .invalid()
        .hint("e.g. `banger kernel bootstrap debian`")?;
    let name = match &params.name {
        Some(name) => Name::parse(name)?,
        None => Name::parse(&distro.kernel_name())?,
    };
    check_name_free(daemon, &name)?;

    let _one_at_a_time = tokio::select! {
        guard = KERNEL_LOCK.lock() => guard,
        () = cancel.cancelled() => return Err(ServiceError::Cancelled),
    };
    let apt = AptEnv::new(&daemon.layout.cache_dir, &distro, distro.default_mirror);

    let stage = events.stage("apt_update");
    apt.prepare()?;
    apt.update(cancel).await?;
    stage.done();

    let stage = events.stage("resolve_packages");
    let kernel_package = apt.kernel_package(distro.kernel_package, cancel).await?;
    let busybox = apt.show(distro.busybox_package, cancel).await?;
    stage.done();
    events.log(
        "info",
        format!(
            "{} {} and {} {} from {} (verified against {})",
            kernel_package.name,
            kernel_package.version,
            busybox.name,
            busybox.version,
            apt.mirror(),
            distro.keyring
        ),
    );

    let stage = events.stage("download_packages");
    let debs = apt
        .download(&[kernel_package.clone(), busybox], cancel)
        .await?;
    stage.done();
    if cancel.is_cancelled() {
        return Err(ServiceError::Cancelled);
    }

    let id = Id::generate();
    let staging = daemon.layout.staging_dir().join(id.as_str());
    let stage = events.stage("build_vmlinux_initrd");
    let built = {
        let (kernel_deb, busybox_deb, out) = (debs[0].clone(), debs[1].clone(), staging.clone());
        blocking(move || kernel::build(&kernel_deb, &busybox_deb, &out)).await?
    };
    let built = match built {
        Ok(built) => built,
        Err(err) => {
            remove_dir(&staging);
            return Err(ServiceError::failed("building the kernel", err));
        }
    };
    stage.done();
    events.log(
        "info",
        format!(
            "Linux {} ({} payload); initrd loads {} modules{}",
            built.release,
            built
                .compression
                .map_or_else(|| "uncompressed".to_owned(), |c| c.to_string()),
            built.modules.len(),
            if built.builtin.is_empty() {
                String::new()
            } else {
                format!(" ({} built in)", built.builtin.join(", "))
            }
        ),
    );
    if cancel.is_cancelled() {
        remove_dir(&staging);
        return Err(ServiceError::Cancelled);
    }

    let stage = events.stage("build_modules");
    match build_modules(&debs[0], &built.release, &staging, cancel).await {
        Ok((modules, size)) => {
            stage.done();
            events.log(
                "info",
                format!(
                    "{modules} modules in {} ({}), mounted read-only at /lib/modules/{} in every VM that boots this kernel",
                    kernel::MODULES_IMAGE,
                    size.human(),
                    built.release
                ),
            );
        }
        Err(err) => {
            remove_dir(&staging);
            return Err(err);
        }
    }

    let _registry = daemon.images_lock.lock().await;
    if let Err(err) = check_name_free(daemon, &name) {
        remove_dir(&staging);
        return Err(err);
    }
    let target = daemon.layout.kernel_dir(&id);
    let moved = target
        .parent()
        .map_or(Ok(()), fs_err::create_dir_all)
        .and_then(|()| fs_err::rename(&staging, &target));
    if let Err(err) = moved {
        remove_dir(&staging);
        return Err(ServiceError::failed("publishing the kernel", err));
    }
    let kernel = Kernel {
        id,
        name,
        vmlinux_path: target.join(kernel::VMLINUX),
        initrd_path: Some(target.join(kernel::INITRD)),
        version: Some(built.release),
        source: KernelSource::Bootstrap {
            distro: distro.to_string(),
            package: format!("{} {}", kernel_package.name, kernel_package.version),
        },
        created_at: jiff::Timestamp::now(),
    };
    if let Err(err) = daemon.store.insert_kernel(&kernel) {
        remove_dir(&target);
        return Err(err.into());
    }
    tracing::info!(kernel = %kernel.name, id = %kernel.id, package = %kernel_package.name, "kernel bootstrapped");
    Ok(kernel)
}

/// The kernel package's modules as `modules.ext4` in `staging`: extracted,
/// indexed by `depmod`, made into a read-only ext4 image labelled
/// [`kernel::MODULES_LABEL`]; the tree is removed again. Returns the module
/// count and the image's size.
async fn build_modules(
    kernel_deb: &Path,
    release: &str,
    staging: &Path,
    cancel: &CancellationToken,
) -> Result<(usize, banger_model::ByteSize), ServiceError> {
    let tree_root = staging.join("modules-tree");
    let result = async {
        let tree = {
            let (deb, release, root) =
                (kernel_deb.to_owned(), release.to_owned(), tree_root.clone());
            blocking(move || kernel::extract_modules(&deb, &release, &root))
                .await?
                .doing("building the kernel")?
        };
        banger_bootstrap::exec::depmod(&tree_root, release, cancel).await?;
        let (dir, out) = (tree.dir.clone(), staging.join(kernel::MODULES_IMAGE));
        let image = blocking(move || {
            banger_disk::build_ext4_from_dir(
                &dir,
                &out,
                &banger_disk::Ext4BuildOptions {
                    label: Some(kernel::MODULES_LABEL.to_owned()),
                    ..banger_disk::Ext4BuildOptions::default()
                },
            )
        })
        .await?
        .doing(format!("building {}", kernel::MODULES_IMAGE))?;
        Ok((tree.modules, image.size))
    }
    .await;
    remove_dir(&tree_root);
    result
}

fn check_name_free(daemon: &Daemon, name: &Name) -> Result<(), ServiceError> {
    let kernels = daemon.store.list_kernels()?;
    if kernels.iter().any(|kernel| &kernel.name == name) {
        return Err(
            ServiceError::already_exists(format!("kernel named {name:?} already exists"))
                .with_hint("pick another --name, or remove the old one with `banger kernel rm`"),
        );
    }
    Ok(())
}

/// A depmod failure, with what to do about it.
impl From<DepmodError> for ServiceError {
    fn from(err: DepmodError) -> Self {
        match err {
            DepmodError::NotInstalled => ServiceError::precondition(err.to_string())
                .with_hint("install it: `sudo apt-get install kmod` (depmod indexes the kernel's modules for the guests' modprobe)"),
            DepmodError::Exec(banger_bootstrap::exec::ExecError::Cancelled { .. }) => {
                ServiceError::Cancelled
            }
            other => ServiceError::failed("running depmod", other),
        }
    }
}

/// An apt failure, with what to do about it.
impl From<AptError> for ServiceError {
    fn from(err: AptError) -> Self {
        let message = err.to_string();
        match err {
        AptError::NoApt => ServiceError::precondition(message)
            .with_hint("kernel bootstrap needs a Debian-family host with apt; or import a kernel with `banger kernel import DIR`"),
        AptError::NoKeyring { package, .. } => ServiceError::precondition(message)
            .with_hint(format!("install it: `sudo apt-get install {package}`")),
        AptError::Unreachable { .. } => ServiceError::precondition(message)
            .with_hint("check the network (banger downloads the kernel from the distribution's mirror)"),
        AptError::Signature { .. } => ServiceError::precondition(message)
            .with_hint("the mirror's index is not signed by the distribution's archive key; nothing was used"),
        AptError::Exec(ref exec) if matches!(exec, banger_bootstrap::exec::ExecError::Cancelled { .. }) => {
            ServiceError::Cancelled
        }
        _ => ServiceError::failed("running apt", err),
    }
    }
}

fn remove_dir(dir: &Path) {
    if let Err(err) = fs_err::remove_dir_all(dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %err, "could not remove directory");
    }
}
