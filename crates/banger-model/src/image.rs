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
    Bootstrap { distro: String, mirror: String },
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
