//! The steps of an update that touch the network: the signed manifest,
//! then the binaries it pins, staged next to their targets.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::download::{DownloadError, Downloader};
use crate::install::{StageError, Staged};
use crate::manifest::{Artifact, Manifest, VerifyManifestError, resolve_url};
use crate::version::Version;

/// A manifest is a few hundred bytes; anything near this is not one.
const MANIFEST_LIMIT: u64 = 1 << 20;
const SIGNATURE_LIMIT: u64 = 4 << 10;

/// A verified release.
#[derive(Debug, Clone)]
pub struct Release {
    pub base_url: String,
    pub manifest: Manifest,
    pub version: Version,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchReleaseError {
    #[error("cannot download the release manifest")]
    Download(#[source] DownloadError),
    #[error("the manifest signature is not text")]
    SignatureText,
    #[error("refusing the release at {url}")]
    Verify {
        url: String,
        #[source]
        source: VerifyManifestError,
    },
}

/// Downloads `BASE/manifest.json` and its `.minisig`, and verifies them.
pub async fn fetch_release(
    downloader: &Downloader,
    base_url: &str,
    key: &minisign_verify::PublicKey,
    host_target: &str,
) -> Result<Release, FetchReleaseError> {
    let manifest_url = resolve_url(base_url, "manifest.json");
    let manifest = downloader
        .get(&manifest_url, MANIFEST_LIMIT)
        .await
        .map_err(FetchReleaseError::Download)?;
    let signature = downloader
        .get(&format!("{manifest_url}.minisig"), SIGNATURE_LIMIT)
        .await
        .map_err(FetchReleaseError::Download)?;
    let signature = String::from_utf8(signature).map_err(|_| FetchReleaseError::SignatureText)?;
    let (manifest, version) =
        Manifest::verify(&manifest, &signature, key, host_target).map_err(|source| {
            FetchReleaseError::Verify {
                url: manifest_url,
                source,
            }
        })?;
    Ok(Release {
        base_url: base_url.to_owned(),
        manifest,
        version,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StageArtifactsError {
    #[error("cannot download {name}")]
    Download {
        name: String,
        #[source]
        source: DownloadError,
    },
    #[error("{name} is {got} bytes, the signed manifest says {want} (truncated download?)")]
    Size { name: String, got: u64, want: u64 },
    #[error("{name} does not match the signed sha256 (got {got})")]
    Digest { name: String, got: String },
    #[error("cannot stage {name} next to {target}")]
    Stage {
        name: String,
        target: PathBuf,
        #[source]
        source: StageError,
    },
}

/// Downloads each `(artifact, target)`, checks it against the signed size
/// and sha256, and stages it beside its target. On any error the files
/// staged so far are removed and no target has been touched.
pub async fn stage_artifacts(
    downloader: &Downloader,
    release: &Release,
    wanted: &[(Artifact, PathBuf)],
) -> Result<Vec<Staged>, StageArtifactsError> {
    let mut staged: Vec<Staged> = Vec::new();
    let result = async {
        for (artifact, target) in wanted {
            let bytes = fetch_verified(downloader, &release.base_url, artifact).await?;
            let item =
                Staged::write(target, &bytes).map_err(|source| StageArtifactsError::Stage {
                    name: artifact.name.clone(),
                    target: target.clone(),
                    source,
                })?;
            staged.push(item);
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(staged),
        Err(err) => {
            for item in &staged {
                item.discard();
            }
            Err(err)
        }
    }
}

async fn fetch_verified(
    downloader: &Downloader,
    base_url: &str,
    artifact: &Artifact,
) -> Result<Vec<u8>, StageArtifactsError> {
    let url = resolve_url(base_url, &artifact.url);
    let bytes = downloader
        .get(&url, artifact.size)
        .await
        .map_err(|source| StageArtifactsError::Download {
            name: artifact.name.clone(),
            source,
        })?;
    if bytes.len() as u64 != artifact.size {
        return Err(StageArtifactsError::Size {
            name: artifact.name.clone(),
            got: bytes.len() as u64,
            want: artifact.size,
        });
    }
    let digest = hex::encode(Sha256::digest(&bytes));
    if digest != artifact.sha256 {
        return Err(StageArtifactsError::Digest {
            name: artifact.name.clone(),
            got: digest,
        });
    }
    Ok(bytes)
}
