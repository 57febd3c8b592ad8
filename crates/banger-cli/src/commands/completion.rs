//! `banger completion bash|zsh|fish`: the registration script for live
//! completion (see [`crate::complete`]).

use std::io::Write;
use std::process::ExitCode;

use crate::args::CompletionArgs;

pub(super) fn run(args: &CompletionArgs) -> anyhow::Result<ExitCode> {
    let script = crate::complete::script(args.shell)?;
    std::io::stdout().write_all(&script)?;
    Ok(ExitCode::SUCCESS)
}
