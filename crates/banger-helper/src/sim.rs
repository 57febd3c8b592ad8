//! Sim guests for daemons that are not root: [`SimGuests`] starts
//! `banger-simvm` (the `sim` engine: the guest's root drive in Linux
//! namespaces) as root for a caller, finds it again and kills it, and
//! nothing else.
//!
//! What a caller may ask for:
//! - the VMM's files (API socket, console log, VMM log) are direct children
//!   of one directory, reached from `/` without a symlink, owned by the
//!   caller and writable by nobody else; the logs already exist as the
//!   caller's regular files (its daemon made them), and the console is
//!   opened here, relative to that directory, without following a link;
//! - simvm gets `--owner UID:GID` and gives its sockets to the caller;
//! - at most [`MAX_SIMS_PER_UID`] running at once.
//!
//! Which simvm is whose is read from the kernel, so a restarted helper
//! forgets nothing: a process of real uid 0 whose executable is this
//! helper's simvm and whose command line says `--owner UID:…`.
//!
//! Trust boundary: the guest runs as root in namespaces, and simvm mounts
//! the caller's disk images as root. A member who may start sim guests is
//! root-equivalent, like a member of the `docker` group; `banger-helper
//! serve --no-sim` turns this off.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use banger_firecracker::launch::{FindVmmError, InvalidId, find_pid_by_api_socket, validate_id};
use nix::sys::signal::Signal;

use crate::caller::Caller;
use crate::paths::{PathError, open_own_dir, open_own_file, plain_parent};
use crate::protocol::{Existed, FindSimParams, SimFound, SimStarted, StartSimParams};

/// The most sim guests the helper runs for one uid at once.
pub const MAX_SIMS_PER_UID: usize = 256;

