//! banger's images and kernels built locally from a distribution's own
//! packages, with nothing hosted by banger: `image bootstrap` runs
//! `debootstrap` (minbase + sshd, iproute2, git, …) against the
//! distribution's mirror; `kernel bootstrap` downloads the distribution's
//! cloud kernel and a static busybox with the host's apt under a private
//! configuration, extracts an uncompressed `vmlinux` and builds an initrd
//! that loads the virtio, vsock and ext4 modules before switching to
//! `/dev/vda`. Trust comes from the distribution's signed archive: apt and
//! debootstrap verify the mirror's `InRelease` against the archive keyring
//! and every package against the signed indices.
//!
//! The daemon's services (`image.bootstrap`, `kernel.bootstrap`) are thin
//! wrappers around this crate; what needs root sits behind
//! [`host::BootstrapHost`].
//!
//! Layout:
//! - [`distro`]: known distributions (mirror, keyring, kernel package), parsing
//!   `debian:bookworm`; defined in banger-model so the CLI needs no build code.
//! - [`rootfs`]: the debootstrap plan, its progress phases, cleaning the built tree, releasing mounts.
//! - [`host`]: [`host::BootstrapHost`] (running debootstrap, releasing mounts), real and fake.
//! - [`apt`]: a private apt configuration under banger's cache; update, show, download.
//! - [`deb`]: reading `.deb` packages without installing them.
//! - [`decompress`]: gzip, xz, lzma, lz4 (legacy), zstd and bzip2, detected by magic.
//! - [`vmlinux`]: bzImage → uncompressed ELF `vmlinux`.
//! - [`modules`]: `.modinfo` dependencies and module load order.
//! - [`cpio`]: the `newc` archive format.
//! - [`initrd`]: the initrd (busybox, `/init`, modules).
//! - [`kernel`]: kernel package + busybox package → `vmlinux` + `initrd.img`.
//! - [`default_image`]: where the default image comes from, for `doctor`.
//! - [`exec`]: the only module that starts processes.

pub mod apt;
pub mod cpio;
pub mod deb;
pub mod decompress;
pub mod default_image;
pub use banger_model::distro;
pub mod exec;
pub mod host;
pub mod initrd;
pub mod kernel;
pub mod modules;
pub mod rootfs;
pub mod vmlinux;

pub use default_image::{DefaultImageSource, default_image_source};
pub use distro::Distro;
pub use host::{BootstrapHost, FakeBootstrap, HostBootstrap, TreeOwner};

/// Whether `distro`'s archive keyring is installed on this host.
pub fn keyring_present(distro: &distro::Distro) -> bool {
    std::path::Path::new(distro.keyring).is_file()
}
