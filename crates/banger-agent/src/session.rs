//! `banger-session PROGRAM ARGS...`: runs the command of an SSH session
//! (`banger vm ssh NAME -- CMD`, `banger vm run -- CMD`) and takes it down
//! when the session goes away.
//!
//! Without a terminal, sshd does not signal a session's command when the
//! client disconnects: the command keeps running until it happens to write
//! to a closed pipe. banger's remote command line `exec`s this program in
//! place of the shell sshd started, so its parent is the session's sshd. It
//! asks the kernel for `SIGHUP` when that parent exits
//! (`PR_SET_PDEATHSIG`), runs the command as its child in its own process
//! group (sshd made the session a new process group), and on `SIGHUP` or
//! `SIGTERM` passes the signal on to that group, then `SIGKILL`s what is
//! left after [`GRACE`]. Otherwise it waits and exits with the command's
//! status (128+N when the command died of signal N, as a shell reports it).
//!
//! `SIGINT` and `SIGQUIT` are not passed on: with a terminal the kernel
//! delivers Ctrl-C to the whole foreground group already, and a terminal's
//! hangup reaches the group by itself.
//!
//! Installed in guests as `/usr/local/libexec/banger-session`, a symlink to
//! the agent binary, which dispatches on its name.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, killpg, pthread_sigmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpgrp, getpid, getppid};

/// How long the command's group has between `SIGHUP`/`SIGTERM` and `SIGKILL`.
pub const GRACE: Duration = Duration::from_secs(5);

/// The name the agent answers to as the session guard.
pub const SESSION_NAME: &str = "banger-session";

const USAGE: &str = "usage: banger-session PROGRAM [ARGS...]
Runs PROGRAM for an SSH session and stops it (and its process group) when the
session's sshd goes away. banger's remote command lines use it.";

/// The signals the guard handles itself (all blocked, taken with `sigwait`).
fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGCHLD,
    ] {
        set.add(signal);
    }
    set
}

/// Runs the guard with `args` (after the program name).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let Some((program, rest)) = args.split_first() else {
        eprintln!("{SESSION_NAME}: {USAGE}");
        return ExitCode::from(2);
    };
    if program == "--help" || program == "-h" {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let parent = getppid();
    if let Err(err) = nix::sys::prctl::set_pdeathsig(Signal::SIGHUP) {
        // Without it the command still runs; only the clean-up is lost.
        eprintln!("{SESSION_NAME}: warning: cannot watch the session: {err}");
    }
    let signals = handled();
    if let Err(err) = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals), None) {
        eprintln!("{SESSION_NAME}: cannot block signals: {err}");
        return ExitCode::from(126);
    }
    let child = match crate::exec::spawn(program, rest) {
        Ok(child) => child,
        Err(err) => {
            eprintln!("{SESSION_NAME}: {}: {err}", program.to_string_lossy());
            return ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    };
    let child = Pid::from_raw(child as i32);
    // The parent may have gone between getppid and prctl.
    let mut stopping = getppid() != parent;
    if stopping {
        forward(child, Signal::SIGHUP);
        stop(child);
    }
    loop {
        if let Some(code) = reap(child) {
            return ExitCode::from(code);
        }
        let signal = match signals.wait() {
            Ok(signal) => signal,
            Err(err) => {
                eprintln!("{SESSION_NAME}: waiting for signals: {err}");
                return ExitCode::from(126);
            }
        };
        match signal {
            Signal::SIGHUP | Signal::SIGTERM if !stopping => {
                stopping = true;
                forward(child, signal);
                stop(child);
            }
            _ => {}
        }
    }
}

/// The command's exit status when it has ended.
fn reap(child: Pid) -> Option<u8> {
    match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Some(code as u8),
        Ok(WaitStatus::Signaled(_, signal, _)) => Some(128u8.saturating_add(signal as u8)),
        Ok(_) => None,
        // ECHILD: nothing left to wait for.
        Err(_) => Some(1),
    }
}

/// Passes `signal` to the command and, when the guard leads its process
/// group (as sshd's session does), to everything in that group. The guard
/// has the signals it handles blocked; `SIGKILL` ends it too, which is fine
/// once the session is gone.
fn forward(child: Pid, signal: Signal) {
    let _ = kill(child, signal);
    let group = getpgrp();
    if group == getpid() {
        let _ = killpg(group, signal);
    }
}

/// After [`GRACE`], `SIGKILL`s whatever of the command is left (the process
/// exits earlier, taking this thread with it, when the command ends).
fn stop(child: Pid) {
    std::thread::spawn(move || {
        std::thread::sleep(GRACE);
        forward(child, Signal::SIGKILL);
    });
}
