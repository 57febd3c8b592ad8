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
use std::os::fd::{AsFd, OwnedFd};

pub(crate) use banger_testkit::netns::{in_netns, link_line, random_hex, sh, sh_async};
use nix::sched::{CloneFlags, setns, unshare};

/// Whether root-only tests can run; prints why not otherwise.
pub(crate) fn root_or_skip(test: &str) -> bool {
    banger_testkit::root_or_skip(test, "network namespaces, netlink, iptables")
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
