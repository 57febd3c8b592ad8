//! Test harness for banger's integration and end-to-end tests.
//!
//! [`TestEnv`] gives each test its own `$HOME` and XDG directories (so its
//! own daemon, socket, database and logs) and runs the real binaries from
//! the workspace's target directory. Dropping it stops the test's daemon.
//!
//! Layout:
//! - [`env`]: [`TestEnv`], binaries, running commands, diagnostics.

pub mod env;

pub use env::{Output, TestEnv, binary};
