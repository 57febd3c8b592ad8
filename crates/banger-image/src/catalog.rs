//! Catalogs of kernels and golden images.
//!
//! A catalog is JSON: each entry names one `.tar.zst` artifact by URL,
//! sha256 and size. The catalog compiled into the binary
//! ([`EMBEDDED_CATALOG`]) is the default; `catalog_url` in the config
//! replaces it with one fetched over the network (plain http only from
//! loopback, so tests can serve one from 127.0.0.1). The embedded catalog
//! currently lists nothing: banger has no artifact hosting, and the default
//! image and kernel are bootstrapped locally instead.
//!
//! Artifacts are streamed to a temporary file with progress, checked
//! against the catalog's size and sha256 before anything is published (a
//! mismatch deletes the download and names the artifact), cached by sha256,
//! extracted with the same hardened unpacker as OCI layers (and hashed again
//! while they are read), and published by renaming a staging directory.
//!
//! Artifact layouts: a kernel archive holds `vmlinux` and optionally
//! `initrd.img` at its top level; an image archive holds the root
//! filesystem tree itself.
//!
//! Names given to `image pull` resolve against the catalog first and are
//! parsed as OCI references otherwise ([`resolve_image`]).

use std::collections::HashSet;
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use hyper::header::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hasher, HashingReader};
use crate::http::{HttpClient, HttpError};
use crate::progress::{BlobState, Progress, ProgressEvent};
use crate::reference::{ParseReferenceError, Reference};
use crate::unpack::{ContentSize, UnpackError, UnpackOptions, Unpacker};

/// The catalog compiled into banger.
pub const EMBEDDED_CATALOG: &str = include_str!("../catalog.json");

