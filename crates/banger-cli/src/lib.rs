//! The `banger` CLI. `main.rs` only calls [`main`].
//!
//! Layout:
//! - [`args`]: the clap command tree (parsing only).
//! - [`commands`]: one module per verb; each resolves its arguments and acts.
//! - [`daemon_client`]: connecting to `bangerd`, starting it when absent and
//!   restarting it when its build differs from ours.
//! - [`exec`]: every process the CLI starts (the daemon, `ssh`).
//! - [`output`]: tables, JSON, errors and hints.

pub mod args;
pub mod commands;
pub mod daemon_client;
pub mod exec;
pub mod output;

use std::process::ExitCode;

use clap::Parser;

/// Parses arguments, runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = args::Cli::parse();
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
