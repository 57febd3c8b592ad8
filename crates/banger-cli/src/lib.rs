//! The `banger` CLI. `main.rs` only calls [`main`].
//!
//! Layout:
//! - [`args`]: the clap command tree (parsing only).
//! - [`complete`]: live shell completion of VM, image and kernel names.
//! - [`commands`]: one module per verb; each resolves its arguments and acts.
//! - [`daemon_client`]: connecting to `bangerd`, starting it when absent and
//!   restarting it when its build differs from ours.
//! - [`exec`]: every process the CLI starts (the daemon, `ssh`).
//! - [`output`]: tables, JSON, errors and hints.
//! - [`progress`]: rendering the daemon's stage and progress events.
//! - [`ssh_include`]: banger's `Include` block in `~/.ssh/config`, as byte edits.
//! - [`workspace`]: copying a git checkout into a VM and exporting work back.

pub mod args;
pub mod commands;
pub mod complete;
pub mod daemon_client;
pub mod exec;
pub mod output;
pub mod progress;
pub mod ssh_include;
pub mod workspace;

use std::process::ExitCode;

use banger_model::config::Config;
use banger_model::defaults::{HostFacts, VmDefaults};
use banger_model::layout::Layout;
use clap::FromArgMatches;

/// Parses arguments, runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    // A shell asking for completions gets them and nothing else.
    complete::answer_and_exit_if_asked();
    let matches = args::command_with_defaults(&vm_defaults()).get_matches();
    let cli = match args::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(err) => output::report_error(&err),
    }
}

/// The VM defaults as this host and config resolve them, for `--help` and
/// nothing else: a VM's spec is resolved by the daemon, which announces it
/// (see `commands::vm_create`). A broken config falls back to host
/// heuristics here; the command itself reports the error.
pub fn vm_defaults() -> VmDefaults {
    VmDefaults::resolve(&config().vm_defaults, HostFacts::detect())
}

/// `config.toml`, or the defaults when it is missing or broken (the daemon
/// reports a broken config when the command reaches it).
pub fn config() -> Config {
    Layout::from_env()
        .ok()
        .and_then(|layout| Config::load(&layout.config_file()).ok())
        .unwrap_or_default()
}
