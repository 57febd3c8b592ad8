//! The [`Host`] seam: every question a check asks the machine.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::ownership::ForeignFiles;

/// What opening and exercising `/dev/kvm` showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmProbe {
    /// `/dev/kvm` does not exist.
    Missing,
    /// It exists but could not be opened read-write.
    Open(String),
    /// `KVM_GET_API_VERSION` failed.
    ApiVersion(String),
    /// The kernel speaks another KVM API than the stable one (12).
    UnexpectedApi(i32),
    /// `KVM_CREATE_VM` failed (e.g. virtualisation disabled in firmware,
    /// or another hypervisor holds VT-x).
    CreateVm(String),
    /// A VM file descriptor was created and closed again.
    Usable { api_version: i32 },
}

/// What opening a character device showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceProbe {
    Missing,
    Unusable(String),
    Usable,
}

/// The privileges of the process running the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    pub euid: u32,
}

impl Privileges {
    pub fn is_root(&self) -> bool {
        self.euid == 0
    }
}

/// Space on the filesystem holding a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes available to an unprivileged writer.
    pub available: u64,
    pub total: u64,
}

/// Everything the checks ask the machine. Implementations answer; they
/// never judge (that is the checks' job).
pub trait Host: Send + Sync + fmt::Debug {
    /// `uname -m`, e.g. `x86_64`.
    fn arch(&self) -> String;
    /// Opens `/dev/kvm`, asks its API version and creates (then drops) a VM.
    fn kvm(&self) -> KvmProbe;
    /// Opens a character device read-write.
    fn device(&self, path: &Path) -> DeviceProbe;
    /// A program on `PATH`, then in `/usr/sbin` and `/sbin`.
    fn find_program(&self, name: &str) -> Option<PathBuf>;
    /// Whether `path` is an executable file.
    fn is_executable(&self, path: &Path) -> bool;
    /// The first line `program --version` prints.
    fn program_version(&self, program: &Path) -> Result<String, String>;
    fn privileges(&self) -> Privileges;
    /// Space on the filesystem of `dir` (or of its nearest existing parent).
    fn free_space(&self, dir: &Path) -> Result<Space, String>;
    /// Resolves `name` through the system resolver (getaddrinfo), giving up
    /// after `timeout`.
    fn resolve(&self, name: &str, timeout: Duration) -> Result<Vec<IpAddr>, String>;
    /// Whether a regular file exists.
    fn file_exists(&self, path: &Path) -> bool;
    /// What in `dirs` belongs to another uid than `uid`.
    fn foreign_owned(&self, dirs: &[PathBuf], uid: u32) -> ForeignFiles;
}
