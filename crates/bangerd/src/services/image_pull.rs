//! `image.pull`: a catalog image or any OCI image becomes a bootable image —
//! layers (cached by digest) unpacked safely into staging, banger's guest
//! files added, ext4 built, published. `kernel.pull`: a catalog kernel.

use banger_image::{ImageSourceRef, PullOptions, Puller, UnpackOptions};
use banger_model::image::{Image, ImageSource};
use banger_model::kernel::{Kernel, KernelSource};
use banger_model::{Id, Name};
use banger_rpc::request::{ImagePullParams, KernelPullParams};
use banger_rpc::response::{ImagePullResult, PullOutcome};
use tokio_util::sync::CancellationToken;

use super::image_import::{build_image_files, check_name_free, publish, replace, resolve_kernel};
use crate::binaries;
use crate::daemon::Daemon;
use crate::errors::{Doing, Hint, ServiceError, blocking};
use crate::images::{self, Staging};
use crate::server::EventSink;

pub async fn pull(
    daemon: &Daemon,
    params: ImagePullParams,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<ImagePullResult, ServiceError> {
    let http = images::http()?;
    let catalog = images::catalog(daemon, &http).await?;
    let source = banger_image::resolve_image(&catalog, &params.reference).rejected(format!(
        "{:?} is neither a catalog image nor an image reference",
        params.reference
    ))?;
    match source {
        ImageSourceRef::Oci(reference) => {
            let name = match &params.name {
                Some(name) => Name::parse(name)?,
                None => images::derive_name(&reference.to_string())?,
            };
            let existing = existing_from(
                daemon,
                &name,
                |source| matches!(source, ImageSource::Pull { reference: pulled, .. } if *pulled == reference.to_string()),
            )?;
            let kernel = match (&existing, params.kernel_ref.as_deref()) {
                (Some(image), None) => current_kernel(daemon, image)?,
                (_, reference) => resolve_kernel(daemon, reference)?,
            };
            let puller = Puller::new(PullOptions::new(daemon.layout.oci_cache()))
                .doing("preparing the OCI layer cache")?;
            let resolved = tokio::select! {
                resolved = puller.resolve(&reference) => resolved,
                () = cancel.cancelled() => return Err(ServiceError::Cancelled),
            }
            .unavailable("pulling the image")
            .or_hint(PULL_RESUMES)?;
            let digest = resolved.manifest_digest.to_string();
            if let Some(image) = &existing
                && let ImageSource::Pull {
                    manifest_digest, ..
                } = &image.source
                && *manifest_digest == digest
            {
                return up_to_date(daemon, image, kernel, digest);
            }
            let id = existing
                .as_ref()
                .map_or_else(Id::generate, |image| image.id.clone());
            let staging = Staging::new(daemon, &Id::generate())?;
            let source = stage_oci(&puller, &resolved, &staging, events, cancel).await?;
            let staged = Staged {
                id,
                name,
                kernel,
                source,
            };
            finish(daemon, &staging, staged, existing, digest, events, cancel).await
        }
        ImageSourceRef::Catalog(entry) => {
            let name = match &params.name {
                Some(name) => Name::parse(name)?,
                None => Name::parse(&entry.name)?,
            };
            let existing = existing_from(
                daemon,
                &name,
                |source| matches!(source, ImageSource::Catalog { name: pulled, .. } if *pulled == entry.name),
            )?;
            let kernel = match (&existing, params.kernel_ref.as_deref()) {
                (_, Some(reference)) => resolve_kernel(daemon, Some(reference))?,
                (Some(image), None) => current_kernel(daemon, image)?,
                (None, None) => Some(
                    ensure_catalog_kernel(daemon, &catalog, &entry.kernel, &http, events, cancel)
                        .await?,
                ),
            };
            let digest = format!("sha256:{}", entry.artifact.sha256);
            if let Some(image) = &existing
                && let ImageSource::Catalog { sha256, .. } = &image.source
                && *sha256 == entry.artifact.sha256
            {
                return up_to_date(daemon, image, kernel, digest);
            }
            let id = existing
                .as_ref()
                .map_or_else(Id::generate, |image| image.id.clone());
            let staging = Staging::new(daemon, &Id::generate())?;
            let source = stage_catalog(daemon, &entry, &http, &staging, events, cancel).await?;
            let staged = Staged {
                id,
                name,
                kernel,
                source,
            };
            finish(daemon, &staging, staged, existing, digest, events, cancel).await
        }
    }
}

/// The image called `name` when `same_source` says it came from what is
/// being pulled (then the pull updates it); `None` when the name is free;
/// an error naming the clash otherwise.
fn existing_from(
    daemon: &Daemon,
    name: &Name,
    same_source: impl Fn(&ImageSource) -> bool,
) -> Result<Option<Image>, ServiceError> {
    let images = daemon.store.list_images()?;
    match images.into_iter().find(|image| &image.name == name) {
        None => Ok(None),
        Some(image) if same_source(&image.source) => Ok(Some(image)),
        Some(_) => check_name_free(daemon, name).map(|()| None),
    }
}

/// The kernel an existing image boots with.
fn current_kernel(daemon: &Daemon, image: &Image) -> Result<Option<Kernel>, ServiceError> {
    let Some(id) = &image.kernel_id else {
        return Ok(None);
    };
    let kernels = daemon.store.list_kernels()?;
    Ok(kernels.into_iter().find(|kernel| &kernel.id == id))
}

/// Nothing to download; a `--kernel-ref` still applies.
fn up_to_date(
    daemon: &Daemon,
    image: &Image,
    kernel: Option<Kernel>,
    digest: String,
) -> Result<ImagePullResult, ServiceError> {
    let mut image = image.clone();
    let kernel_id = kernel.as_ref().map(|kernel| kernel.id.clone());
    if kernel_id != image.kernel_id {
        image.kernel_id = kernel_id;
        image.kernel_name = kernel.map(|kernel| kernel.name.to_string());
        daemon.store.update_image(&image)?;
    }
    tracing::info!(image = %image.name, %digest, "image is up to date");
    Ok(ImagePullResult {
        image,
        outcome: PullOutcome::UpToDate { digest },
    })
}

/// The hint for a pull that failed half-way.
const PULL_RESUMES: &str = "layers already downloaded stay cached; pulling again resumes";

/// Downloads and unpacks a resolved OCI image into `staging`.
async fn stage_oci(
    puller: &Puller,
    resolved: &banger_image::ResolvedImage,
    staging: &Staging,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<ImageSource, ServiceError> {
    let stage = events.stage("pull");
    let progress = images::forward_progress(events);
    let rootfs = staging.rootfs();
    let pulled = tokio::select! {
        pulled = puller.pull_resolved(resolved, &rootfs, UnpackOptions::default(), &progress) => pulled,
        () = cancel.cancelled() => return Err(ServiceError::Cancelled),
    }
    .unavailable("pulling the image")
    .or_hint(PULL_RESUMES)?;
    stage.done();
    super::image_import::report_skipped(events, pulled.skipped_special);
    Ok(pulled.metadata.source())
}

/// Downloads and unpacks a catalog image into `staging`.
async fn stage_catalog(
    daemon: &Daemon,
    entry: &banger_image::catalog::ImageEntry,
    http: &banger_image::HttpClient,
    staging: &Staging,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<ImageSource, ServiceError> {
    let store =
        banger_image::ArtifactStore::new(http.clone(), daemon.layout.cache_dir.join("catalog"));
    let stage = events.stage("download");
    let progress = images::forward_progress(events);
    let file = tokio::select! {
        file = store.download(&entry.name, &entry.artifact, &progress) => file,
        () = cancel.cancelled() => return Err(ServiceError::Cancelled),
    }
    .unavailable("downloading the image")?;
    stage.done();
    let stage = events.stage("unpack");
    let (entry_name, artifact, rootfs) =
        (entry.name.clone(), entry.artifact.clone(), staging.rootfs());
    blocking(move || {
        banger_image::extract_artifact(
            &entry_name,
            &artifact,
            &file,
            &rootfs,
            UnpackOptions::default(),
        )
    })
    .await?
    .unavailable("unpacking the image")?;
    stage.done();
    Ok(ImageSource::Catalog {
        name: entry.name.clone(),
        sha256: entry.artifact.sha256.clone(),
    })
}

/// What is known of an image whose rootfs tree is staged.
struct Staged {
    id: Id,
    name: Name,
    kernel: Option<Kernel>,
    source: ImageSource,
}

/// From a staged rootfs tree to a published image (guest files, ext4, work
/// seed, record), or to the files of `existing` replaced in place.
async fn finish(
    daemon: &Daemon,
    staging: &Staging,
    staged: Staged,
    existing: Option<Image>,
    digest: String,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<ImagePullResult, ServiceError> {
    let agent = find_agent()?;
    let size = build_image_files(
        daemon,
        &staging.rootfs(),
        &[],
        &staging.out(),
        &agent,
        events,
        cancel,
    )
    .await?
    .size;
    let image = Image {
        id: staged.id,
        name: staged.name,
        kernel_id: staged.kernel.as_ref().map(|kernel| kernel.id.clone()),
        kernel_name: staged.kernel.map(|kernel| kernel.name.to_string()),
        rootfs_path: Default::default(),
        work_seed_path: None,
        rootfs_size: size,
        source: staged.source,
        is_default: false,
        created_at: jiff::Timestamp::now(),
    };
    match existing {
        None => Ok(ImagePullResult {
            image: publish(daemon, &staging.out(), image).await?,
            outcome: PullOutcome::Pulled,
        }),
        Some(previous) => {
            let previous_digest = source_digest(&previous.source);
            let (image, vms) = replace(daemon, &staging.out(), &previous, image).await?;
            Ok(ImagePullResult {
                image,
                outcome: PullOutcome::Replaced {
                    previous_digest,
                    digest,
                    vms,
                },
            })
        }
    }
}

/// The digest a pulled image was made from.
fn source_digest(source: &ImageSource) -> String {
    match source {
        ImageSource::Pull {
            manifest_digest, ..
        } => manifest_digest.clone(),
        ImageSource::Catalog { sha256, .. } => format!("sha256:{sha256}"),
        other => other.kind().to_owned(),
    }
}

/// `kernel.pull`
pub async fn pull_kernel(
    daemon: &Daemon,
    params: KernelPullParams,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<Kernel, ServiceError> {
    let http = images::http()?;
    let catalog = images::catalog(daemon, &http).await?;
    let kernels = daemon.store.list_kernels()?;
    if kernels
        .iter()
        .any(|kernel| kernel.name.as_str() == params.name)
    {
        return Err(ServiceError::already_exists(format!(
            "kernel {} is already here",
            params.name
        )));
    }
    ensure_catalog_kernel(daemon, &catalog, &params.name, &http, events, cancel).await
}

/// The catalog kernel `name`, downloaded and registered unless present.
async fn ensure_catalog_kernel(
    daemon: &Daemon,
    catalog: &banger_image::Catalog,
    name: &str,
    http: &banger_image::HttpClient,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<Kernel, ServiceError> {
    let kernels = daemon.store.list_kernels()?;
    if let Some(kernel) = kernels
        .into_iter()
        .find(|kernel| kernel.name.as_str() == name)
    {
        return Ok(kernel);
    }
    let entry = catalog.kernel(name).cloned().ok_or_else(|| {
        ServiceError::not_found(format!("the catalog has no kernel named {name:?}"))
            .with_hint("`banger kernel import DIR --name N` registers a kernel of your own; `banger kernel bootstrap` builds one from Debian's packages")
    })?;
    let kernel_name = Name::parse(&entry.name)?;
    let id = Id::generate();
    let dest = daemon.layout.kernel_dir(&id);
    let store =
        banger_image::ArtifactStore::new(http.clone(), daemon.layout.cache_dir.join("catalog"));
    let stage = events.stage("kernel");
    let progress = images::forward_progress(events);
    let files = tokio::select! {
        files = banger_image::install_kernel(&store, &entry, &dest, &progress) => files,
        () = cancel.cancelled() => return Err(ServiceError::Cancelled),
    }
    .unavailable("downloading the kernel")?;
    stage.done();
    let kernel = Kernel {
        id,
        name: kernel_name,
        vmlinux_path: files.vmlinux,
        initrd_path: files.initrd,
        version: entry.version.clone(),
        source: KernelSource::Catalog {
            name: entry.name.clone(),
            sha256: entry.artifact.sha256.clone(),
        },
        created_at: jiff::Timestamp::now(),
    };
    if let Err(err) = daemon.store.insert_kernel(&kernel) {
        let _ = fs_err::remove_dir_all(&dest);
        return Err(err.into());
    }
    Ok(kernel)
}

pub fn find_agent() -> Result<std::path::PathBuf, ServiceError> {
    binaries::find(binaries::AGENT).unmet()
}
