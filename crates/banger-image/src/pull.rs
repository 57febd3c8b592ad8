//! `image pull`: resolve a reference, download its layers into the cache
//! (concurrently, resumably, verified), and apply them in order to a staging
//! directory — layer N is applied while later layers are still downloading.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;

use crate::cache::{Begin, BlobCache, CommitError, PartialBlob};
use crate::digest::Digest;
use crate::http::{HttpClient, HttpError, Timeouts, TransportPolicy};
use crate::manifest::{Descriptor, ImageConfig, ImageManifest, Platform};
use crate::progress::{BlobState, Overall, Progress, ProgressEvent};
use crate::reference::Reference;
use crate::registry::{FetchBlobError, RegistryClient, ResolveError};
use crate::unpack::{ContentSize, LayerStats, UnpackError, UnpackOptions, Unpacker};

/// Configs larger than this are refused.
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;
/// Bytes gathered before a disk write (and a progress event).
const WRITE_BATCH: usize = 1024 * 1024;

/// How a [`Puller`] is set up.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The OCI cache directory (`Layout::oci_cache()`).
    pub cache_dir: PathBuf,
    pub policy: TransportPolicy,
    pub platform: Platform,
    /// Layers downloaded at once.
    pub concurrency: usize,
    /// Retries of a failed blob transfer (each resumes where it stopped).
    pub retries: u32,
    pub timeouts: Timeouts,
}

impl PullOptions {
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            policy: TransportPolicy::default(),
            platform: Platform::host(),
            concurrency: 4,
            retries: 3,
            timeouts: Timeouts::default(),
        }
    }
}

/// A reference resolved to one image manifest and its config.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub reference: Reference,
    /// Digest of the image manifest (the platform's, for an index).
    pub manifest_digest: Digest,
    /// Digest of the index, when the reference named one.
    pub index_digest: Option<Digest>,
    pub manifest: ImageManifest,
    pub config: ImageConfig,
}

impl ResolvedImage {
    pub fn layers(&self) -> &[Descriptor] {
        &self.manifest.layers
    }

    /// Compressed bytes of all layers.
    pub fn compressed_size(&self) -> u64 {
        self.manifest.layers.iter().map(|layer| layer.size).sum()
    }
}

/// What the image record keeps about a pulled image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageMetadata {
    /// The reference as normalised (`docker.io/library/debian:bookworm`).
    pub reference: String,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub layer_digests: Vec<Digest>,
    pub platform: String,
    pub config: ImageConfig,
    /// Sum of the layer blobs.
    pub compressed_size: u64,
    /// Sum of the uncompressed layer tarballs.
    pub uncompressed_size: u64,
}

