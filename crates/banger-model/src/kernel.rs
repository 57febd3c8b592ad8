//! Kernel records: an uncompressed `vmlinux` and an optional initrd.

use std::path::PathBuf;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{Id, Name};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KernelSource {
    Import { path: PathBuf },
    Catalog { name: String, sha256: String },
    Bootstrap { distro: String, package: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernel {
    pub id: Id,
    pub name: Name,
    pub vmlinux_path: PathBuf,
    pub initrd_path: Option<PathBuf>,
    pub version: Option<String>,
    pub source: KernelSource,
    pub created_at: Timestamp,
}
