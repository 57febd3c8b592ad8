//! `image.pull`: a catalog image or any OCI image becomes a bootable image —
//! layers (cached by digest) unpacked safely into staging, banger's guest
//! files added, ext4 built, published. `kernel.pull`: a catalog kernel.

use banger_image::{ImageSourceRef, PullOptions, Puller, Reference, UnpackOptions};
use banger_model::image::{Image, ImageSource};
use banger_model::kernel::{Kernel, KernelSource};
use banger_model::{Id, Name};
use banger_rpc::request::{ImagePullParams, KernelPullParams};
use banger_rpc::{ErrorCode, RpcError};
use tokio_util::sync::CancellationToken;

use super::image_import::{build_image_files, check_name_free, publish, resolve_kernel};
use crate::binaries;
use crate::daemon::{Daemon, error_chain, store_error};
use crate::images::{self, Staging};
use crate::server::EventSink;

pub async fn pull(
    daemon: &Daemon,
    params: ImagePullParams,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<Image, RpcError> {
    let http = images::http()?;
    let catalog = images::catalog(daemon, &http).await?;
    let source = banger_image::resolve_image(&catalog, &params.reference).map_err(|err| {
        RpcError::invalid(format!(
            "{:?} is neither a catalog image nor an image reference: {err}",
            params.reference
        ))
    })?;
    match source {
        ImageSourceRef::Oci(reference) => {
            let name = match &params.name {
                Some(name) => {
                    Name::parse(name).map_err(|err| RpcError::invalid(err.to_string()))?
                }
                None => images::derive_name(&reference.to_string())?,
            };
            check_name_free(daemon, &name)?;
            let kernel = resolve_kernel(daemon, params.kernel_ref.as_deref())?;
            pull_oci(daemon, &reference, name, kernel, events, cancel).await
        }
        ImageSourceRef::Catalog(entry) => {
            let name = match &params.name {
                Some(name) => {
                    Name::parse(name).map_err(|err| RpcError::invalid(err.to_string()))?
                }
                None => {
                    Name::parse(&entry.name).map_err(|err| RpcError::invalid(err.to_string()))?
                }
            };
            check_name_free(daemon, &name)?;
            let kernel = match params.kernel_ref.as_deref() {
                Some(reference) => resolve_kernel(daemon, Some(reference))?,
                None => Some(
                    ensure_catalog_kernel(daemon, &catalog, &entry.kernel, &http, events, cancel)
                        .await?,
                ),
            };
            pull_catalog(daemon, &entry, name, kernel, &http, events, cancel).await
        }
    }
}

async fn pull_oci(
    daemon: &Daemon,
    reference: &Reference,
    name: Name,
    kernel: Option<Kernel>,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<Image, RpcError> {
    let id = Id::generate();
    let staging = Staging::new(daemon, &id)?;
    let puller = Puller::new(PullOptions::new(daemon.layout.oci_cache()))
        .map_err(|err| RpcError::internal(format!("{err}: {}", error_chain(&err))))?;
    let options = UnpackOptions::default();
    let stage = events.stage("pull");
    let progress = images::forward_progress(events);
    let rootfs = staging.rootfs();
    let pulled = tokio::select! {
        pulled = puller.pull(reference, &rootfs, options, &progress) => pulled,
        () = cancel.cancelled() => return Err(RpcError::cancelled()),
    }
    .map_err(|err| {
        RpcError::new(
            ErrorCode::FailedPrecondition,
            format!("{err}: {}", error_chain(&err)),
        )
        .with_hint("layers already downloaded stay cached; pulling again resumes")
    })?;
    stage.done();
    super::image_import::report_skipped(events, pulled.skipped_special);
    let source = pulled.metadata.source();
    finish(
        daemon,
        &staging,
        Staged {
            id,
            name,
            kernel,
            source,
        },
        events,
        cancel,
    )
    .await
}

async fn pull_catalog(
    daemon: &Daemon,
    entry: &banger_image::catalog::ImageEntry,
    name: Name,
    kernel: Option<Kernel>,
    http: &banger_image::HttpClient,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<Image, RpcError> {
    let id = Id::generate();
    let staging = Staging::new(daemon, &id)?;
    let store =
        banger_image::ArtifactStore::new(http.clone(), daemon.layout.cache_dir.join("catalog"));
    let stage = events.stage("download");
    let progress = images::forward_progress(events);
    let file = tokio::select! {
        file = store.download(&entry.name, &entry.artifact, &progress) => file,
        () = cancel.cancelled() => return Err(RpcError::cancelled()),
    }
    .map_err(|err| {
        RpcError::new(
            ErrorCode::FailedPrecondition,
            format!("{err}: {}", error_chain(&err)),
        )
    })?;
    stage.done();
    let stage = events.stage("unpack");
    let (entry_name, artifact, rootfs) =
        (entry.name.clone(), entry.artifact.clone(), staging.rootfs());
    let options = UnpackOptions::default();
    tokio::task::spawn_blocking(move || {
        banger_image::extract_artifact(&entry_name, &artifact, &file, &rootfs, options)
    })
    .await
    .map_err(|err| RpcError::internal(err.to_string()))?
    .map_err(|err| {
        RpcError::new(
            ErrorCode::FailedPrecondition,
            format!("{err}: {}", error_chain(&err)),
        )
    })?;
    stage.done();
    let source = ImageSource::Catalog {
        name: entry.name.clone(),
        sha256: entry.artifact.sha256.clone(),
    };
    finish(
        daemon,
        &staging,
        Staged {
            id,
            name,
            kernel,
            source,
        },
        events,
        cancel,
    )
    .await
}

/// What is known of an image whose rootfs tree is staged.
struct Staged {
    id: Id,
    name: Name,
    kernel: Option<Kernel>,
    source: ImageSource,
}

/// From a staged rootfs tree to a published image: guest files, ext4,
/// work seed, record.
async fn finish(
    daemon: &Daemon,
    staging: &Staging,
    staged: Staged,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<Image, RpcError> {
    let agent = find_agent()?;
    let size = build_image_files(
        daemon,
        &staging.rootfs(),
        &staging.out(),
        &agent,
        events,
        cancel,
    )
    .await?;
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
    publish(daemon, &staging.out(), image).await
}

/// `kernel.pull`
pub async fn pull_kernel(
    daemon: &Daemon,
    params: KernelPullParams,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<Kernel, RpcError> {
    let http = images::http()?;
    let catalog = images::catalog(daemon, &http).await?;
    let kernels = daemon.store.list_kernels().map_err(store_error)?;
    if kernels
        .iter()
        .any(|kernel| kernel.name.as_str() == params.name)
    {
        return Err(RpcError::new(
            ErrorCode::AlreadyExists,
            format!("kernel {} is already here", params.name),
        ));
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
) -> Result<Kernel, RpcError> {
    let kernels = daemon.store.list_kernels().map_err(store_error)?;
    if let Some(kernel) = kernels
        .into_iter()
        .find(|kernel| kernel.name.as_str() == name)
    {
        return Ok(kernel);
    }
    let entry = catalog.kernel(name).cloned().ok_or_else(|| {
        RpcError::not_found(format!("the catalog has no kernel named {name:?}"))
            .with_hint("`banger kernel import DIR --name N` registers a kernel of your own; `banger kernel bootstrap` builds one from Debian's packages")
    })?;
    let kernel_name = Name::parse(&entry.name).map_err(|err| RpcError::invalid(err.to_string()))?;
    let id = Id::generate();
    let dest = daemon.layout.kernel_dir(&id);
    let store =
        banger_image::ArtifactStore::new(http.clone(), daemon.layout.cache_dir.join("catalog"));
    let stage = events.stage("kernel");
    let progress = images::forward_progress(events);
    let files = tokio::select! {
        files = banger_image::install_kernel(&store, &entry, &dest, &progress) => files,
        () = cancel.cancelled() => return Err(RpcError::cancelled()),
    }
    .map_err(|err| {
        RpcError::new(
            ErrorCode::FailedPrecondition,
            format!("{err}: {}", error_chain(&err)),
        )
    })?;
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
        return Err(store_error(err));
    }
    Ok(kernel)
}

pub fn find_agent() -> Result<std::path::PathBuf, RpcError> {
    binaries::find(binaries::AGENT)
        .map_err(|err| RpcError::new(ErrorCode::FailedPrecondition, err.to_string()))
}