/// Fetched catalogs larger than this are refused.
const MAX_CATALOG_BYTES: u64 = 4 * 1024 * 1024;
const WRITE_BATCH: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub url: String,
    /// 64 lowercase hex digits.
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelEntry {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `x86_64` or `aarch64`.
    pub arch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub artifact: Artifact,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEntry {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub arch: String,
    /// The catalog kernel this image boots with.
    pub kernel: String,
    pub artifact: Artifact,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub version: u32,
    #[serde(default)]
    pub kernels: Vec<KernelEntry>,
    #[serde(default)]
    pub images: Vec<ImageEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadCatalogError {
    #[error("cannot fetch the catalog from {url}")]
    Fetch {
        url: String,
        #[source]
        source: HttpError,
    },
    #[error("catalog {origin} is not valid catalog JSON")]
    Json {
        origin: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("catalog {origin}: {problem}")]
    Invalid { origin: String, problem: String },
}

#[derive(Debug, thiserror::Error)]
pub enum FetchArtifactError {
    #[error("cannot download catalog artifact {name} from {url}")]
    Http {
        name: String,
        url: String,
        #[source]
        source: HttpError,
    },
    #[error(
        "catalog artifact {name} ({url}) has sha256 {actual}, but the catalog says {expected}; the download was deleted"
    )]
    Sha256 {
        name: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error(
        "catalog artifact {name} ({url}) is {actual} bytes, but the catalog says {expected}; the download was deleted"
    )]
    Size {
        name: String,
        url: String,
        expected: u64,
        actual: u64,
    },
    #[error("catalog artifact {name}: cannot write {path}")]
    Io {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractArtifactError {
    #[error("cannot extract catalog artifact {name}")]
    Unpack {
        name: String,
        #[source]
        source: UnpackError,
    },
    #[error(
        "cached catalog artifact {name} ({path}) no longer has sha256 {expected}; it was deleted, pull again"
    )]
    Corrupt {
        name: String,
        path: PathBuf,
        expected: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot publish {staging} as {dest}: {dest} already exists")]
    Exists { staging: PathBuf, dest: PathBuf },
    #[error("cannot publish {staging} as {dest}")]
    Io {
        staging: PathBuf,
        dest: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum InstallKernelError {
    #[error(transparent)]
    Fetch(Box<FetchArtifactError>),
    #[error(transparent)]
    Extract(#[from] ExtractArtifactError),
    #[error("catalog kernel {name} has no regular file {file} at the top of its archive")]
    Missing { name: String, file: &'static str },
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("the extraction of catalog kernel {name} panicked")]
    Panicked { name: String },
}

impl From<FetchArtifactError> for InstallKernelError {
    fn from(err: FetchArtifactError) -> Self {
        Self::Fetch(Box::new(err))
    }
}

impl Catalog {
    /// The catalog compiled into banger.
    pub fn embedded() -> Self {
        Self::parse(EMBEDDED_CATALOG.as_bytes(), "(embedded)")
            .expect("the embedded catalog is valid (unit-tested)")
    }

    /// Parses and validates a catalog; `origin` labels errors.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Self, LoadCatalogError> {
        let catalog: Self =
            serde_json::from_slice(bytes).map_err(|source| LoadCatalogError::Json {
                origin: origin.to_owned(),
                source,
            })?;
        catalog
            .validate()
            .map_err(|problem| LoadCatalogError::Invalid {
                origin: origin.to_owned(),
                problem,
            })?;
        Ok(catalog)
    }

    fn validate(&self) -> Result<(), String> {
        if self.version != 1 {
            return Err(format!(
                "version {} is not supported (expected 1)",
                self.version
            ));
        }
        let check =
            |kind: &str, name: &str, arch: &str, artifact: &Artifact| -> Result<(), String> {
                banger_model::Name::parse(name).map_err(|err| format!("{kind} {name:?}: {err}"))?;
                if !matches!(arch, "x86_64" | "aarch64") {
                    return Err(format!(
                        "{kind} {name}: arch {arch:?} is not x86_64 or aarch64"
                    ));
                }
                Digest::from_hex(&artifact.sha256).map_err(|_| {
                    format!(
                        "{kind} {name}: sha256 {:?} is not 64 lowercase hex digits",
                        artifact.sha256
                    )
                })?;
                if artifact.size == 0 {
                    return Err(format!("{kind} {name}: size must be positive"));
                }
                if !(artifact.url.starts_with("https://") || artifact.url.starts_with("http://")) {
                    return Err(format!(
                        "{kind} {name}: url {:?} is not http(s)",
                        artifact.url
                    ));
                }
                Ok(())
            };
        let mut seen = HashSet::new();
        for kernel in &self.kernels {
            check("kernel", &kernel.name, &kernel.arch, &kernel.artifact)?;
            if !seen.insert((kernel.name.as_str(), kernel.arch.as_str())) {
                return Err(format!(
                    "kernel {} ({}) is listed twice",
                    kernel.name, kernel.arch
                ));
            }
        }
        let mut seen = HashSet::new();
        for image in &self.images {
            check("image", &image.name, &image.arch, &image.artifact)?;
            if !seen.insert((image.name.as_str(), image.arch.as_str())) {
                return Err(format!(
                    "image {} ({}) is listed twice",
                    image.name, image.arch
                ));
            }
            if !self
                .kernels
                .iter()
                .any(|kernel| kernel.name == image.kernel && kernel.arch == image.arch)
            {
                return Err(format!(
                    "image {} needs kernel {} ({}), which the catalog does not list",
                    image.name, image.kernel, image.arch
                ));
            }
        }
        Ok(())
    }

    /// The catalog at `url` when one is configured, else the embedded one.
    pub async fn load(url: Option<&str>, http: &HttpClient) -> Result<Self, LoadCatalogError> {
        let Some(url) = url else {
            return Ok(Self::embedded());
        };
        let bytes = http
            .get_bytes(url, &HeaderMap::new(), MAX_CATALOG_BYTES)
            .await
            .map_err(|source| LoadCatalogError::Fetch {
                url: url.to_owned(),
                source,
            })?;
        Self::parse(&bytes, url)
    }

    /// The kernel `name` for this host's architecture.
    pub fn kernel(&self, name: &str) -> Option<&KernelEntry> {
        self.kernels
            .iter()
            .find(|kernel| kernel.name == name && kernel.arch == std::env::consts::ARCH)
    }

    /// The image `name` for this host's architecture.
    pub fn image(&self, name: &str) -> Option<&ImageEntry> {
        self.images
            .iter()
            .find(|image| image.name == name && image.arch == std::env::consts::ARCH)
    }
}

/// What `image pull NAME` means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSourceRef {
    Catalog(ImageEntry),
    Oci(Reference),
}

/// Catalog names first, then OCI references.
pub fn resolve_image(catalog: &Catalog, name: &str) -> Result<ImageSourceRef, ParseReferenceError> {
    if let Some(entry) = catalog.image(name) {
        return Ok(ImageSourceRef::Catalog(entry.clone()));
    }
    name.parse().map(ImageSourceRef::Oci)
}

/// Downloads and caches catalog artifacts under one directory
/// (`<cache>/catalog`), by sha256.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    http: HttpClient,
    dir: PathBuf,
}

impl ArtifactStore {
    pub fn new(http: HttpClient, dir: impl Into<PathBuf>) -> Self {
        Self {
            http,
            dir: dir.into(),
        }
    }

    /// Where a verified artifact is kept.
    pub fn cached_path(&self, artifact: &Artifact) -> PathBuf {
        self.dir.join(format!("{}.tar.zst", artifact.sha256))
    }

    /// The artifact, verified: from the cache, or downloaded (streamed to
    /// a temporary file, size and sha256 checked, then renamed into the
    /// cache).
    pub async fn download(
        &self,
        name: &str,
        artifact: &Artifact,
        progress: &dyn Progress,
    ) -> Result<PathBuf, FetchArtifactError> {
        let final_path = self.cached_path(artifact);
        let event = |state: BlobState, done: u64| {
            progress.event(&ProgressEvent::Download {
                artifact: name.to_owned(),
                state,
                done,
                total: artifact.size,
            });
        };
        if std::fs::metadata(&final_path).is_ok_and(|meta| meta.len() == artifact.size) {
            event(BlobState::Cached, artifact.size);
            return Ok(final_path);
        }
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |source| FetchArtifactError::Io {
                name: name.to_owned(),
                path,
                source,
            }
        };
        let http_error = |source| FetchArtifactError::Http {
            name: name.to_owned(),
            url: artifact.url.clone(),
            source,
        };
        let temp_dir = self.dir.join("tmp");
        tokio::fs::create_dir_all(&temp_dir)
            .await
            .map_err(io_error(&temp_dir))?;
        let temp = temp_dir.join(format!(
            "{}.{:08x}.partial",
            artifact.sha256,
            rand::random::<u32>()
        ));

        let response = self
            .http
            .get(&artifact.url, &HeaderMap::new())
            .await
            .map_err(http_error)?;
        let url = response.url;
        let mut response = response.response;
        if !response.status().is_success() {
            return Err(http_error(
                self.http.status_error(&url, &mut response).await,
            ));
        }
        event(BlobState::Started, 0);
        let file = fs_err::File::create(&temp).map_err(io_error(&temp))?;
        let mut sink = Some((file, Hasher::new()));
        let result: Result<(), FetchArtifactError> = async {
            let mut batch = Vec::with_capacity(WRITE_BATCH);
            let mut received: u64 = 0;
            loop {
                let chunk = self
                    .http
                    .next_chunk(&url, response.body_mut())
                    .await
                    .map_err(http_error)?;
                let done = chunk.is_none();
                if let Some(chunk) = chunk {
                    received += chunk.len() as u64;
                    if received > artifact.size {
                        return Err(FetchArtifactError::Size {
                            name: name.to_owned(),
                            url: artifact.url.clone(),
                            expected: artifact.size,
                            actual: received,
                        });
                    }
                    batch.extend_from_slice(&chunk);
                }
                if batch.len() >= WRITE_BATCH || (done && !batch.is_empty()) {
                    let (mut file, mut hasher) =
                        sink.take().expect("sink is returned after each write");
                    let data = std::mem::replace(&mut batch, Vec::with_capacity(WRITE_BATCH));
                    let (file, hasher, written) = tokio::task::spawn_blocking(move || {
                        let written = file.write_all(&data);
                        hasher.update(&data);
                        (file, hasher, written)
                    })
                    .await
                    .expect("writing a download does not panic");
                    written.map_err(io_error(&temp))?;
                    sink = Some((file, hasher));
                    event(BlobState::Downloading, received);
                }
                if done {
                    break;
                }
            }
            let (file, hasher) = sink.take().expect("sink is returned after each write");
            let actual_len = hasher.len();
            if actual_len != artifact.size {
                return Err(FetchArtifactError::Size {
                    name: name.to_owned(),
                    url: artifact.url.clone(),
                    expected: artifact.size,
                    actual: actual_len,
                });
            }
            let actual = hasher.finish();
            if actual.hex() != artifact.sha256 {
                return Err(FetchArtifactError::Sha256 {
                    name: name.to_owned(),
                    url: artifact.url.clone(),
                    expected: artifact.sha256.clone(),
                    actual: actual.hex().to_owned(),
                });
            }
            tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .expect("syncing a download does not panic")
                .map_err(io_error(&temp))?;
            tokio::fs::rename(&temp, &final_path)
                .await
                .map_err(io_error(&final_path))?;
            Ok(())
        }
        .await;
        if let Err(err) = result {
            if let Err(remove) = tokio::fs::remove_file(&temp).await {
                tracing::warn!(error = %remove, "cannot delete a failed download");
            }
            return Err(err);
        }
        event(BlobState::Verified, artifact.size);
        Ok(final_path)
    }
}

