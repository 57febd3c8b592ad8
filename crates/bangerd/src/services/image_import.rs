//! `image.import` (a rootfs directory or tarball becomes an image),
//! `image.delete`, `image.promote`.

use std::path::{Path, PathBuf};

use banger_disk::{Ext4BuildOptions, build_ext4_from_dir, make_work_seed};
use banger_model::image::{Image, ImageSource};
use banger_model::kernel::Kernel;
use banger_model::{ByteSize, Id, Name};
use banger_rpc::request::ImageImportParams;
use banger_rpc::response::Empty;
use tokio_util::sync::CancellationToken;

use crate::binaries;
use crate::daemon::Daemon;
use crate::errors::{Cause, Doing, ServiceError, blocking, check_cancel};
use crate::guest_install;
use crate::images::Staging;
use crate::server::EventSink;

/// Free space every image's root filesystem gets on top of its content,
/// for what guests install. The file is sparse and VM roots are reflinks or
/// sparse copies of it, so space nobody uses costs nothing on disk.
pub const ROOTFS_FREE_SPACE: ByteSize = ByteSize::gib(4);

/// File names inside an image directory.
pub const ROOTFS: &str = "rootfs.ext4";
pub const WORK_SEED: &str = "work-seed.ext4";

pub async fn import(
    daemon: &Daemon,
    params: ImageImportParams,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<Image, ServiceError> {
    let name = Name::parse(&params.name)?;
    check_name_free(daemon, &name)?;
    let kernel = resolve_kernel(daemon, params.kernel_ref.as_deref())?;
    let source = params.path;
    let meta = fs_err::metadata(&source).rejected(format!("cannot import {}", source.display()))?;
    let agent = binaries::find(binaries::AGENT).unmet()?;

    let id = Id::generate();
    let staging = Staging::new(daemon, &id)?;
    let rootfs = if meta.is_dir() {
        source.clone()
    } else {
        unpack_tarball(&source, &staging.rootfs(), events).await?;
        staging.rootfs()
    };
    let size = build_image_files(daemon, &rootfs, &[], &staging.out(), &agent, events, cancel)
        .await?
        .size;
    let image = publish(
        daemon,
        &staging.out(),
        Image {
            id,
            name,
            kernel_id: kernel.as_ref().map(|kernel| kernel.id.clone()),
            kernel_name: kernel.map(|kernel| kernel.name.to_string()),
            rootfs_path: PathBuf::new(),
            work_seed_path: None,
            rootfs_size: size,
            source: ImageSource::Import { path: source },
            is_default: false,
            created_at: jiff::Timestamp::now(),
        },
    )
    .await?;
    Ok(image)
}

/// Unpacks a rootfs tarball (plain, gzip or zstd) with the same hardening
/// as OCI layers: nothing may land outside `rootfs`.
async fn unpack_tarball(
    tarball: &Path,
    rootfs: &Path,
    events: &EventSink,
) -> Result<(), ServiceError> {
    let stage = events.stage("unpack");
    let options = banger_image::UnpackOptions::default();
    let (tarball, rootfs) = (tarball.to_owned(), rootfs.to_owned());
    let stats = blocking(move || {
        let file = fs_err::File::open(&tarball)?;
        let size = file.metadata().ok().map(|meta| meta.len());
        let mut reader = std::io::BufReader::new(file);
        let mut unpacker = banger_image::Unpacker::create(&rootfs, options)?;
        let label = tarball.display().to_string();
        let stats = unpacker.apply_compressed(&label, &mut reader, size)?;
        unpacker.finish()?;
        Ok::<_, Cause>(stats)
    })
    .await?
    .rejected("cannot import the tarball")?;
    stage.done();
    report_skipped(events, stats.skipped_special);
    Ok(())
}

/// The one line saying how many device nodes and FIFOs an image left out.
pub fn report_skipped(events: &EventSink, count: u64) {
    if count == 0 {
        return;
    }
    let what = if count == 1 {
        "device node or FIFO"
    } else {
        "device nodes and FIFOs"
    };
    events.log(
        "info",
        format!("skipped {count} {what}: a guest's /dev is a devtmpfs, so images need none"),
    );
    tracing::info!(count, "skipped device nodes and FIFOs");
}

/// What [`build_image_files`] made.
#[derive(Debug, Clone, Copy)]
pub struct BuiltImage {
    /// `rootfs.ext4`'s size (sparse; free space included).
    pub size: ByteSize,
    /// What the root filesystem's files take.
    pub content: ByteSize,
}

/// Builds `rootfs.ext4` (with banger's guest files) and `work-seed.ext4`
/// from a rootfs directory into `staging`.
pub async fn build_image_files(
    daemon: &Daemon,
    rootfs_dir: &Path,
    owners: &[banger_bootstrap::TreeOwner],
    staging: &Path,
    agent: &Path,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<BuiltImage, ServiceError> {
    fs_err::create_dir_all(staging).doing("staging the image")?;
    let rootfs = staging.join(ROOTFS);
    let seed = staging.join(WORK_SEED);

    let stage = events.stage("build_rootfs");
    let image = blocking({
        let (src, out) = (rootfs_dir.to_owned(), rootfs.clone());
        move || {
            let options = Ext4BuildOptions {
                free_space: ROOTFS_FREE_SPACE,
                skip_special: true,
                ..Ext4BuildOptions::default()
            };
            build_ext4_from_dir(&src, &out, &options)
        }
    })
    .await?
    .doing("building rootfs.ext4")?;
    stage.done();
    report_skipped(events, image.skipped_special);
    check_cancel(cancel)?;
    if !owners.is_empty() {
        let mut edits = banger_disk::Ext4Edits::new();
        for owner in owners {
            let path = format!("/{}", owner.path.display());
            edits
                .chown(&path, owner.uid, owner.gid)
                .doing("restoring the tree's owners")?;
        }
        let disk = daemon.disk.clone();
        let rootfs = rootfs.clone();
        blocking(move || disk.apply_edits(&rootfs, &edits))
            .await?
            .doing("restoring the tree's owners in rootfs.ext4")?;
    }

    let stage = events.stage("install_guest_files");
    let disk = daemon.disk.clone();
    blocking({
        let (rootfs, agent) = (rootfs.clone(), agent.to_owned());
        move || guest_install::install(disk.as_ref(), &rootfs, &agent)
    })
    .await?
    .doing("installing guest files")?;
    stage.done();
    check_cancel(cancel)?;

    let stage = events.stage("build_work_seed");
    blocking({
        let (src, out) = (rootfs_dir.to_owned(), seed.clone());
        move || make_work_seed(&src, &out)
    })
    .await?
    .doing("building work-seed.ext4")?;
    stage.done();
    check_cancel(cancel)?;
    Ok(BuiltImage {
        size: image.size,
        content: ByteSize(image.content.bytes),
    })
}

/// Moves a staged image into place and records it; the first image becomes
/// the default. Removes the files again when recording fails.
pub async fn publish(
    daemon: &Daemon,
    staging: &Path,
    mut image: Image,
) -> Result<Image, ServiceError> {
    let _registry = daemon.images_lock.lock().await;
    let target = daemon.layout.image_dir(&image.id);
    if let Some(parent) = target.parent() {
        fs_err::create_dir_all(parent).doing("publishing the image")?;
    }
    if let Err(err) = fs_err::rename(staging, &target) {
        remove_dir(staging);
        return Err(ServiceError::failed("publishing the image", err));
    }
    image.rootfs_path = target.join(ROOTFS);
    let seed = target.join(WORK_SEED);
    image.work_seed_path = seed.is_file().then_some(seed);
    let first = daemon.store.default_image()?.is_none();
    if let Err(err) = daemon.store.insert_image(&image) {
        remove_dir(&target);
        return Err(err.into());
    }
    if first {
        daemon.store.set_default_image(&image.id)?;
        image.is_default = true;
    }
    tracing::info!(image = %image.name, id = %image.id, default = image.is_default, "image published");
    Ok(image)
}

/// Replaces the files and record of `previous` with a staged build of the
/// same image (same id and name, default flag kept): the new `rootfs.ext4`
/// and `work-seed.ext4` are renamed over the old ones and grown seeds of the
/// old one are dropped. VMs made from it keep their disks: file roots are
/// their own copies, and a dm-snapshot VM keeps the rootfs its snapshot
/// sits on through a hard link in its directory (made here for VMs older
/// than that link). Returns the image and the names of those VMs.
pub async fn replace(
    daemon: &Daemon,
    staging: &Path,
    previous: &Image,
    mut image: Image,
) -> Result<(Image, Vec<String>), ServiceError> {
    let _registry = daemon.images_lock.lock().await;
    let dir = daemon.layout.image_dir(&previous.id);
    let vms: Vec<banger_model::vm::Vm> = daemon
        .store
        .list_vms()?
        .into_iter()
        .filter(|vm| vm.image_id == previous.id)
        .collect();
    for vm in &vms {
        crate::vm::disks::keep_dm_base(vm, &previous.rootfs_path)
            .doing(format!("keeping VM {}'s root base", vm.name))?;
    }
    let rootfs = dir.join(ROOTFS);
    let seed = dir.join(WORK_SEED);
    let staged_seed = staging.join(WORK_SEED);
    if staged_seed.is_file() {
        fs_err::rename(&staged_seed, &seed).doing("replacing the image")?;
    }
    fs_err::rename(staging.join(ROOTFS), &rootfs).doing("replacing the image")?;
    // Grown copies of the old seed (`work-seed.grown-<bytes>.ext4`).
    if let Ok(entries) = fs_err::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("work-seed.grown-")
                && let Err(err) = fs_err::remove_file(entry.path())
            {
                tracing::warn!(error = %err, "stale grown seed not removed");
            }
        }
    }
    image.id = previous.id.clone();
    image.is_default = previous.is_default;
    image.rootfs_path = rootfs;
    image.work_seed_path = seed.is_file().then_some(seed);
    daemon.store.update_image(&image)?;
    let names = vms.iter().map(|vm| vm.name.to_string()).collect();
    tracing::info!(image = %image.name, id = %image.id, "image replaced in place");
    Ok((image, names))
}

