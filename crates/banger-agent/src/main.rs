//! `banger-vsock-agent --listen vsock:PORT | unix:PATH`
//!
//! Called as `banger-session` (a symlink in the guest), it is the guard
//! around an SSH session's command instead ([`banger_agent::session`]).
//!
//! Arguments are parsed by hand: one flag does not justify clap's size in a
//! binary that is copied into every guest image.

use std::process::ExitCode;

use banger_agent::{ListenAddr, server, session};

const USAGE: &str = "usage: banger-vsock-agent --listen vsock:PORT|unix:PATH

Serves GET /healthz and GET /ports (listening sockets in this guest).
  --listen vsock:PORT   listen on vsock PORT (Firecracker guests; banger uses 1024)
  --listen unix:PATH    listen on a unix socket (banger-simvm guests, tests)
  --version             print the version";

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let called_as = args
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|path| path.file_name().map(|name| name.to_owned()));
    if called_as.as_deref() == Some(std::ffi::OsStr::new(session::SESSION_NAME)) {
        return session::main(args.collect());
    }
    let args = match args
        .map(|arg| arg.into_string())
        .collect::<Result<Vec<String>, _>>()
    {
        Ok(args) => args,
        Err(arg) => {
            eprintln!("banger-vsock-agent: argument {arg:?} is not UTF-8\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listen = match parse_args(args.into_iter()) {
        Ok(Some(listen)) => listen,
        Ok(None) => return ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("banger-vsock-agent: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("banger-vsock-agent: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("banger-vsock-agent: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(None)` when the arguments asked for help or the version.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<ListenAddr>, String> {
    let mut listen = None;
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--version" | "-V" => {
                println!("banger-vsock-agent {}", server::AGENT_VERSION);
                return Ok(None);
            }
            "--listen" => args.next().ok_or("--listen needs a value")?,
            other => match other.strip_prefix("--listen=") {
                Some(value) => value.to_owned(),
                None => return Err(format!("unexpected argument {other:?}")),
            },
        };
        listen = Some(value.parse::<ListenAddr>().map_err(|e| e.to_string())?);
    }
    listen
        .map(Some)
        .ok_or_else(|| "--listen is required".to_owned())
}

async fn run(listen: ListenAddr) -> Result<(), String> {
    let bound = listen.bind().await.map_err(|e| chain(&e))?;
    eprintln!(
        "banger-vsock-agent {} listening on {listen}",
        server::AGENT_VERSION
    );
    bound
        .serve(server::router(), shutdown_signal())
        .await
        .map_err(|e| chain(&e))?;
    eprintln!("banger-vsock-agent: stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the default action (exit) still applies.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
