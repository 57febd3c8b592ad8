//! Integration tests: the real `banger` and `bangerd` binaries in an
//! isolated XDG environment per test.

mod cli;
mod daemon;
mod e2e_bootstrap;
mod e2e_images;
mod e2e_lifecycle;
mod e2e_workspace;
mod protocol;