impl ImageMetadata {
    /// The store's record of where the image came from.
    pub fn source(&self) -> banger_model::image::ImageSource {
        banger_model::image::ImageSource::Pull {
            reference: self.reference.clone(),
            manifest_digest: self.manifest_digest.to_string(),
            layer_digests: self.layer_digests.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Transfer counts of one pull.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PullStats {
    /// Layer blobs that were already cached.
    pub blobs_cached: usize,
    /// Layer blobs that were downloaded (fully or the rest of a partial
    /// file). The config is small and fetched by [`Puller::resolve`].
    pub blobs_downloaded: usize,
    /// Bytes received from the network.
    pub bytes_downloaded: u64,
    /// Bytes a resumed download did not need to fetch again.
    pub bytes_resumed: u64,
}

/// A pulled image, staged.
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub metadata: ImageMetadata,
    /// The staging directory holding the root filesystem.
    pub staging: PathBuf,
    pub content: ContentSize,
    pub stats: PullStats,
    /// Device nodes and FIFOs in the layers, skipped (never created).
    pub skipped_special: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("cannot set up the registry client")]
    Client(#[source] HttpError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("pull of {reference} failed")]
    Blob {
        reference: String,
        #[source]
        source: Box<FetchBlobError>,
    },
    #[error("applying the layers of {reference} failed")]
    Unpack {
        reference: String,
        #[source]
        source: UnpackError,
    },
    #[error("the unpack task of {reference} panicked")]
    Panicked { reference: String },
}

/// Pulls images into staging directories. Share it (it is `Sync`).
#[derive(Debug)]
pub struct Puller {
    registry: RegistryClient,
    cache: BlobCache,
    concurrency: usize,
    retries: u32,
}

/// One blob's download result.
#[derive(Debug, Clone, Copy, Default)]
struct BlobOutcome {
    cached: bool,
    downloaded: u64,
    resumed: u64,
}

/// Sets a flag when dropped: tells a blocking unpack to stop when the pull
/// future goes away.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Puller {
    pub fn new(options: PullOptions) -> Result<Self, PullError> {
        let http = HttpClient::new(options.policy, options.timeouts).map_err(PullError::Client)?;
        Ok(Self {
            registry: RegistryClient::new(http, options.platform),
            cache: BlobCache::new(options.cache_dir),
            concurrency: options.concurrency.max(1),
            retries: options.retries,
        })
    }

    pub fn cache(&self) -> &BlobCache {
        &self.cache
    }

    pub fn registry(&self) -> &RegistryClient {
        &self.registry
    }

    /// Resolves `reference` to the manifest for this puller's platform and
    /// fetches its config (through the cache).
    pub async fn resolve(&self, reference: &Reference) -> Result<ResolvedImage, ResolveError> {
        let fetched = self.registry.fetch_image_manifest(reference).await?;
        let manifest = fetched.manifest;
        let config_bytes = self.config_bytes(reference, &manifest.config).await?;
        let config =
            ImageConfig::parse(&config_bytes).map_err(|source| ResolveError::ConfigParse {
                reference: reference.to_string(),
                source,
            })?;
        Ok(ResolvedImage {
            reference: reference.clone(),
            manifest_digest: fetched.manifest_digest,
            index_digest: fetched.index_digest,
            manifest,
            config,
        })
    }

    async fn config_bytes(
        &self,
        reference: &Reference,
        config: &Descriptor,
    ) -> Result<Vec<u8>, ResolveError> {
        let config_error = |source: FetchBlobError| ResolveError::Config {
            reference: reference.to_string(),
            source: Box::new(source),
        };
        let cache_error = |path: PathBuf, source| {
            config_error(FetchBlobError::Cache {
                digest: config.digest.clone(),
                path,
                source,
            })
        };
        if config.size > MAX_CONFIG_BYTES {
            return Err(config_error(FetchBlobError::TooLong {
                digest: config.digest.clone(),
                expected: MAX_CONFIG_BYTES,
            }));
        }
        let cache = self.cache.clone();
        let digest = config.digest.clone();
        let cached =
            tokio::task::spawn_blocking(move || cache.read_verified(&digest, MAX_CONFIG_BYTES))
                .await
                .expect("reading a cached config does not panic")
                .map_err(|source| cache_error(self.cache.blob_path(&config.digest), source))?;
        if let Some(bytes) = cached {
            return Ok(bytes);
        }
        let mut blob = self
            .registry
            .open_blob(reference, &config.digest, 0)
            .await
            .map_err(config_error)?;
        let bytes = self
            .registry
            .http()
            .read_body(&blob.url, &mut blob.body, config.size)
            .await
            .map_err(|err| {
                config_error(FetchBlobError::Request {
                    repository: reference.repository().to_owned(),
                    digest: config.digest.clone(),
                    source: err.into(),
                })
            })?;
        let actual = Digest::of(&bytes);
        if actual != config.digest {
            return Err(config_error(FetchBlobError::DigestMismatch {
                digest: config.digest.clone(),
                actual,
            }));
        }
        let cache = self.cache.clone();
        let digest = config.digest.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(err) = cache.store(&digest, &bytes) {
                tracing::warn!(error = %err, "cannot cache an image config");
            }
            bytes
        })
        .await
        .map_err(|_| {
            config_error(FetchBlobError::Cache {
                digest: config.digest.clone(),
                path: self.cache.blob_path(&config.digest),
                source: std::io::Error::other("the cache writer panicked"),
            })
        })
    }

    /// Downloads every layer of `image` into the cache.
    pub async fn fetch_layers(
        &self,
        image: &ResolvedImage,
        progress: &dyn Progress,
    ) -> Result<PullStats, PullError> {
        let overall = self.announce(image, progress);
        let mut stats = PullStats::default();
        // Owned descriptors keep the closure free of higher-ranked
        // lifetimes, which would make this future fail `Send` inference.
        let (image_ref, overall) = (&image.reference, &overall);
        let mut downloads = futures::stream::iter(unique_layers(image))
            .map(move |layer| async move {
                self.download_blob(image_ref, &layer, progress, overall)
                    .await
            })
            .buffer_unordered(self.concurrency);
        while let Some((_, result)) = downloads.next().await {
            let outcome = result.map_err(|source| PullError::Blob {
                reference: image.reference.to_string(),
                source: Box::new(source),
            })?;
            stats.add(outcome);
        }
        Ok(stats)
    }

    fn announce(&self, image: &ResolvedImage, progress: &dyn Progress) -> Overall {
        let layers = unique_layers(image);
        let total: u64 = layers.iter().map(|layer| layer.size).sum();
        let cached: u64 = layers
            .iter()
            .filter(|layer| self.cache.contains(&layer.digest, layer.size))
            .map(|layer| layer.size)
            .sum();
        progress.event(&ProgressEvent::Resolved {
            reference: image.reference.to_string(),
            manifest_digest: image.manifest_digest.to_string(),
            layers: image.manifest.layers.len(),
            total_bytes: total,
            cached_bytes: cached,
        });
        Overall::new(total)
    }

    /// Pulls `reference` into the new directory `staging`: downloads and
    /// applies layers concurrently. On failure (or when the returned future
    /// is dropped) the staging directory is removed; complete, verified
    /// blobs stay cached and partial ones are resumed by the next pull.
    pub async fn pull(
        &self,
        reference: &Reference,
        staging: &Path,
        options: UnpackOptions,
        progress: &dyn Progress,
    ) -> Result<PulledImage, PullError> {
        let image = self.resolve(reference).await?;
        self.pull_resolved(&image, staging, options, progress).await
    }

    /// [`Puller::pull`] for an already resolved image.
    pub async fn pull_resolved(
        &self,
        image: &ResolvedImage,
        staging: &Path,
        options: UnpackOptions,
        progress: &dyn Progress,
    ) -> Result<PulledImage, PullError> {
        let reference = image.reference.to_string();
        let unpack_error = |source| PullError::Unpack {
            reference: reference.clone(),
            source,
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let _cancel_guard = CancelOnDrop(cancel.clone());
        let staging_owned = staging.to_owned();
        let cancel_for_unpacker = cancel.clone();
        let mut unpacker = tokio::task::spawn_blocking(move || {
            let mut unpacker = Unpacker::create(&staging_owned, options)?;
            unpacker.set_cancel(cancel_for_unpacker);
            Ok::<_, UnpackError>(unpacker)
        })
        .await
        .map_err(|_| PullError::Panicked {
            reference: reference.clone(),
        })?
        .map_err(unpack_error)?;

        let overall = self.announce(image, progress);
        let layers = &image.manifest.layers;
        let mut stats = PullStats::default();
        let mut uncompressed: u64 = 0;
        let mut ready: HashSet<Digest> = HashSet::new();
        let mut next = 0;
        // Owned descriptors keep the closure free of higher-ranked
        // lifetimes, which would make this future fail `Send` inference.
        let (image_ref, overall) = (&image.reference, &overall);
        let mut downloads = futures::stream::iter(unique_layers(image))
            .map(move |layer| async move {
                self.download_blob(image_ref, &layer, progress, overall)
                    .await
            })
            .buffer_unordered(self.concurrency);
        let mut downloads_done = false;

        let result: Result<(ContentSize, u64), PullError> = async {
            while next < layers.len() {
                let layer = &layers[next];
                if !ready.contains(&layer.digest) {
                    match downloads.next().await {
                        Some((digest, Ok(outcome))) => {
                            stats.add(outcome);
                            ready.insert(digest);
                        }
                        Some((_, Err(source))) => {
                            discard(unpacker).await;
                            return Err(PullError::Blob {
                                reference: reference.clone(),
                                source: Box::new(source),
                            });
                        }
                        None => unreachable!("every layer is downloaded before the stream ends"),
                    }
                    continue;
                }
                progress.event(&ProgressEvent::LayerApplying {
                    digest: layer.digest.to_string(),
                    index: next,
                    count: layers.len(),
                });
                let blob = self.cache.blob_path(&layer.digest);
                let digest = layer.digest.clone();
                let mut moved = unpacker;
                let mut apply = tokio::task::spawn_blocking(move || {
                    let result = moved.apply_blob(&blob, &digest);
                    (moved, result)
                });
                // Keep downloading while this layer is applied.
                let applied = loop {
                    tokio::select! {
                        joined = &mut apply => break Ok(joined),
                        item = downloads.next(), if !downloads_done => match item {
                            Some((digest, Ok(outcome))) => {
                                stats.add(outcome);
                                ready.insert(digest);
                            }
                            Some((_, Err(source))) => break Err(source),
                            None => downloads_done = true,
                        },
                    }
                };
                let joined = match applied {
                    Ok(joined) => joined,
                    Err(source) => {
                        // Stop the layer being applied, then clean up.
                        cancel.store(true, Ordering::Relaxed);
                        if let Ok((moved, _)) = apply.await {
                            discard(moved).await;
                        }
                        return Err(PullError::Blob {
                            reference: reference.clone(),
                            source: Box::new(source),
                        });
                    }
                };
                let (moved, result) = joined.map_err(|_| PullError::Panicked {
                    reference: reference.clone(),
                })?;
                unpacker = moved;
                let layer_stats: LayerStats = match result {
                    Ok(layer_stats) => layer_stats,
                    Err(err) => {
                        discard(unpacker).await;
                        return Err(unpack_error(err));
                    }
                };
                uncompressed += layer_stats.tar_bytes;
                progress.event(&ProgressEvent::LayerApplied {
                    digest: layer.digest.to_string(),
                    index: next,
                    count: layers.len(),
                    entries: layer_stats.entries,
                    bytes: layer_stats.file_bytes,
                });
                next += 1;
            }
            let skipped = unpacker.skipped_special();
            let content = tokio::task::spawn_blocking(move || unpacker.finish())
                .await
                .map_err(|_| PullError::Panicked {
                    reference: reference.clone(),
                })?
                .map_err(unpack_error)?;
            Ok((content, skipped))
        }
        .await;
        let (content, skipped_special) = result?;
        let metadata = ImageMetadata {
            reference: reference.clone(),
            manifest_digest: image.manifest_digest.clone(),
            config_digest: image.manifest.config.digest.clone(),
            layer_digests: layers.iter().map(|layer| layer.digest.clone()).collect(),
            platform: self.registry.platform().to_string(),
            config: image.config.clone(),
            compressed_size: image.compressed_size(),
            uncompressed_size: uncompressed,
        };
        Ok(PulledImage {
            metadata,
            staging: staging.to_owned(),
            content,
            stats,
            skipped_special,
        })
    }

    /// Downloads one blob into the cache, resuming a partial download and
    /// retrying transient failures.
    async fn download_blob(
        &self,
        reference: &Reference,
        layer: &Descriptor,
        progress: &dyn Progress,
        overall: &Overall,
    ) -> (Digest, Result<BlobOutcome, FetchBlobError>) {
        let result = self
            .download_blob_inner(reference, layer, progress, overall)
            .await;
        (layer.digest.clone(), result)
    }

    async fn download_blob_inner(
        &self,
        reference: &Reference,
        layer: &Descriptor,
        progress: &dyn Progress,
        overall: &Overall,
    ) -> Result<BlobOutcome, FetchBlobError> {
        let digest = &layer.digest;
        let size = layer.size;
        let event = |state: BlobState, done: u64| {
            progress.event(&ProgressEvent::Blob {
                digest: digest.to_string(),
                state,
                done,
                total: size,
                overall_done: overall.done(),
                overall_total: overall.total(),
            });
        };
        let cache_error = |path: PathBuf| {
            move |source| FetchBlobError::Cache {
                digest: digest.clone(),
                path,
                source,
            }
        };
        if self.cache.contains(digest, size) {
            overall.add(size);
            event(BlobState::Cached, size);
            return Ok(BlobOutcome {
                cached: true,
                ..BlobOutcome::default()
            });
        }
        let cache = self.cache.clone();
        let owned = digest.clone();
        let begin = tokio::task::spawn_blocking(move || cache.begin(&owned, size))
            .await
            .expect("opening a partial blob does not panic")
            .map_err(cache_error(self.cache.blob_path(digest)))?;
        let mut partial = match begin {
            Begin::Present => {
                overall.add(size);
                event(BlobState::Cached, size);
                return Ok(BlobOutcome {
                    cached: true,
                    ..BlobOutcome::default()
                });
            }
            Begin::Partial(partial) => partial,
        };
        let resumed = partial.len();
        overall.add(resumed);
        event(BlobState::Started, resumed);
        let mut outcome = BlobOutcome {
            cached: false,
            downloaded: 0,
            resumed,
        };
        let mut attempt = 0;
        loop {
            match self
                .transfer(reference, layer, partial, &mut outcome, &event, overall)
                .await
            {
                Ok(done) => {
                    partial = done;
                    break;
                }
                Err((returned, err)) => {
                    let Some(returned) = returned else {
                        return Err(err);
                    };
                    partial = returned;
                    if !err.is_transient() || attempt >= self.retries {
                        return Err(err);
                    }
                    attempt += 1;
                    tracing::warn!(digest = %digest, attempt, error = %err, "blob transfer failed; resuming");
                    event(BlobState::Retrying, partial.len());
                    tokio::time::sleep(Duration::from_millis(250 << attempt.min(4))).await;
                }
            }
        }
        let path = partial.path().to_owned();
        tokio::task::spawn_blocking(move || partial.commit(size))
            .await
            .expect("committing a blob does not panic")
            .map_err(|err| match err {
                CommitError::Digest { digest, actual } => {
                    FetchBlobError::DigestMismatch { digest, actual }
                }
                CommitError::Size {
                    digest,
                    expected,
                    actual,
                } => FetchBlobError::Truncated {
                    digest,
                    received: actual,
                    expected,
                },
                CommitError::Io { source, .. } => cache_error(path)(source),
            })?;
        event(BlobState::Verified, size);
        Ok(outcome)
    }

    /// One transfer attempt from the current end of `partial`. On error,
    /// returns the partial blob (when it is still usable) with the error.
    #[allow(clippy::type_complexity)]
    async fn transfer(
        &self,
        reference: &Reference,
        layer: &Descriptor,
        mut partial: PartialBlob,
        outcome: &mut BlobOutcome,
        event: &(dyn Fn(BlobState, u64) + Sync),
        overall: &Overall,
    ) -> Result<PartialBlob, (Option<PartialBlob>, FetchBlobError)> {
        let digest = &layer.digest;
        let size = layer.size;
        let offset = partial.len();
        if offset == size {
            return Ok(partial);
        }
        let mut blob = match self.registry.open_blob(reference, digest, offset).await {
            Ok(blob) => blob,
            Err(err) => return Err((Some(partial), err)),
        };
        if blob.offset != offset {
            // The server ignored the range: start over.
            let dropped = partial.len();
            let (returned, result) = blocking(partial, |partial| partial.reset()).await;
            partial = returned;
            if let Err(source) = result {
                return Err((None, cache_io(digest, partial.path(), source)));
            }
            overall.sub(dropped);
            outcome.resumed = 0;
        }
        let mut batch: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
        loop {
            let chunk = match self
                .registry
                .http()
                .next_chunk(&blob.url, &mut blob.body)
                .await
            {
                Ok(chunk) => chunk,
                Err(err) => {
                    let (returned, result) = flush(partial, batch).await;
                    if let Err(source) = result {
                        return Err((None, cache_io(digest, returned.path(), source)));
                    }
                    return Err((
                        Some(returned),
                        FetchBlobError::Request {
                            repository: reference.repository().to_owned(),
                            digest: digest.clone(),
                            source: err.into(),
                        },
                    ));
                }
            };
            let Some(chunk) = chunk else { break };
            if partial.len() + batch.len() as u64 + chunk.len() as u64 > size {
                partial.discard();
                return Err((
                    None,
                    FetchBlobError::TooLong {
                        digest: digest.clone(),
                        expected: size,
                    },
                ));
            }
            outcome.downloaded += chunk.len() as u64;
            overall.add(chunk.len() as u64);
            batch.extend_from_slice(&chunk);
            if batch.len() >= WRITE_BATCH {
                let (returned, result) = flush(partial, std::mem::take(&mut batch)).await;
                partial = returned;
                if let Err(source) = result {
                    return Err((None, cache_io(digest, partial.path(), source)));
                }
                batch = Vec::with_capacity(WRITE_BATCH);
                event(BlobState::Downloading, partial.len());
            }
        }
        let (returned, result) = flush(partial, batch).await;
        partial = returned;
        if let Err(source) = result {
            return Err((None, cache_io(digest, partial.path(), source)));
        }
        let received = partial.len();
        if received < size {
            return Err((
                Some(partial),
                FetchBlobError::Truncated {
                    digest: digest.clone(),
                    received,
                    expected: size,
                },
            ));
        }
        event(BlobState::Downloading, partial.len());
        Ok(partial)
    }
}

