//! banger's domain model: the types every other crate speaks, with their
//! validation. Nothing here performs I/O except [`layout::Layout::from_env`],
//! which reads environment variables.
//!
//! Layout:
//! - [`name`]: VM/image/kernel names (DNS labels) and friendly name generation.
//! - [`id`]: random hex identifiers and prefix matching.
//! - [`size`]: byte sizes such as `8G`.
//! - [`spec`]: a VM's size (vcpu, memory, disk).
//! - [`config`]: `config.toml` parsing and validation.
//! - [`check`]: a readiness check's outcome (`banger doctor`).
//! - [`contract`]: paths and names banger's programs agree on (guest
//!   paths, banger-simvm's host links).
//! - [`file_sync`]: `[[file_sync]]` entries.
//! - [`host_files`]: files a new work disk takes straight from the host.
//! - [`defaults`]: the three-layer VM defaults resolver with provenance.
//! - [`distro`]: the distributions images and kernels are built from.
//! - [`layout`]: where banger keeps config, state, sockets and logs.
//! - [`vm`], [`image`], [`kernel`]: the records the store keeps.
//! - [`resolve`]: a user's reference (name, id, id prefix) to a record.
//! - [`publish`]: ports published from the host into a guest (`-p`).

pub mod check;
pub mod config;
pub mod contract;
pub mod defaults;
pub mod distro;
pub mod file_sync;
pub mod host_files;
pub mod id;
pub mod image;
pub mod kernel;
pub mod layout;
pub mod name;
pub mod publish;
pub mod resolve;
pub mod shell;
pub mod size;
pub mod spec;
pub mod vm;

pub use id::Id;
pub use name::Name;
pub use size::ByteSize;
pub use spec::VmSpec;
