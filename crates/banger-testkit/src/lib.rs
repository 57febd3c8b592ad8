//! Test harness for banger's integration and end-to-end tests.
//!
//! [`TestEnv`] gives each test its own `$HOME` and XDG directories (so its
//! own daemon, socket, database and logs) and runs the real binaries from
//! the workspace's target directory. Dropping it stops the test's daemon.
//!
//! Layout:
//! - [`env`]: [`TestEnv`], binaries, running commands.
//! - [`sim`]: [`sim::SimEnv`], a daemon with sim VMs in its own network
//!   namespace, leak assertions and diagnostics.
//! - [`user`]: end-to-end worlds run by an ordinary user through
//!   `banger-helper` (`BANGER_E2E_USER`).
//! - [`http`]: a small HTTP server on loopback (release downloads).
//! - [`release`]: signed test releases for `banger update`.
//! - [`fixtures`]: root filesystems built with banger's bootstrap code,
//!   cached under `.cache/` (the developer image's tree).
//! - [`skip`]: tests that cannot run here, logged for the run's summary
//!   (and failing in CI when CI provides what they lack).

pub mod env;
pub mod fixtures;
pub mod http;
pub mod netns;
pub mod release;
pub mod sim;
pub mod skip;
pub mod units;
pub mod user;

pub use env::{Output, TestEnv, binary};
pub use sim::{SimEnv, e2e_ready};
pub use skip::{Prerequisite, have_or_skip, root_or_skip, skip};
