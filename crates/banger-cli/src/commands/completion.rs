//! `banger completion bash|zsh|fish`

use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell as ClapShell;

use crate::args::{Cli, CompletionArgs, Shell};

pub(super) fn run(args: &CompletionArgs) -> anyhow::Result<ExitCode> {
    let shell = match args.shell {
        Shell::Bash => ClapShell::Bash,
        Shell::Zsh => ClapShell::Zsh,
        Shell::Fish => ClapShell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "banger", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
