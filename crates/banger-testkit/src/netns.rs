//! Tests that touch the network run in a fresh, unnamed network namespace
//! of their own, so they never see (or leave anything in) the host's
//! namespace or another test's.
//!
//! Namespaces are per thread: [`in_netns`] unshares on a dedicated thread
//! and builds the tokio runtime there, so the runtime's worker and blocking
//! threads, and every child process they spawn (iptables, dig, ip), inherit
//! the test namespace. The namespace disappears with its last thread and
//! descriptor, taking any bridge, TAP or rule a failed test left behind.

use std::future::Future;
use std::process::Command;

use nix::sched::{CloneFlags, unshare};

/// `len` random lowercase hex characters, for names.
pub fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len.div_ceil(2)];
    let mut urandom = std::fs::File::open("/dev/urandom").expect("open /dev/urandom");
    std::io::Read::read_exact(&mut urandom, &mut bytes).expect("read /dev/urandom");
    let mut text = hex::encode(bytes);
    text.truncate(len);
    text
}

fn netns_inode(path: &str) -> String {
    std::fs::read_link(path)
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
        .display()
        .to_string()
}

/// Moves the calling thread into a new network namespace with `lo` up, and
/// checks that it really left the process's (host) namespace.
pub fn enter_fresh_netns() {
    unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
    assert_ne!(
        netns_inode("/proc/thread-self/ns/net"),
        netns_inode("/proc/self/ns/net"),
        "the test thread must not be in the host's network namespace"
    );
    sh(&["ip", "link", "set", "lo", "up"]);
}

/// Runs the async test body in a fresh network namespace on a multi-thread
/// tokio runtime created inside it. Panics of the body fail the test.
pub fn in_netns<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let thread = std::thread::spawn(move || {
        enter_fresh_netns();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(body());
        runtime.shutdown_background();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Runs a command in the calling thread's namespace; panics with its output
/// when it fails. Returns stdout.
pub fn sh(argv: &[&str]) -> String {
    let output = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{argv:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Like [`sh`], for use on the runtime (does not block a worker).
pub async fn sh_async(argv: &[&str]) -> String {
    let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        sh(&argv)
    })
    .await
    .expect("command thread")
}

/// `ip -d -o link show dev NAME`, or `None` when there is no such link.
pub fn link_line(name: &str) -> Option<String> {
    let output = Command::new("ip")
        .args(["-d", "-o", "link", "show", "dev", name])
        .output()
        .expect("run ip");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_hex_has_the_length_asked_and_varies() {
        let (a, b) = (super::random_hex(10), super::random_hex(10));
        assert_eq!(a.len(), 10);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
        assert_eq!(super::random_hex(7).len(), 7);
    }
}