/// Why a sim request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("this banger-helper does not start sim guests ({0})")]
    Disabled(String),
    #[error("invalid vm id")]
    InvalidId(#[source] InvalidId),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("{path} is not in {dir}, the directory of the api socket")]
    OtherDir { path: PathBuf, dir: PathBuf },
    #[error(
        "uid {uid} already runs {limit} sim guests, the most banger-helper starts for one user"
    )]
    TooMany { uid: u32, limit: usize },
    #[error("cannot start {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: banger_exec::ExecError,
    },
    #[error("process {pid} is not a sim guest banger-helper started for uid {uid}")]
    NotYourProcess { pid: u32, uid: u32 },
    #[error("cannot kill sim guest {pid}")]
    Kill {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Find(#[from] FindVmmError),
}

impl SimError {
    pub fn code(&self) -> banger_rpc::ErrorCode {
        use banger_rpc::ErrorCode;
        match self {
            Self::Disabled(_) => ErrorCode::FailedPrecondition,
            Self::Path(error) => error.code(),
            Self::InvalidId(_) | Self::OtherDir { .. } => ErrorCode::InvalidArgument,
            Self::NotYourProcess { .. } => ErrorCode::PermissionDenied,
            Self::TooMany { .. } => ErrorCode::ResourceExhausted,
            Self::Spawn { .. } | Self::Kill { .. } | Self::Find(_) => ErrorCode::Internal,
        }
    }
}

/// Starting sim guests, when this helper does it.
#[derive(Debug, Clone)]
pub struct SimGuests {
    /// `banger-simvm`, canonical; `Err` says why sim guests are off.
    binary: Result<PathBuf, String>,
}

impl SimGuests {
    /// Sim guests run by `binary` (made canonical, as `/proc/PID/exe`
    /// shows it).
    pub fn new(binary: &Path) -> std::io::Result<Self> {
        Ok(Self {
            binary: Ok(std::fs::canonicalize(binary)?),
        })
    }

    /// No sim guests; requests are refused with `why`.
    pub fn disabled(why: impl Into<String>) -> Self {
        Self {
            binary: Err(why.into()),
        }
    }

    /// The simvm binary, when sim guests are on.
    pub fn binary(&self) -> Option<&Path> {
        self.binary.as_deref().ok()
    }

    fn require(&self) -> Result<&Path, SimError> {
        self.binary
            .as_deref()
            .map_err(|why| SimError::Disabled(why.clone()))
    }

    /// Starts simvm for `caller`; answers its pid.
    pub async fn start(
        &self,
        caller: &Caller,
        params: StartSimParams,
    ) -> Result<SimStarted, SimError> {
        let binary = self.require()?;
        validate_id(&params.id).map_err(SimError::InvalidId)?;
        let dir = plain_parent(&params.api_socket)?;
        for path in [Some(&params.console_log), params.log_path.as_ref()]
            .into_iter()
            .flatten()
        {
            if plain_parent(path)? != dir {
                return Err(SimError::OtherDir {
                    path: path.clone(),
                    dir,
                });
            }
        }
        let dir_fd = open_own_dir(caller, &dir)?;
        let console = open_own_file(caller, &dir_fd, &params.console_log)?;
        if let Some(log) = &params.log_path {
            drop(open_own_file(caller, &dir_fd, log)?);
        }
        let running = self.pids_of(caller.uid).len();
        if running >= MAX_SIMS_PER_UID {
            return Err(SimError::TooMany {
                uid: caller.uid,
                limit: MAX_SIMS_PER_UID,
            });
        }
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("--api-sock"),
            params.api_socket.as_os_str(),
            OsStr::new("--id"),
            OsStr::new(&params.id),
            OsStr::new("--engine"),
            OsStr::new("sim"),
        ];
        if let Some(log) = &params.log_path {
            args.extend([OsStr::new("--log-path"), log.as_os_str()]);
        }
        let owner = format!("{}:{}", caller.uid, caller.gid);
        args.extend([OsStr::new("--owner"), OsStr::new(&owner)]);
        let mut child = banger_exec::Cmd::new(binary)
            .args(args)
            .spawn_detached_async(Some(console))
            .map_err(|source| SimError::Spawn {
                binary: binary.to_owned(),
                source,
            })?;
        let pid = child.id().unwrap_or_default();
        tracing::info!(uid = caller.uid, pid, id = params.id, "sim guest started");
        // Reap it when it ends (it is detached and outlives a helper that
        // dies first).
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(SimStarted { pid })
    }

    /// SIGKILLs one of the caller's sim guests. `existed` is false when it
    /// was already gone.
    pub fn kill(&self, caller: &Caller, pid: u32) -> Result<Existed, SimError> {
        self.require()?;
        // The pidfd first: the checks below then describe the process it
        // names, or it is gone and the signal finds nobody.
        let fd = match banger_firecracker::pidfd::open(pid) {
            Ok(fd) => fd,
            Err(error) if error.raw_os_error() == Some(libc::ESRCH) => {
                return Ok(Existed { existed: false });
            }
            Err(source) => return Err(SimError::Kill { pid, source }),
        };
        match self.owner_of(pid) {
            Some(uid) if uid == caller.uid => {}
            // Exited or exiting: a zombie (or a leader whose other threads
            // are still going) has no executable left to check.
            None if has_exited(&fd) || is_dead(pid) => return Ok(Existed { existed: false }),
            _ => {
                return Err(SimError::NotYourProcess {
                    pid,
                    uid: caller.uid,
                });
            }
        }
        match banger_firecracker::pidfd::send_signal(&fd, Signal::SIGKILL) {
            Ok(()) => {
                tracing::info!(uid = caller.uid, pid, "sim guest killed");
                Ok(Existed { existed: true })
            }
            Err(error) if error.raw_os_error() == Some(libc::ESRCH) => {
                Ok(Existed { existed: false })
            }
            Err(source) => Err(SimError::Kill { pid, source }),
        }
    }

    /// The pid of the caller's sim guest serving `api_socket`, if one does.
    pub fn find(&self, caller: &Caller, params: FindSimParams) -> Result<SimFound, SimError> {
        self.require()?;
        plain_parent(&params.api_socket)?;
        let Some(pid) = find_pid_by_api_socket(&params.api_socket)? else {
            return Ok(SimFound { pid: None });
        };
        match self.owner_of(pid) {
            Some(uid) if uid == caller.uid => Ok(SimFound { pid: Some(pid) }),
            _ => Err(SimError::NotYourProcess {
                pid,
                uid: caller.uid,
            }),
        }
    }

    /// The running sim guests started for `uid`.
    fn pids_of(&self, uid: u32) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| self.owner_of(*pid) == Some(uid))
            .collect()
    }

    /// The uid a helper started sim guest `pid` for: real uid 0, this
    /// helper's simvm as executable, and `--owner UID:…` on its command
    /// line.
    fn owner_of(&self, pid: u32) -> Option<u32> {
        let binary = self.binary()?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        if exe != binary {
            return None;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let real_uid = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))?
            .split_whitespace()
            .next()?;
        if real_uid != "0" {
            return None;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        owner_in_cmdline(&cmdline)
    }
}

/// Whether the process behind a pidfd has exited (the pidfd is readable).
fn has_exited(fd: &OwnedFd) -> bool {
    let mut poll = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    matches!(nix::poll::poll(&mut poll, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Whether `pid` is a zombie or dead (`/proc/PID/stat`'s state), or gone.
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => true,
    }
}

/// The uid of `--owner UID:GID` in a NUL-separated command line.
fn owner_in_cmdline(cmdline: &[u8]) -> Option<u32> {
    let mut args = cmdline.split(|b| *b == 0);
    while let Some(arg) = args.next() {
        if arg == b"--owner" {
            let value = std::str::from_utf8(args.next()?).ok()?;
            return value.split_once(':')?.0.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_read_from_the_command_line() {
        let cmdline = b"/usr/lib/banger/banger-simvm\0--api-sock\0/x\0--owner\x001000:1000\0";
        assert_eq!(owner_in_cmdline(cmdline), Some(1000));
        assert_eq!(owner_in_cmdline(b"banger-simvm\0--api-sock\0/x\0"), None);
        assert_eq!(owner_in_cmdline(b"banger-simvm\0--owner\0"), None);
        assert_eq!(owner_in_cmdline(b"banger-simvm\0--owner\0x:1\0"), None);
    }
}
