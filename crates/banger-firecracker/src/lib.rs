//! banger's side of the VMM boundary: the Firecracker v1.16 API types, a
//! typed client for them, the guest kernel command line, and launching VMM
//! processes (`firecracker` or `banger-simvm`, which speak the same API).
//!
//! Layout:
//! - [`api`]: request and response bodies, field for field from Firecracker's
//!   swagger, with Firecracker's own strictness and value limits.
//! - [`client`]: [`client::ApiClient`], HTTP/1.1 over a unix socket (or any
//!   stream), errors carrying the status and `fault_message`.
//! - [`boot_args`]: [`boot_args::BootArgs`] builds the kernel command line
//!   banger sends; [`boot_args::Cmdline`] parses it back (used by simvm).
//! - [`launch`]: start a VMM detached (through `banger-exec`), wait for its API, configure and boot
//!   it, stop or kill it, find it again by its API socket.
//! - [`vmm`]: the [`vmm::Vmm`] seam the daemon uses, the real
//!   [`vmm::ProcessVmm`] and the recording [`vmm::FakeVmm`].
//! - `pidfd`: race-free signalling and exit watching of VMMs, including re-adopted ones.

pub mod api;
pub mod boot_args;
pub mod client;
pub mod launch;
pub mod pidfd;
pub mod vmm;

pub use client::{ApiClient, ApiRequestError};
pub use launch::{LaunchSpec, VmConfig, VmmProcess};
pub use vmm::{FakeVmm, ProcessVmm, Vmm};
