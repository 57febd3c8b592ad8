//! Integration tests: the real `banger` and `bangerd` binaries in an
//! isolated XDG environment per test.

mod cli;
mod completion;
mod daemon;
mod doctor;
mod e2e_bootstrap;
mod e2e_commands;
mod e2e_developer;
mod e2e_full_disk;
mod e2e_helper;
mod e2e_images;
mod e2e_lifecycle;
mod e2e_qemu;
mod e2e_workspace;
mod install;
mod protocol;
mod ssh_config;
mod update;
mod workspace_input;
