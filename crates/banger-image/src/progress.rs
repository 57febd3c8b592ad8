//! Progress reporting for pulls and downloads.
//!
//! Long operations call [`Progress::event`] with owned, serialisable
//! [`ProgressEvent`]s, so the daemon can forward them over its socket and
//! the CLI can draw bars on a terminal or print plain lines otherwise. Byte
//! events carry both the blob's and the whole operation's counts, so a
//! consumer needs no state of its own to draw an overall bar.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// What happened to a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobState {
    /// Already in the cache, verified when it was stored: nothing to fetch.
    Cached,
    /// A download started, `done` bytes already on disk from an earlier try.
    Started,
    /// More bytes arrived.
    Downloading,
    /// Downloaded completely, digest verified, stored in the cache.
    Verified,
    /// A transfer failed and is being retried from `done`.
    Retrying,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProgressEvent {
    /// The manifest was resolved: what the pull consists of.
    Resolved {
        reference: String,
        manifest_digest: String,
        layers: usize,
        /// Compressed bytes of all layers (and config).
        total_bytes: u64,
        /// Of those, already in the cache.
        cached_bytes: u64,
    },
    /// Bytes of one blob (a layer, a config or a catalog artifact).
    Blob {
        digest: String,
        state: BlobState,
        done: u64,
        total: u64,
        overall_done: u64,
        overall_total: u64,
    },
    /// A layer is being applied to the staging directory.
    LayerApplying {
        digest: String,
        index: usize,
        count: usize,
    },
    /// A layer was applied.
    LayerApplied {
        digest: String,
        index: usize,
        count: usize,
        entries: u64,
        bytes: u64,
    },
    /// A catalog artifact download (name as the catalog lists it).
    Download {
        artifact: String,
        state: BlobState,
        done: u64,
        total: u64,
    },
}

/// Receives progress events. Implemented for closures, so
/// `&|event: &ProgressEvent| eprintln!("{event:?}")` works.
pub trait Progress: Send + Sync {
    fn event(&self, event: &ProgressEvent);
}

impl<F> Progress for F
where
    F: Fn(&ProgressEvent) + Send + Sync,
{
    fn event(&self, event: &ProgressEvent) {
        self(event);
    }
}

/// Discards every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: &ProgressEvent) {}
}

/// Shared overall byte counters for concurrent downloads.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overall {
    done: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
}

impl Overall {
    pub(crate) fn new(total: u64) -> Self {
        let overall = Self::default();
        overall.total.store(total, Ordering::Relaxed);
        overall
    }

    pub(crate) fn add(&self, bytes: u64) -> u64 {
        self.done.fetch_add(bytes, Ordering::Relaxed) + bytes
    }

    /// Bytes that will not arrive after all (a restart from zero).
    pub(crate) fn sub(&self, bytes: u64) -> u64 {
        self.done.fetch_sub(bytes, Ordering::Relaxed) - bytes
    }

    pub(crate) fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}