pub fn check_name_free(daemon: &Daemon, name: &Name) -> Result<(), ServiceError> {
    let images = daemon.store.list_images()?;
    if images.iter().any(|image| &image.name == name) {
        return Err(
            ServiceError::already_exists(format!("image named {name:?} already exists")).with_hint(
                "pick another --name, or delete the old image with `banger image delete`",
            ),
        );
    }
    Ok(())
}

/// The kernel named by `reference`, else the default kernel: the default
/// image's kernel, else the only kernel there is.
pub fn resolve_kernel(
    daemon: &Daemon,
    reference: Option<&str>,
) -> Result<Option<Kernel>, ServiceError> {
    let kernels = daemon.store.list_kernels()?;
    if let Some(reference) = reference {
        return Ok(Some(banger_store::resolve(&kernels, reference)?.clone()));
    }
    if let Some(default) = daemon.store.default_image()?
        && let Some(kernel_id) = default.kernel_id
    {
        return Ok(kernels.into_iter().find(|kernel| kernel.id == kernel_id));
    }
    Ok(if kernels.len() == 1 {
        kernels.into_iter().next()
    } else {
        None
    })
}

pub async fn delete(daemon: &Daemon, reference: &str) -> Result<Empty, ServiceError> {
    let _registry = daemon.images_lock.lock().await;
    let images = daemon.store.list_images()?;
    let image = banger_store::resolve(&images, reference)?.clone();
    let users: Vec<String> = daemon
        .store
        .list_vms()?
        .into_iter()
        .filter(|vm| vm.image_id == image.id)
        .map(|vm| vm.name.to_string())
        .collect();
    if !users.is_empty() {
        return Err(ServiceError::conflict(format!(
            "image {} is used by VMs: {}",
            image.name,
            users.join(", ")
        ))
        .with_hint("delete those VMs first (`banger vm delete NAME...`)"));
    }
    daemon.store.delete_image(&image.id)?;
    remove_dir(&daemon.layout.image_dir(&image.id));
    tracing::info!(image = %image.name, "image deleted");
    Ok(Empty {})
}

pub async fn promote(daemon: &Daemon, reference: &str) -> Result<Image, ServiceError> {
    let _registry = daemon.images_lock.lock().await;
    let images = daemon.store.list_images()?;
    let mut image = banger_store::resolve(&images, reference)?.clone();
    daemon.store.set_default_image(&image.id)?;
    image.is_default = true;
    Ok(image)
}

fn remove_dir(dir: &Path) {
    if let Err(err) = fs_err::remove_dir_all(dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %err, "could not remove directory");
    }
}
