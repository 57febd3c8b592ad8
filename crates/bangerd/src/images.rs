//! Shared by the image and kernel acquisition services: the HTTP client and
//! catalog, progress forwarding, staging directories and image names.

use std::path::{Path, PathBuf};

use banger_image::{Catalog, HttpClient, ProgressEvent, Timeouts, TransportPolicy};
use banger_model::Name;
use banger_rpc::Event;

use crate::daemon::Daemon;
use crate::errors::{Doing, Hint, ServiceError};
use crate::server::EventSink;

/// The image `vm create` uses when there is no default image and the
/// config names none: pulled from the catalog on first use when listed.
pub const CATALOG_DEFAULT_IMAGE: &str = "debian-bookworm";

pub fn http() -> Result<HttpClient, ServiceError> {
    HttpClient::new(TransportPolicy::default(), Timeouts::default()).doing("setting up HTTP")
}

/// The catalog from `catalog_url`, or the one built into banger.
pub async fn catalog(daemon: &Daemon, http: &HttpClient) -> Result<Catalog, ServiceError> {
    Catalog::load(daemon.config.catalog_url.as_deref(), http)
        .await
        .unavailable("reading the catalog")
        .hint("check catalog_url in config.toml")
}

/// Forwards download/unpack progress to the client as events.
pub fn forward_progress(events: &EventSink) -> impl Fn(&ProgressEvent) + Send + Sync + '_ {
    move |event: &ProgressEvent| match event {
        ProgressEvent::Resolved {
            reference,
            layers,
            total_bytes,
            cached_bytes,
            ..
        } => events.log(
            "info",
            format!(
                "pulling {reference}: {layers} layers, {} ({} cached)",
                banger_model::ByteSize(*total_bytes).human(),
                banger_model::ByteSize(*cached_bytes).human()
            ),
        ),
        ProgressEvent::Blob {
            overall_done,
            overall_total,
            ..
        } => events.emit(Event::Progress {
            task: "download".into(),
            current: *overall_done,
            total: Some(*overall_total),
            unit: "bytes".into(),
            detail: None,
        }),
        ProgressEvent::LayerApplied { index, count, .. } => events.emit(Event::Progress {
            task: "unpack layers".into(),
            current: *index as u64 + 1,
            total: Some(*count as u64),
            unit: "items".into(),
            detail: None,
        }),
        ProgressEvent::Download {
            artifact,
            done,
            total,
            ..
        } => events.emit(Event::Progress {
            task: artifact.clone(),
            current: *done,
            total: Some(*total),
            unit: "bytes".into(),
            detail: None,
        }),
        _ => {}
    }
}

/// A fresh staging directory for one build, removed when dropped.
#[derive(Debug)]
pub struct Staging {
    pub dir: PathBuf,
}

impl Staging {
    pub fn new(daemon: &Daemon, id: &banger_model::Id) -> Result<Self, ServiceError> {
        let dir = daemon.layout.staging_dir().join(id.as_str());
        fs_err::create_dir_all(&dir).doing("staging")?;
        Ok(Self { dir })
    }

    /// Where unpacked rootfs trees go (the unpacker creates it).
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// Where the ext4 files are built before publishing.
    pub fn out(&self) -> PathBuf {
        self.dir.join("image")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(err) = fs_err::remove_dir_all(&self.dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %err, "staging not removed");
        }
    }
}

/// A DNS-label image name from an OCI reference or catalog name:
/// `docker.io/library/debian:bookworm` → `debian-bookworm`.
pub fn derive_name(reference: &str) -> Result<Name, ServiceError> {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    let last = last.split('@').next().unwrap_or(last);
    let mut name: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    let name = name.trim_matches('-');
    let name = &name[..name.len().min(banger_model::name::MAX_LEN)];
    Name::parse(name.trim_end_matches('-')).map_err(|err| {
        ServiceError::invalid(format!(
            "cannot derive an image name from {reference:?} ({err})"
        ))
        .with_hint("pass --name")
    })
}

pub fn is_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_references() {
        assert_eq!(
            derive_name("docker.io/library/debian:bookworm")
                .unwrap()
                .as_str(),
            "debian-bookworm"
        );
        assert_eq!(
            derive_name("127.0.0.1:5000/test/img:v1.2")
                .unwrap()
                .as_str(),
            "img-v1-2"
        );
        assert_eq!(derive_name("ubuntu").unwrap().as_str(), "ubuntu");
        assert_eq!(
            derive_name("alpine@sha256:abcd").unwrap().as_str(),
            "alpine"
        );
        assert!(derive_name("___").is_err());
    }
}
