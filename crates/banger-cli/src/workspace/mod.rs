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
//! - [`tree`]: reading the working tree beneath its top directory, never
//!   through a symlink.
//! - [`export`]: the patch of everything since the base commit.

pub mod export;
pub mod payload;
pub mod repo;
pub mod stage;
pub mod tree;

pub use repo::{PrepareError, Repo};

/// Where the checkout lives in the guest.
pub const GUEST_REPO: &str = "/root/repo";

/// Installs the repository's tools with mise when the image has mise and
/// the repository pins tools (`mise.toml`, `.mise.toml`, `.tool-versions`).
/// Best effort: failures are logged in the guest, never fatal. Run for
/// interactive workspace sessions only.
pub const MISE_BOOTSTRAP: &str = "cd /root/repo || exit 0; \
    mise=$(command -v mise || { test -x /root/.local/bin/mise && echo /root/.local/bin/mise; }) || exit 0; \
    { test -f mise.toml || test -f .mise.toml || test -f .tool-versions; } || exit 0; \
    mkdir -p /root/.cache/banger; log=/root/.cache/banger/mise-bootstrap.log; \
    echo \"installing tools with mise (log: $log)\" >&2; \
    { \"$mise\" trust --yes . && \"$mise\" install --yes; } >\"$log\" 2>&1 \
    || echo \"mise install failed; see $log in the VM\" >&2";
