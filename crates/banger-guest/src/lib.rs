//! What goes into a banger guest, and how the host talks to it.
//!
//! This crate owns the guest-side files banger injects into every image: the
//! `banger-first-boot` script (PID 1 for images without an initrd, a systemd
//! oneshot otherwise, and banger-simvm's container mode), the systemd units,
//! the sshd drop-in and the agent binary's place. They are described as data
//! ([`GuestFiles`]) so that a directory installer ([`install_into_dir`]) and
//! an ext4 image editor can both write them. It also owns the guest agent's
//! protocol: the JSON types `banger-vsock-agent` serves and a host-side client
//! that reaches it through Firecracker's hybrid vsock socket.
//!
//! Layout:
//! - [`files`]: the embedded files, their guest paths and modes, [`GuestFiles`].
//! - [`install`]: writing [`GuestFiles`] into a rootfs directory through
//!   `banger-rootfs`, resolving the rootfs's symlinks inside it.
//! - [`agent`]: `/healthz` and `/ports` response types and [`agent::AgentClient`].

pub mod agent;
pub mod files;
pub mod install;

pub use files::{EntryKind, FileSource, GuestEntry, GuestFiles};
pub use install::{InstallGuestFilesError, install_into_dir};
