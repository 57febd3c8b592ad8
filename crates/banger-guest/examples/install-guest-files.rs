//! Installs banger's guest files into a root filesystem directory, by hand:
//!
//! `cargo run -p banger-guest --example install-guest-files -- ROOTFS AGENT_BINARY`

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [rootfs, agent] = args.as_slice() else {
        eprintln!("usage: install-guest-files ROOTFS AGENT_BINARY");
        return ExitCode::from(2);
    };
    match banger_guest::install_into_dir(rootfs, agent) {
        Ok(()) => {
            for entry in &banger_guest::GuestFiles::new(agent) {
                println!("installed {}", entry.path);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("install-guest-files: {message}");
            ExitCode::FAILURE
        }
    }
}
