//! Putting a host git checkout into a VM at `/root/repo`, and getting the
//! work done there back as a patch. Runs in the CLI, as the user, over the
//! VM's SSH: the user's own git reads the repository (a root daemon would
//! trip git's ownership checks), and the guest receives one stream.
//!
//! Layout:
//! - [`repo`]: reading the host repository (top level, bare, submodules,
//!   HEAD, the files of the working tree, identities).
//! - [`payload`]: the tar stream sent to the guest (bundle, overlay, metadata,
//!   and the constant script that applies it).
//! - [`export`]: the patch of everything since the base commit.

pub mod export;
pub mod payload;
pub mod repo;

pub use repo::{PrepareError, Repo};

/// Where the checkout lives in the guest.
pub const GUEST_REPO: &str = "/root/repo";
