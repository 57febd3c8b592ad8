//! `banger __generate-man DIR` (hidden): man pages generated from the clap
//! tree, one per command (`banger.1`, `banger-vm-run.1`, …). `make install`
//! puts them in PREFIX/share/man/man1.

use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

use crate::args::{Cli, GenerateManArgs};

pub(super) fn generate(args: &GenerateManArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    clap_mangen::generate_to(Cli::command(), &args.dir)
        .with_context(|| format!("writing man pages into {}", args.dir.display()))?;
    Ok(ExitCode::SUCCESS)
}
