//! The release manifest, trusted only after its signature verifies.

use serde::{Deserialize, Serialize};

use crate::version::{ParseVersionError, Version};

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The release's version (`0.2.0`).
    pub version: String,
    /// The platform the binaries are built for (`x86_64-linux`).
    pub target: String,
    pub artifacts: Vec<Artifact>,
    /// Free text shown by `banger update --check`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// One binary of the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The binary's installed name (`bangerd`).
    pub name: String,
    /// Absolute, or relative to the release URL.
    pub url: String,
    /// Lowercase hex.
    pub sha256: String,
    pub size: u64,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyManifestError {
    #[error("the manifest signature is malformed")]
    SignatureFormat(#[source] minisign_verify::Error),
    #[error("the manifest signature does not verify against banger's release key")]
    Signature(#[source] minisign_verify::Error),
    #[error("the signed manifest is not valid JSON")]
    Json(#[source] serde_json::Error),
    #[error("the signed manifest's version is invalid")]
    Version(#[source] ParseVersionError),
    #[error("the release is built for {target}, this host is {host}")]
    Target { target: String, host: String },
    #[error("the release lacks {name}")]
    Missing { name: String },
    #[error("the release lists {name} twice")]
    Duplicate { name: String },
    #[error("the release's {name} entry is invalid: {problem}")]
    Invalid { name: String, problem: String },
}

impl Manifest {
    /// Checks `signature` over `bytes` with `key`, then parses and checks the
    /// manifest. Nothing of `bytes` is interpreted before the signature holds.
    pub fn verify(
        bytes: &[u8],
        signature: &str,
        key: &minisign_verify::PublicKey,
        host_target: &str,
    ) -> Result<(Self, Version), VerifyManifestError> {
        let signature = minisign_verify::Signature::decode(signature)
            .map_err(VerifyManifestError::SignatureFormat)?;
        key.verify(bytes, &signature, false)
            .map_err(VerifyManifestError::Signature)?;
        let manifest: Self = serde_json::from_slice(bytes).map_err(VerifyManifestError::Json)?;
        let version = manifest
            .version
            .parse()
            .map_err(VerifyManifestError::Version)?;
        if manifest.target != host_target {
            return Err(VerifyManifestError::Target {
                target: manifest.target,
                host: host_target.to_owned(),
            });
        }
        manifest.check_artifacts()?;
        Ok((manifest, version))
    }

    fn check_artifacts(&self) -> Result<(), VerifyManifestError> {
        let invalid = |name: &str, problem: &str| VerifyManifestError::Invalid {
            name: name.to_owned(),
            problem: problem.to_owned(),
        };
        for (name, required) in crate::BINARIES {
            let count = self.artifacts.iter().filter(|a| a.name == *name).count();
            if count > 1 {
                return Err(VerifyManifestError::Duplicate {
                    name: (*name).to_owned(),
                });
            }
            if count == 0 && *required {
                return Err(VerifyManifestError::Missing {
                    name: (*name).to_owned(),
                });
            }
        }
        for artifact in &self.artifacts {
            if !crate::BINARIES
                .iter()
                .any(|(name, _)| *name == artifact.name)
            {
                return Err(invalid(&artifact.name, "not a banger binary"));
            }
            if artifact.sha256.len() != 64
                || !artifact
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(invalid(
                    &artifact.name,
                    "sha256 is not 64 lowercase hex digits",
                ));
            }
            if artifact.size == 0 {
                return Err(invalid(&artifact.name, "size is 0"));
            }
            if artifact.url.is_empty() {
                return Err(invalid(&artifact.name, "url is empty"));
            }
        }
        Ok(())
    }

    pub fn artifact(&self, name: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|artifact| artifact.name == name)
    }
}

/// `url` if absolute, else resolved against the release base URL.
pub fn resolve_url(base: &str, url: &str) -> String {
    if url.starts_with("http://") || url.starts_with("https://") {
        url.to_owned()
    } else {
        format!(
            "{}/{}",
            base.trim_end_matches('/'),
            url.trim_start_matches('/')
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_urls_resolve_against_the_release() {
        assert_eq!(
            resolve_url("https://x.dev/banger/", "v0.2.0/banger"),
            "https://x.dev/banger/v0.2.0/banger"
        );
        assert_eq!(
            resolve_url("https://x.dev/banger", "https://cdn.dev/b"),
            "https://cdn.dev/b"
        );
    }
}
