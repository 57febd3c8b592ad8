//! The one place banger starts processes.
//!
//! Every program banger runs is built as a [`Cmd`]: a program and its
//! arguments, each passed to the kernel as its own argument (never a shell
//! string put together from input). A finished run is an [`Output`]; what
//! went wrong is one [`ExecError`]: the program is missing, could not be
//! started, exited non-zero (with its trimmed stderr), was killed by a
//! signal, or did not finish in time. Programs are looked up on `PATH`
//! through the `which` crate ([`find_program`]).
//!
//! The other banger crates keep thin domain wrappers (`mkfs_ext4(…)`,
//! `ssh_keygen(…)`) over this crate; a test in `banger-testkit` keeps
//! `std::process::Command` and `tokio::process::Command` out of them.
//!
//! Layout:
//! - [`cmd`]: the builder and its synchronous ways to run (to an output, to
//!   a status, with bytes on stdin, with a timeout, spawned, detached).
//! - `tokio_run`: the same, asynchronously (`*_async`).
//! - [`error`]: [`ExecError`] and how a command line is shown in messages.
//! - [`find`]: PATH lookup.
//! - [`fork`]: fork(2) without exec, for simvm's single-threaded helper.

pub mod cmd;
pub mod error;
pub mod find;
pub mod fork;
mod tokio_run;
mod userns;

pub use cmd::{Cmd, Output};
pub use error::ExecError;
pub use find::{SBIN, find_program, require_program};
pub use fork::{Forked, fork};

/// Re-exported so callers set up stdio without naming `std::process`.
pub use std::process::{Child, ExitStatus, Stdio};
