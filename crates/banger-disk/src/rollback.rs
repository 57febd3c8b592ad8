//! Handles acquired by multi-step setups, released in reverse order on
//! failure (and by teardown).

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::exec::ExecError;
use crate::host::BlockHost;
use crate::loopdev::{DetachLoopError, LoopDevice};

/// One host resource a setup acquired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Handle {
    /// A file this crate created.
    File { path: PathBuf },
    /// A loop device bound to `backing`.
    Loop {
        device: LoopDevice,
        backing: PathBuf,
    },
    /// A device-mapper device.
    Dm { name: String },
}

impl std::fmt::Display for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File { path } => write!(f, "file {}", path.display()),
            Self::Loop { device, backing } => write!(f, "loop {device} ({})", backing.display()),
            Self::Dm { name } => write!(f, "dm device {name}"),
        }
    }
}

/// Releasing one handle failed.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("cannot remove {path}")]
    RemoveFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot detach {device} ({backing})")]
    DetachLoop {
        device: LoopDevice,
        backing: PathBuf,
        #[source]
        source: DetachLoopError,
    },
    #[error("cannot remove dm device {name}")]
    RemoveDm {
        name: String,
        #[source]
        source: ExecError,
    },
}

/// `error: cause: cause` on one line.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Renders several release failures for an error message.
pub(crate) fn summarize(failures: &[ReleaseError]) -> String {
    failures
        .iter()
        .map(|failure| chain(failure))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Releases one handle. Already-gone resources are not errors.
pub(crate) fn release(host: &impl BlockHost, handle: &Handle) -> Result<(), ReleaseError> {
    match handle {
        Handle::File { path } => {
            host.remove_file(path)
                .map_err(|source| ReleaseError::RemoveFile {
                    path: path.clone(),
                    source,
                })
        }
        Handle::Loop { device, backing } => {
            host.detach_loop(*device, backing)
                .map_err(|source| ReleaseError::DetachLoop {
                    device: *device,
                    backing: backing.clone(),
                    source,
                })
        }
        Handle::Dm { name } => {
            if !host.dm_exists(name) {
                return Ok(());
            }
            host.dm_remove(name)
                .map_err(|source| ReleaseError::RemoveDm {
                    name: name.clone(),
                    source,
                })
        }
    }
}

/// Releases `handles` in reverse order, carrying on past failures, and
/// returns the failures.
pub(crate) fn release_all(host: &impl BlockHost, handles: &[Handle]) -> Vec<ReleaseError> {
    let mut failures = Vec::new();
    for handle in handles.iter().rev() {
        if let Err(error) = release(host, handle) {
            tracing::warn!(%handle, error = %chain(&error), "could not release");
            failures.push(error);
        }
    }
    failures
}

/// Records handles as a setup acquires them; unless disarmed, releases
/// them in reverse order — explicitly through [`Rollback::unwind`], or on
/// drop (a panic half-way through a setup).
pub(crate) struct Rollback<'h, H: BlockHost> {
    host: &'h H,
    handles: Vec<Handle>,
    armed: bool,
}

impl<H: BlockHost> std::fmt::Debug for Rollback<'_, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollback")
            .field("handles", &self.handles)
            .field("armed", &self.armed)
            .finish()
    }
}

impl<'h, H: BlockHost> Rollback<'h, H> {
    pub(crate) fn new(host: &'h H) -> Self {
        Self {
            host,
            handles: Vec::new(),
            armed: true,
        }
    }

    pub(crate) fn push(&mut self, handle: Handle) {
        tracing::trace!(%handle, "acquired");
        self.handles.push(handle);
    }

    /// Setup succeeded: keep everything.
    pub(crate) fn disarm(mut self) -> Vec<Handle> {
        self.armed = false;
        std::mem::take(&mut self.handles)
    }

    /// Setup failed: release everything in reverse; returns what could not
    /// be released.
    pub(crate) fn unwind(mut self) -> Vec<ReleaseError> {
        self.armed = false;
        let handles = std::mem::take(&mut self.handles);
        release_all(self.host, &handles)
    }
}

impl<H: BlockHost> Drop for Rollback<'_, H> {
    fn drop(&mut self) {
        if self.armed && !self.handles.is_empty() {
            let handles = std::mem::take(&mut self.handles);
            let _ = release_all(self.host, &handles);
        }
    }
}
