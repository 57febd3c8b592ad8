//! `banger-helper`: see the library docs.

use std::path::PathBuf;
use std::process::ExitCode;

use banger_helper::serve::{ServeOptions, serve};
use banger_helper::{DEFAULT_GROUP, DEFAULT_SOCKET};
use clap::{Parser, Subcommand};

/// The root helper of banger: bridge, user-owned TAPs, NAT and DNS routing
/// for banger daemons that run as their users.
#[derive(Debug, Parser)]
#[command(name = "banger-helper", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve in the foreground (as root) until SIGTERM or SIGINT.
    Serve {
        /// The socket to listen on (made 0660, root and GROUP).
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// The group whose members may use the helper.
        #[arg(long, default_value = DEFAULT_GROUP)]
        group: String,
        /// banger-simvm, for sim guests (default: next to banger-helper,
        /// else in PATH).
        #[arg(long, value_name = "PATH")]
        simvm: Option<PathBuf>,
        /// Start no sim guests. Sim guests run as root in namespaces, so a
        /// member who may start them is root-equivalent (like the docker
        /// group); Firecracker and QEMU VMs are not.
        #[arg(long, conflicts_with = "simvm")]
        no_sim: bool,
        /// Where debootstrap's downloaded packages are kept for the images
        /// built for members.
        #[arg(long, value_name = "DIR", default_value = banger_helper::service::DEFAULT_CACHE_DIR)]
        cache_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BANGER_HELPER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("banger-helper: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.command {
        Command::Serve {
            socket,
            group,
            simvm,
            no_sim,
            cache_dir,
        } => runtime.block_on(serve(ServeOptions {
            socket,
            group,
            simvm,
            no_sim,
            cache_dir,
        })),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("banger-helper: {error:#}");
            ExitCode::FAILURE
        }
    }
}
