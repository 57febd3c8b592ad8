//! `kernel.import` and `kernel.rm`.

use std::path::{Path, PathBuf};

use banger_bootstrap::kernel::MODULES_IMAGE;
use banger_model::kernel::{Kernel, KernelSource};
use banger_model::{Id, Name};
use banger_rpc::request::KernelImportParams;
use banger_rpc::response::Empty;
use tokio_util::sync::CancellationToken;

use crate::binaries::is_elf;
use crate::daemon::Daemon;
use crate::errors::{ServiceError, blocking};

/// Names tried for the initrd inside an imported directory.
const INITRD_NAMES: &[&str] = &["initrd.img", "initrd"];

pub async fn import(
    daemon: &Daemon,
    params: KernelImportParams,
    cancel: &CancellationToken,
) -> Result<Kernel, ServiceError> {
    let name = Name::parse(&params.name)?;
    let dir = params.dir;
    if !dir.is_dir() {
        return Err(ServiceError::invalid(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let vmlinux = dir.join("vmlinux");
    if !vmlinux.is_file() {
        return Err(ServiceError::invalid(format!("{} has no vmlinux", dir.display())).with_hint(
            "put the uncompressed kernel there as `vmlinux` (Firecracker boots an ELF vmlinux, not a bzImage)",
        ));
    }
    if !is_elf(&vmlinux) {
        return Err(ServiceError::invalid(format!("{} is not an ELF kernel image", vmlinux.display()))
            .with_hint("Firecracker needs an uncompressed vmlinux; `banger kernel bootstrap` extracts one from a distro kernel"));
    }
    let initrd = INITRD_NAMES
        .iter()
        .map(|file| dir.join(file))
        .find(|path| path.is_file());
    // The kernel's modules as `kernel bootstrap` leaves them: every VM that
    // boots the kernel gets them (first boot mounts the drive by its label).
    let modules = Some(dir.join(MODULES_IMAGE)).filter(|path| path.is_file());

    let _registry = daemon.images_lock.lock().await;
    let existing = daemon.store.list_kernels()?;
    if existing.iter().any(|kernel| kernel.name == name) {
        return Err(
            ServiceError::already_exists(format!("kernel named {name:?} already exists"))
                .with_hint("pick another --name or remove the old one with `banger kernel rm`"),
        );
    }
    if cancel.is_cancelled() {
        return Err(ServiceError::Cancelled);
    }

    let id = Id::generate();
    let target = daemon.layout.kernel_dir(&id);
    let copy = {
        let target = target.clone();
        let (initrd, modules) = (initrd.clone(), modules.clone());
        blocking(move || copy_kernel(&vmlinux, initrd.as_deref(), modules.as_deref(), &target))
    };
    let copied = copy.await?;
    let (vmlinux_path, initrd_path, version) = match copied {
        Ok(copied) => copied,
        Err(err) => {
            let _ = fs_err::remove_dir_all(&target);
            return Err(ServiceError::failed("copying the kernel", err));
        }
    };
    let kernel = Kernel {
        id,
        name,
        vmlinux_path,
        initrd_path,
        version,
        source: KernelSource::Import { path: dir },
        created_at: jiff::Timestamp::now(),
    };
    if let Err(err) = daemon.store.insert_kernel(&kernel) {
        let _ = fs_err::remove_dir_all(&target);
        return Err(err.into());
    }
    tracing::info!(kernel = %kernel.name, id = %kernel.id, "kernel imported");
    Ok(kernel)
}

fn copy_kernel(
    vmlinux: &Path,
    initrd: Option<&Path>,
    modules: Option<&Path>,
    target: &Path,
) -> std::io::Result<(PathBuf, Option<PathBuf>, Option<String>)> {
    fs_err::create_dir_all(target)?;
    let vmlinux_out = target.join("vmlinux");
    fs_err::copy(vmlinux, &vmlinux_out)?;
    if let Some(modules) = modules {
        fs_err::copy(modules, target.join(MODULES_IMAGE))?;
    }
    let initrd_out = match initrd {
        Some(initrd) => {
            let out = target.join("initrd.img");
            fs_err::copy(initrd, &out)?;
            Some(out)
        }
        None => None,
    };
    let version = kernel_version(&fs_err::read(&vmlinux_out)?);
    Ok((vmlinux_out, initrd_out, version))
}

/// The release from the `Linux version X …` banner inside a kernel image.
pub fn kernel_version(image: &[u8]) -> Option<String> {
    let marker = b"Linux version ";
    let at = memchr::memmem::find(image, marker)? + marker.len();
    let rest = &image[at..image.len().min(at + 128)];
    let end = rest
        .iter()
        .position(|b| b.is_ascii_whitespace() || *b == 0)?;
    let version = std::str::from_utf8(&rest[..end]).ok()?;
    (!version.is_empty()).then(|| version.to_owned())
}

pub async fn remove(daemon: &Daemon, reference: &str) -> Result<Empty, ServiceError> {
    let _registry = daemon.images_lock.lock().await;
    let kernels = daemon.store.list_kernels()?;
    let kernel = banger_store::resolve(&kernels, reference)?.clone();
    let users: Vec<String> = daemon
        .store
        .list_images()?
        .into_iter()
        .filter(|image| image.kernel_id.as_ref() == Some(&kernel.id))
        .map(|image| image.name.to_string())
        .collect();
    if !users.is_empty() {
        return Err(ServiceError::conflict(format!(
            "kernel {} is used by images: {}",
            kernel.name,
            users.join(", ")
        ))
        .with_hint("delete those images first"));
    }
    daemon.store.delete_kernel(&kernel.id)?;
    let dir = daemon.layout.kernel_dir(&kernel.id);
    if let Err(err) = fs_err::remove_dir_all(&dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %err, "kernel files not removed");
    }
    Ok(Empty {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_version_banner() {
        let mut image = vec![0u8; 64];
        image.extend_from_slice(
            b"Linux version 6.1.0-27-cloud-amd64 (debian-kernel@lists.debian.org)",
        );
        assert_eq!(
            kernel_version(&image).as_deref(),
            Some("6.1.0-27-cloud-amd64")
        );
        assert_eq!(kernel_version(b"no banner here"), None);
    }
}
