//! Test harness: every test that touches the network runs in a fresh,
//! unnamed network namespace of its own, so it never sees (or leaves
//! anything in) the host's namespace or another test's.
//!
//! Namespaces are per thread: [`in_netns`] unshares on a dedicated thread
//! and builds the tokio runtime there, so the runtime's worker and blocking
//! threads, and every child process they spawn (iptables, dig, ip), inherit
//! the test namespace. The namespace disappears with its last thread and
//! descriptor, taking any bridge, TAP or rule a failed test left behind.

use std::fs::File;
use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Command;

use nix::sched::{CloneFlags, setns, unshare};
use rand::Rng;

/// Whether root-only tests can run; prints why not otherwise.
pub(crate) fn root_or_skip(test: &str) -> bool {
    banger_testkit::root_or_skip(test, "network namespaces, netlink, iptables")
}

/// `len` random lowercase hex characters, for names.
pub(crate) fn random_hex(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
        .collect()
}

fn netns_inode(path: &str) -> String {
    std::fs::read_link(path)
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
        .display()
        .to_string()
}

/// Moves the calling thread into a new network namespace with `lo` up, and
/// checks that it really left the process's (host) namespace.
fn enter_fresh_netns() {
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
pub(crate) fn in_netns<F, Fut>(body: F)
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
pub(crate) fn sh(argv: &[&str]) -> String {
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
pub(crate) async fn sh_async(argv: &[&str]) -> String {
    let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        sh(&argv)
    })
    .await
    .expect("command thread")
}

/// `ip -o link show dev NAME`, or `None` when the link does not exist.
pub(crate) fn link_line(name: &str) -> Option<String> {
    let output = Command::new("ip")
        .args(["-d", "-o", "link", "show", "dev", name])
        .output()
        .expect("run ip");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Names of the links in this namespace starting with `prefix`.
pub(crate) fn links_with_prefix(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = sh(&["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// A new network namespace, kept alive by the returned descriptor.
pub(crate) fn new_netns() -> OwnedFd {
    std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        OwnedFd::from(File::open("/proc/thread-self/ns/net").expect("open own netns"))
    })
    .join()
    .expect("netns thread")
}

/// Runs `f` on a thread inside namespace `netns`.
pub(crate) fn in_ns<T: Send>(netns: &OwnedFd, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
