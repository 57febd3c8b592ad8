//! `banger-session`: the agent binary called by that name runs a command,
//! passes its exit status on, and stops the command's process group when
//! its parent (sshd, in a guest) goes away.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A `banger-session` symlink to the built agent, as guests have it.
fn guard() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("banger-session");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_banger-vsock-agent"), &link).unwrap();
    (dir, link)
}

#[test]
fn passes_the_exit_status_on() {
    let (_dir, guard) = guard();
    let status = |script: &str| {
        Command::new(&guard)
            .args(["sh", "-c", script])
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(status("exit 0"), Some(0));
    assert_eq!(status("exit 7"), Some(7));
    // Death by a signal reads as a shell reports it, and the command does
    // not inherit the guard's blocked signals.
    assert_eq!(status("kill -TERM $$"), Some(143));
    let missing = Command::new(&guard)
        .arg("/nonexistent/program")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/program"));
    let usage = Command::new(&guard).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

/// Like sshd: a parent starts the guard as the leader of a new session,
/// then dies. Everything the command started goes with it.
#[test]
fn stops_the_command_when_its_parent_goes_away() {
    let (dir, guard) = guard();
    let pidfile = dir.path().join("pids");
    // The "sshd": starts the guard as the leader of a new session (as sshd
    // starts a session's command), then exits after a moment.
    let script = format!(
        "setsid {guard} sh -c 'sleep 1000 & echo $! > {pids}; echo $$ >> {pids}; wait' & sleep 1",
        guard = guard.display(),
        pids = pidfile.display()
    );
    let status = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let pids: Vec<i32> = std::fs::read_to_string(&pidfile)
        .unwrap()
        .lines()
        .map(|line| line.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    };
    while pids.iter().any(|pid| alive(*pid)) {
        assert!(
            Instant::now() < deadline,
            "the command outlived its session: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
