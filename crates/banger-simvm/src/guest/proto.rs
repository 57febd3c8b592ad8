//! What simvm and its guest helper say to each other over the control
//! socket (fd 3 in the helper): one JSON [`HelperConfig`] line from simvm,
//! then short text lines.
//!
//! ```text
//! simvm  -> helper  {"root":…}            the boot configuration
//! helper -> simvm   LOOP /dev/loop7       a loop device it attached
//! helper -> simvm   PID 12345             host pid of the guest's PID 1
//! init   -> simvm   READY | ERROR <msg>   root pivoted (or why not)
//! simvm  -> init    GO                    network configured; start first boot
//! helper -> simvm   EXIT <code>           the guest's PID 1 is gone
//! ```

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// argv[1] that turns simvm into the guest helper.
pub const HELPER_ARG: &str = "__banger-simvm-guest";
/// The control socket's descriptor in the helper and the guest's init.
pub const CTL_FD: i32 = 3;

/// A drive to mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperDrive {
    pub path: PathBuf,
    pub read_only: bool,
}

/// Everything the helper needs to build and start the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperConfig {
    pub root: HelperDrive,
    /// Mounted at `/root` inside the root filesystem.
    pub work: Option<HelperDrive>,
    pub hostname: String,
    /// Written to `/etc/resolv.conf` when not empty.
    pub dns: Vec<Ipv4Addr>,
    /// Started (in the guest) once the network is up.
    pub first_boot: PathBuf,
    pub first_boot_args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// How long the guest's processes get between SIGTERM and SIGKILL.
    pub grace_ms: u64,
}

/// A line from the helper or the guest's init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Loop(PathBuf),
    Pid(u32),
    Ready,
    Error(String),
    Exit(i32),
}

impl Event {
    pub fn parse(line: &str) -> Option<Self> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        Some(match word {
            "LOOP" => Self::Loop(PathBuf::from(rest)),
            "PID" => Self::Pid(rest.parse().ok()?),
            "READY" => Self::Ready,
            "ERROR" => Self::Error(rest.to_owned()),
            "EXIT" => Self::Exit(rest.parse().ok()?),
            _ => return None,
        })
    }
}

impl fmt::Display for Event {
    /// One line, without the newline; messages are kept on one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Loop(path) => write!(f, "LOOP {}", path.display()),
            Self::Pid(pid) => write!(f, "PID {pid}"),
            Self::Ready => f.write_str("READY"),
            Self::Error(msg) => write!(f, "ERROR {}", msg.replace('\n', " ")),
            Self::Exit(code) => write!(f, "EXIT {code}"),
        }
    }
}

/// simvm's go-ahead to the guest's init.
pub const GO: &str = "GO";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        for event in [
            Event::Loop("/dev/loop7".into()),
            Event::Pid(42),
            Event::Ready,
            Event::Error("mount failed: No such device".into()),
            Event::Exit(-9),
        ] {
            assert_eq!(Event::parse(&event.to_string()), Some(event));
        }
        assert_eq!(
            Event::parse(&Event::Error("a\nb".into()).to_string()),
            Some(Event::Error("a b".into()))
        );
        assert_eq!(Event::parse("PID x"), None);
        assert_eq!(Event::parse("HELLO"), None);
    }
}
