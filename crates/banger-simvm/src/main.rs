//! `banger-simvm`: see the library docs.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The guest helper must stay single-threaded: dispatch before anything
    // (tokio, logging) starts a thread.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(banger_simvm::guest::proto::HELPER_ARG))
    {
        banger_simvm::guest::helper_main();
    }
    let args = banger_simvm::cli::Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("banger-simvm: could not start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(banger_simvm::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("banger-simvm: {error:#}");
            ExitCode::FAILURE
        }
    }
}
