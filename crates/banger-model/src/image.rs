//! Image records: a read-only root filesystem, the seed of the guest's
//! `/root`, and the kernel it boots with.

use std::path::PathBuf;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{ByteSize, Id, Name};

/// Where an image came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageSource {
    /// `image import` of a directory or tarball.
    Import { path: PathBuf },
    /// `image register` of existing files.
    Register,
    /// `image pull` from an OCI registry.
    Pull {
        reference: String,
        manifest_digest: String,
        layer_digests: Vec<String>,
    },
    /// `image pull NAME` from the catalog.
    Catalog { name: String, sha256: String },
    /// `image bootstrap` from distribution packages.
    Bootstrap {
        distro: String,
        mirror: String,
        /// Which package set (images from before profiles had the minimal one).
        #[serde(default = "ImageProfile::before_profiles")]
        profile: ImageProfile,
        /// `--packages` added on top of the profile's.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        extra_packages: Vec<String>,
        /// What the installed files take (the ext4 file adds free space).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        installed_size: Option<ByteSize>,
    },
}

/// The package set of a bootstrapped image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageProfile {
    /// A box to work in: compilers, git, Docker, Python, editors, tools.
    #[default]
    Developer,
    /// Only what banger needs: sshd, systemd, iproute2, git, TLS roots.
    Minimal,
}

impl ImageProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Developer => "developer",
            Self::Minimal => "minimal",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "developer" => Some(Self::Developer),
            "minimal" => Some(Self::Minimal),
            _ => None,
        }
    }

    fn before_profiles() -> Self {
        Self::Minimal
    }
}

impl std::fmt::Display for ImageProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ImageSource {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Import { .. } => "import",
            Self::Register => "register",
            Self::Pull { .. } => "pull",
            Self::Catalog { .. } => "catalog",
            Self::Bootstrap { .. } => "bootstrap",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub id: Id,
    pub name: Name,
    pub kernel_id: Option<Id>,
    pub kernel_name: Option<String>,
    pub rootfs_path: PathBuf,
    pub work_seed_path: Option<PathBuf>,
    pub rootfs_size: ByteSize,
    pub source: ImageSource,
    pub is_default: bool,
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_sources_from_before_profiles_read_as_minimal() {
        let old: ImageSource = serde_json::from_str(
            r#"{"kind":"bootstrap","distro":"debian:bookworm","mirror":"http://m"}"#,
        )
        .unwrap();
        let ImageSource::Bootstrap {
            profile,
            extra_packages,
            installed_size,
            ..
        } = old
        else {
            panic!("not a bootstrap source")
        };
        assert_eq!(profile, ImageProfile::Minimal);
        assert!(extra_packages.is_empty());
        assert_eq!(installed_size, None);
        let new = ImageSource::Bootstrap {
            distro: "debian:bookworm".into(),
            mirror: "http://m".into(),
            profile: ImageProfile::Developer,
            extra_packages: vec!["htop".into()],
            installed_size: Some(ByteSize::mib(900)),
        };
        let json = serde_json::to_value(&new).unwrap();
        assert_eq!(json["profile"], "developer");
        assert_eq!(serde_json::from_value::<ImageSource>(json).unwrap(), new);
        for profile in [ImageProfile::Developer, ImageProfile::Minimal] {
            assert_eq!(ImageProfile::parse(profile.as_str()), Some(profile));
        }
    }
}
