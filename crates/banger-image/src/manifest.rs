//! Manifests, indexes and image configs in both the OCI and the Docker
//! schema 2 media types, and picking a platform from an index.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The `Accept` header for manifest requests: every type we can read.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a layer media type declares, or `None` when the
    /// media type is not a layer type we apply.
    pub fn from_layer_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(Self::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Self::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Some(Self::Zstd),
            _ => None,
        }
    }

    /// What the first bytes of a blob say it is.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// linux and the OCI name of the host's architecture (amd64 on x86_64).
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            other => other,
        };
        Self {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            variant: None,
        }
    }

    pub fn linux_amd64() -> Self {
        Self {
            os: "linux".to_owned(),
            architecture: "amd64".to_owned(),
            variant: None,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// A manifest as fetched: either an image or an index of images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

#[derive(Debug, thiserror::Error)]
pub enum ParseManifestError {
    #[error("manifest is not valid JSON for {kind}")]
    Json {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("manifest media type {0:?} is not supported (schema 1 manifests are not either)")]
    MediaType(String),
    #[error("manifest has schemaVersion {0}; only schema 2 is supported")]
    SchemaVersion(u32),
    #[error("manifest layer {digest} has media type {media_type:?}, which is not an image layer")]
    LayerMediaType { digest: Digest, media_type: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

impl Manifest {
    /// Parses `bytes`, using the body's own `mediaType` first, then the
    /// `Content-Type` the registry sent, then the document's shape.
    pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<Self, ParseManifestError> {
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|source| ParseManifestError::Json {
                kind: "a manifest",
                source,
            })?;
        let schema = probe.schema_version.unwrap_or(0);
        if schema != 2 {
            return Err(ParseManifestError::SchemaVersion(schema));
        }
        let content_type = content_type.map(|value| value.split(';').next().unwrap_or("").trim());
        let media_type = probe
            .media_type
            .as_deref()
            .or(content_type.filter(|value| !value.is_empty() && *value != "application/json"));
        let is_index = match media_type {
            Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => true,
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
            Some(other) => return Err(ParseManifestError::MediaType(other.to_owned())),
            None => probe.manifests.is_some(),
        };
        if is_index {
            let index =
                serde_json::from_slice(bytes).map_err(|source| ParseManifestError::Json {
                    kind: "an image index",
                    source,
                })?;
            Ok(Self::Index(index))
        } else {
            let manifest: ImageManifest =
                serde_json::from_slice(bytes).map_err(|source| ParseManifestError::Json {
                    kind: "an image manifest",
                    source,
                })?;
            for layer in &manifest.layers {
                if Compression::from_layer_media_type(&layer.media_type).is_none() {
                    return Err(ParseManifestError::LayerMediaType {
                        digest: layer.digest.clone(),
                        media_type: layer.media_type.clone(),
                    });
                }
            }
            Ok(Self::Image(manifest))
        }
    }
}

impl ImageIndex {
    /// The image manifest for `want`: same os and architecture, the
    /// matching variant preferred when one is asked for. Attestation and
    /// other non-image entries are skipped.
    pub fn select(&self, want: &Platform) -> Option<&Descriptor> {
        let candidates = self.manifests.iter().filter(|entry| {
            matches!(entry.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST)
                && entry.platform.as_ref().is_some_and(|platform| {
                    platform.os == want.os && platform.architecture == want.architecture
                })
        });
        let mut first = None;
        for entry in candidates {
            let variant = entry.platform.as_ref().and_then(|p| p.variant.as_ref());
            if want.variant.is_none() || variant == want.variant.as_ref() {
                return Some(entry);
            }
            first.get_or_insert(entry);
        }
        first
    }

    /// The platforms listed, for error messages.
    pub fn platforms(&self) -> Vec<String> {
        self.manifests
            .iter()
            .filter_map(|entry| entry.platform.as_ref().map(ToString::to_string))
            .collect()
    }
}

/// The parts of an image config banger keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Digests of the uncompressed layers, as the config lists them.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct RawConfigFile {
    architecture: Option<String>,
    os: Option<String>,
    #[serde(default)]
    config: Option<RawContainerConfig>,
    #[serde(default)]
    rootfs: Option<RawRootfs>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawContainerConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseManifestError> {
        let raw: RawConfigFile =
            serde_json::from_slice(bytes).map_err(|source| ParseManifestError::Json {
                kind: "an image config",
                source,
            })?;
        let config = raw.config;
        Ok(Self {
            architecture: raw.architecture,
            os: raw.os,
            env: config
                .as_ref()
                .and_then(|c| c.env.clone())
                .unwrap_or_default(),
            entrypoint: config.as_ref().and_then(|c| c.entrypoint.clone()),
            cmd: config.as_ref().and_then(|c| c.cmd.clone()),
            working_dir: config
                .as_ref()
                .and_then(|c| c.working_dir.clone())
                .filter(|dir| !dir.is_empty()),
            user: config
                .as_ref()
                .and_then(|c| c.user.clone())
                .filter(|user| !user.is_empty()),
            diff_ids: raw.rootfs.map(|rootfs| rootfs.diff_ids).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    #[test]
    fn parses_docker_and_oci_manifests() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{A}","size":10}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{B}","size":20}}]}}"#
        );
        let Manifest::Image(image) = Manifest::parse(None, docker.as_bytes()).unwrap() else {
            panic!("not an image");
        };
        assert_eq!(image.layers[0].size, 20);

        // No mediaType in the body: the Content-Type decides.
        let oci = format!(
            r#"{{"schemaVersion":2,
            "config":{{"mediaType":"{OCI_CONFIG}","digest":"{A}","size":10}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"{B}","size":20}},
                      {{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{C}","size":30}}]}}"#
        );
        assert!(matches!(
            Manifest::parse(Some(OCI_MANIFEST), oci.as_bytes()).unwrap(),
            Manifest::Image(_)
        ));
        let unknown_layer = oci.replace("tar+zstd", "tar+lz4");
        assert!(matches!(
            Manifest::parse(None, unknown_layer.as_bytes()),
            Err(ParseManifestError::LayerMediaType { .. })
        ));
        assert!(matches!(
            Manifest::parse(None, br#"{"schemaVersion":1,"fsLayers":[]}"#),
            Err(ParseManifestError::SchemaVersion(1))
        ));
    }

    #[test]
    fn selects_platform_from_index() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
              {{"mediaType":"{OCI_MANIFEST}","digest":"{A}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{B}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{C}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#
        );
        let Manifest::Index(index) = Manifest::parse(None, index.as_bytes()).unwrap() else {
            panic!("not an index");
        };
        assert_eq!(
            index
                .select(&Platform::linux_amd64())
                .unwrap()
                .digest
                .to_string(),
            B
        );
        let arm = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        };
        assert_eq!(index.select(&arm).unwrap().digest.to_string(), A);
        let riscv = Platform {
            os: "linux".into(),
            architecture: "riscv64".into(),
            variant: None,
        };
        assert!(index.select(&riscv).is_none());
        assert_eq!(index.platforms().len(), 3);
    }

    #[test]
    fn parses_config() {
        let config = ImageConfig::parse(
            br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"WorkingDir":""},
                "rootfs":{"type":"layers","diff_ids":["sha256:00"]}}"#,
        )
        .unwrap();
        assert_eq!(config.env, vec!["PATH=/bin"]);
        assert_eq!(config.cmd, Some(vec!["/bin/sh".to_owned()]));
        assert_eq!(config.working_dir, None);
        assert_eq!(config.diff_ids.len(), 1);
    }

    #[test]
    fn sniffs_compression() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/"), Compression::None);
    }
}
