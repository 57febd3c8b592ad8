//! `banger update`: from a release URL to swapped binaries, refusing
//! anything that is not signed by banger's release key.
//!
//! A release is a directory of files behind `update_url`:
//!
//! ```text
//! manifest.json          {"version": "0.2.0", "target": "x86_64-linux", "artifacts": [...]}
//! manifest.json.minisig  minisign (Ed25519) signature of manifest.json
//! banger, bangerd, …     the binaries; the manifest pins each one's size and sha256
//! ```
//!
//! The order is what makes it safe: the signature of the manifest is
//! checked against the public key compiled into this binary
//! ([`key::release_key`]) before anything else is read from it; every binary
//! is downloaded next to the file it replaces and must match the signed size
//! and sha256; only when all of them are staged are they swapped in, each by
//! one `rename`, and a failure part-way renames the previous files back.
//!
//! Layout:
//! - [`key`]: the compiled-in release key (and the debug-build test override).
//! - [`manifest`]: the signed manifest and its verification.
//! - [`version`]: release versions and their order.
//! - [`download`]: release downloads over banger-http (plain http only to loopback).
//! - [`install`]: staging next to the targets and the all-or-nothing swap.
//! - [`release`]: the steps composed: fetch and verify, download and stage.

pub mod download;
pub mod install;
pub mod key;
pub mod manifest;
pub mod release;
pub mod version;

pub use download::{DownloadError, Downloader};
pub use install::{RealSwapFs, StageError, Staged, SwapError, SwapFs, swap_all};
pub use key::release_key;
pub use manifest::{Artifact, Manifest, VerifyManifestError};
pub use release::{
    FetchReleaseError, Release, StageArtifactsError, fetch_release, stage_artifacts,
};
pub use version::{ParseVersionError, Version};

/// The binaries a release carries: each `(name, required)`.
pub const BINARIES: &[(&str, bool)] = &[
    ("banger", true),
    ("bangerd", true),
    ("banger-vsock-agent", true),
    ("banger-simvm", false),
];

/// The platform this build runs on, as manifests name it.
pub fn this_target() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}