impl PullStats {
    fn add(&mut self, outcome: BlobOutcome) {
        if outcome.cached {
            self.blobs_cached += 1;
        } else {
            self.blobs_downloaded += 1;
        }
        self.bytes_downloaded += outcome.downloaded;
        self.bytes_resumed += outcome.resumed;
    }
}

/// Each distinct layer once, in manifest order.
fn unique_layers(image: &ResolvedImage) -> Vec<Descriptor> {
    let mut seen = HashSet::new();
    image
        .manifest
        .layers
        .iter()
        .filter(|layer| seen.insert(layer.digest.clone()))
        .cloned()
        .collect()
}

fn cache_io(digest: &Digest, path: &Path, source: std::io::Error) -> FetchBlobError {
    FetchBlobError::Cache {
        digest: digest.clone(),
        path: path.to_owned(),
        source,
    }
}

/// Runs `op` on `partial` on a blocking thread and gives it back.
async fn blocking<T: Send + 'static>(
    partial: PartialBlob,
    op: impl FnOnce(&mut PartialBlob) -> T + Send + 'static,
) -> (PartialBlob, T) {
    tokio::task::spawn_blocking(move || {
        let mut partial = partial;
        let result = op(&mut partial);
        (partial, result)
    })
    .await
    .expect("blob file operations do not panic")
}

async fn flush(partial: PartialBlob, batch: Vec<u8>) -> (PartialBlob, std::io::Result<()>) {
    if batch.is_empty() {
        return (partial, Ok(()));
    }
    blocking(partial, move |partial| partial.append(&batch)).await
}

/// Drops an unpacker (which deletes its staging directory) off the runtime.
async fn discard(unpacker: Unpacker) {
    let _ = tokio::task::spawn_blocking(move || drop(unpacker)).await;
}
