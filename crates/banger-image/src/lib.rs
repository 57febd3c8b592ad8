//! banger's image acquisition: everything between an image name and a
//! staged root filesystem directory.
//!
//! It owns the OCI distribution client (anonymous Docker Hub pulls,
//! plain-http loopback registries), the content-addressed layer cache, the
//! hardened layer unpacker that builds a staging directory, the image
//! metadata the store records, and the kernel/golden-image catalogs. It
//! stops at the staging directory: installing banger's guest files
//! (`banger-guest`) and building the ext4 (`banger-disk`) are composed by
//! the daemon, which then publishes the result:
//!
//! ```text
//! Puller::pull(ref, staging) ─▶ staging/ + ImageMetadata + ContentSize
//!   ─▶ banger_guest::install_into_dir(staging) ─▶ banger_disk::build_ext4_from_dir ─▶ publish
//! ```
//!
//! Layout:
//! - [`reference`](mod@reference): parsing and normalising image references.
//! - [`digest`]: `sha256:` digests and streaming hashing.
//! - [`manifest`]: OCI/Docker manifests, indexes, configs, platform choice.
//! - [`http`]: the HTTP(S) transport (hyper + rustls/ring) and the
//!   plain-http policy.
//! - [`registry`]: the distribution API client and Bearer token auth.
//! - [`cache`]: the verified blob cache with resumable partial downloads.
//! - [`pull`]: [`Puller`], concurrent downloads pipelined with unpacking,
//!   [`ImageMetadata`].
//! - [`unpack`]: [`Unpacker`], applying layer tarballs safely to a
//!   staging directory; [`ContentSize`].
//! - [`catalog`]: embedded/remote catalogs, verified artifact downloads,
//!   extraction and atomic publishing.
//! - [`progress`]: the [`Progress`] callback and its events.

pub mod cache;
pub mod catalog;
pub mod digest;
pub use banger_http as http;
pub mod manifest;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod unpack;

pub use cache::BlobCache;
pub use catalog::{
    ArtifactStore, Catalog, ImageSourceRef, KernelFiles, extract_artifact, install_kernel,
    publish_dir, resolve_image,
};
pub use digest::Digest;
pub use http::{HttpClient, Timeouts, TransportPolicy};
pub use manifest::{ImageConfig, Platform};
pub use progress::{BlobState, NoProgress, Progress, ProgressEvent};
pub use pull::{
    ImageMetadata, PullError, PullOptions, PullStats, PulledImage, Puller, ResolvedImage,
};
pub use reference::{ParseReferenceError, Reference};
pub use unpack::{ContentSize, Refusal, UnpackError, UnpackOptions, Unpacker};