/// Extracts a verified artifact into the new directory `staging` with the
/// hardened unpacker, hashing it again as it is read (a cached artifact
/// that no longer matches is deleted). Blocking.
pub fn extract_artifact(
    name: &str,
    artifact: &Artifact,
    file: &Path,
    staging: &Path,
    options: UnpackOptions,
) -> Result<ContentSize, ExtractArtifactError> {
    let unpack_error = |source| ExtractArtifactError::Unpack {
        name: name.to_owned(),
        source,
    };
    let label = format!("artifact {name}");
    let mut unpacker = Unpacker::create(staging, options).map_err(unpack_error)?;
    let opened = fs_err::File::open(file).map_err(|source| {
        unpack_error(UnpackError::Archive {
            layer: label.clone(),
            source,
        })
    })?;
    let mut reader = BufReader::with_capacity(256 * 1024, HashingReader::new(opened));
    let applied = unpacker
        .apply_compressed(&label, &mut reader, Some(artifact.size))
        .and_then(|_| {
            io::copy(&mut reader, &mut io::sink()).map_err(|source| UnpackError::Archive {
                layer: label.clone(),
                source,
            })
        });
    let actual = match &applied {
        Ok(_) => Some(reader.into_inner().finish().0),
        // A failure may come from a cached file that changed: hash it all.
        Err(_) => hash_file(file).ok(),
    };
    if actual.is_some_and(|actual| actual.hex() != artifact.sha256) {
        drop(unpacker);
        if let Err(err) = fs_err::remove_file(file) {
            tracing::warn!(error = %err, "cannot delete a corrupt cached artifact");
        }
        return Err(ExtractArtifactError::Corrupt {
            name: name.to_owned(),
            path: file.to_owned(),
            expected: artifact.sha256.clone(),
        });
    }
    applied.map_err(unpack_error)?;
    unpacker.finish().map_err(unpack_error)
}

fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut reader = HashingReader::new(fs_err::File::open(path)?);
    io::copy(&mut reader, &mut io::sink())?;
    Ok(reader.finish().0)
}

/// Moves `staging` to `dest` atomically; `dest` must not exist.
pub fn publish_dir(staging: &Path, dest: &Path) -> Result<(), PublishError> {
    let io_error = |source| PublishError::Io {
        staging: staging.to_owned(),
        dest: dest.to_owned(),
        source,
    };
    if let Some(parent) = dest.parent() {
        fs_err::create_dir_all(parent).map_err(io_error)?;
    }
    match nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        staging,
        nix::fcntl::AT_FDCWD,
        dest,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EEXIST) => Err(PublishError::Exists {
            staging: staging.to_owned(),
            dest: dest.to_owned(),
        }),
        Err(errno) => Err(io_error(errno.into())),
    }
}

/// A published kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFiles {
    pub dir: PathBuf,
    pub vmlinux: PathBuf,
    pub initrd: Option<PathBuf>,
}

/// Downloads, verifies, extracts and publishes catalog kernel `entry` as
/// directory `dest` (which must not exist).
pub async fn install_kernel(
    store: &ArtifactStore,
    entry: &KernelEntry,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<KernelFiles, InstallKernelError> {
    let file = store
        .download(&entry.name, &entry.artifact, progress)
        .await?;
    let parent = dest.parent().unwrap_or_else(|| Path::new("."));
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|source| PublishError::Io {
            staging: parent.to_owned(),
            dest: dest.to_owned(),
            source,
        })?;
    let staging = parent.join(format!(
        ".{}.staging-{:08x}",
        dest.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        rand::random::<u32>()
    ));
    let name = entry.name.clone();
    let artifact = entry.artifact.clone();
    let dest_owned = dest.to_owned();
    let staging_owned = staging.clone();
    tokio::task::spawn_blocking(move || -> Result<KernelFiles, InstallKernelError> {
        let options = UnpackOptions {
            ..UnpackOptions::default()
        };
        extract_artifact(&name, &artifact, &file, &staging_owned, options)?;
        let cleanup = |err: InstallKernelError| {
            let _ = fs_err::remove_dir_all(&staging_owned);
            err
        };
        let is_file =
            |path: &Path| std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file());
        if !is_file(&staging_owned.join("vmlinux")) {
            return Err(cleanup(InstallKernelError::Missing {
                name: name.clone(),
                file: "vmlinux",
            }));
        }
        let has_initrd = is_file(&staging_owned.join("initrd.img"));
        publish_dir(&staging_owned, &dest_owned).map_err(|err| cleanup(err.into()))?;
        Ok(KernelFiles {
            vmlinux: dest_owned.join("vmlinux"),
            initrd: has_initrd.then(|| dest_owned.join("initrd.img")),
            dir: dest_owned,
        })
    })
    .await
    .map_err(|_| InstallKernelError::Panicked {
        name: entry.name.clone(),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_is_valid() {
        let catalog = Catalog::embedded();
        assert_eq!(catalog.version, 1);
    }

    fn sample() -> String {
        let sha = "a".repeat(64);
        format!(
            r#"{{"version":1,
              "kernels":[{{"name":"generic-6-12","arch":"x86_64","artifact":{{"url":"https://example.com/k.tar.zst","sha256":"{sha}","size":10}}}}],
              "images":[{{"name":"debian-bookworm","arch":"x86_64","kernel":"generic-6-12","artifact":{{"url":"https://example.com/i.tar.zst","sha256":"{sha}","size":10}}}}]}}"#
        )
    }

    #[test]
    fn parses_and_validates() {
        let catalog = Catalog::parse(sample().as_bytes(), "test").unwrap();
        if std::env::consts::ARCH == "x86_64" {
            assert!(catalog.kernel("generic-6-12").is_some());
            assert!(catalog.image("debian-bookworm").is_some());
        }
        for (from, to) in [
            ("\"version\":1", "\"version\":2"),
            ("generic-6-12\",\"arch", "Generic\",\"arch"),
            (&"a".repeat(64), "abc"),
            ("\"size\":10", "\"size\":0"),
            ("https://example.com/k", "ftp://example.com/k"),
            ("\"kernel\":\"generic-6-12\"", "\"kernel\":\"other\""),
            (
                "\"arch\":\"x86_64\",\"kernel",
                "\"arch\":\"sparc\",\"kernel",
            ),
        ] {
            let text = sample().replacen(from, to, 1);
            assert!(
                matches!(
                    Catalog::parse(text.as_bytes(), "test"),
                    Err(LoadCatalogError::Invalid { .. } | LoadCatalogError::Json { .. })
                ),
                "{from} -> {to} accepted"
            );
        }
        let unknown = sample().replacen("\"version\":1", "\"version\":1,\"extra\":true", 1);
        assert!(matches!(
            Catalog::parse(unknown.as_bytes(), "test"),
            Err(LoadCatalogError::Json { .. })
        ));
    }

    #[test]
    fn catalog_names_first_then_oci_references() {
        let catalog = Catalog::parse(sample().as_bytes(), "test").unwrap();
        let resolved = resolve_image(&catalog, "debian-bookworm").unwrap();
        if std::env::consts::ARCH == "x86_64" {
            assert!(matches!(resolved, ImageSourceRef::Catalog(_)));
        }
        let ImageSourceRef::Oci(reference) = resolve_image(&catalog, "debian:bookworm").unwrap()
        else {
            panic!("not an OCI reference");
        };
        assert_eq!(reference.to_string(), "docker.io/library/debian:bookworm");
        assert!(resolve_image(&catalog, "Not A Ref").is_err());
    }

    #[test]
    fn publish_refuses_to_replace() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("staging");
        let dest = dir.path().join("out/dest");
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(staging.join("f"), b"x").unwrap();
        publish_dir(&staging, &dest).unwrap();
        assert!(dest.join("f").exists());
        std::fs::create_dir(&staging).unwrap();
        assert!(matches!(
            publish_dir(&staging, &dest),
            Err(PublishError::Exists { .. })
        ));
    }
}
