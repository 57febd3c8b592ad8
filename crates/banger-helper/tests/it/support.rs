//! Harness: a fresh network namespace per test (as in banger-net's tests),
//! an in-process helper on a temp socket, and connections made with other
//! credentials.
//!
//! Credentials are per thread in the kernel: a dedicated thread switches
//! its own uid and gids with raw syscalls (the libc wrappers would switch
//! every thread of the process) and then connects, so `SO_PEERCRED` on that
//! connection reports the chosen uid, while the rest of the test stays
//! root. The thread ends right after.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_helper::{Access, Helper, HelperClient, SimGuests};
use banger_net::RealNetOps;
use banger_net::routing::FakeDnsRouting;
pub(crate) use banger_testkit::netns::{in_netns, link_line, random_hex, sh};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

/// The group the in-process helper admits.
pub(crate) const GROUP: &str = "banger-test";
pub(crate) const GROUP_GID: u32 = 60000;
/// Two members of the group and one outsider (none needs a passwd entry).
pub(crate) const ALICE: (u32, u32) = (60001, GROUP_GID);
pub(crate) const BOB: (u32, u32) = (60002, GROUP_GID);
pub(crate) const MALLORY: (u32, u32) = (60003, 60003);

pub(crate) fn root_or_skip(test: &str) -> bool {
    banger_testkit::root_or_skip(test, "network namespaces, netlink, TUN, setresuid")
}

/// A VM-like TAP name: `btap-` and 10 random hex characters.
pub(crate) fn tap_name() -> String {
    format!("btap-{}", random_hex(10))
}

/// A helper served in-process on a temp socket that anyone may open (so
/// only the helper's own `SO_PEERCRED` check stands).
pub(crate) struct TestHelper {
    _dir: tempfile::TempDir,
    pub(crate) socket: PathBuf,
    pub(crate) helper: Arc<Helper>,
    stop: Option<oneshot::Sender<()>>,
}

impl TestHelper {
    pub(crate) async fn start() -> Self {
        Self::start_with(SimGuests::disabled("started without banger-simvm")).await
    }

    /// A helper that starts sim guests with the workspace's banger-simvm.
    pub(crate) async fn with_sims() -> Self {
        let simvm = banger_testkit::binary("banger-simvm");
        Self::start_with(SimGuests::new(&simvm).expect("banger-simvm")).await
    }

    pub(crate) async fn start_with(sims: SimGuests) -> Self {
        Self::start_with_cache(sims, None).await
    }

    /// A helper whose debootstrap `.deb` cache is `cache_dir`.
    pub(crate) async fn start_with_cache(sims: SimGuests, cache_dir: Option<PathBuf>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("helper.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let ops = RealNetOps::connect().expect("netlink");
        let helper = Arc::new(
            Helper::start(ops, Arc::new(FakeDnsRouting::new()))
                .await
                .expect("helper starts")
                .with_sims(sims)
                .with_cache_dir(cache_dir.unwrap_or_else(|| dir.path().join("cache"))),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(banger_helper::server::run(
            listener,
            Arc::clone(&helper),
            Access::for_gid(GROUP, GROUP_GID),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            _dir: dir,
            socket,
            helper,
            stop: Some(stop),
        }
    }

    /// A client connected as root (the test process).
    pub(crate) async fn root(&self) -> HelperClient {
        HelperClient::connect(&self.socket).await.expect("connect")
    }

    /// A client connected as `(uid, gid)`.
    pub(crate) async fn client(&self, (uid, gid): (u32, u32)) -> HelperClient {
        HelperClient::new(connect_as(&self.socket, uid, gid).await)
    }
}

impl Drop for TestHelper {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Switches the calling thread (only) to `uid`/`gid` with no supplementary
/// groups. Never returns to root: call it on a thread that ends after.
fn become_on_this_thread(uid: u32, gid: u32) {
    // SAFETY: raw credential syscalls with plain integer arguments (and a
    // null list for zero groups); they change only the calling thread's
    // credentials, touch no memory of ours, and their results are checked.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
            0,
            "setgroups"
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresgid, gid, gid, gid),
            0,
            "setresgid"
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresuid, uid, uid, uid),
            0,
            "setresuid"
        );
    }
}

/// A unix stream to `socket` whose peer credentials are `uid`/`gid`.
pub(crate) async fn connect_as(socket: &Path, uid: u32, gid: u32) -> UnixStream {
    let socket = socket.to_owned();
    let stream = std::thread::spawn(move || {
        become_on_this_thread(uid, gid);
        std::os::unix::net::UnixStream::connect(&socket)
    })
    .join()
    .expect("connecting thread")
    .expect("connect as another uid");
    stream.set_nonblocking(true).unwrap();
    UnixStream::from_std(stream).unwrap()
}

/// Opens TAP `name` as `uid`/`gid` the way Firecracker does (TUNSETIFF with
/// IFF_TAP | IFF_NO_PI | IFF_VNET_HDR), without any capability.
pub(crate) fn open_tap_as(name: &str, uid: u32, gid: u32) -> std::io::Result<()> {
    let name = name.to_owned();
    std::thread::spawn(move || {
        // Opened as root: hosts differ in /dev/net/tun's mode (0666 on
        // distributions, 0600 in some containers), and the owner check this
        // is about happens at TUNSETIFF, with the credentials of that moment.
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        become_on_this_thread(uid, gid);
        // SAFETY: `ifreq` is plain data; all-zero bytes are a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
            *slot = *byte as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags =
            (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        // SAFETY: the descriptor is open for the whole call and `ifr` is a
        // valid `ifreq` that TUNSETIFF may read and write.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                libc::TUNSETIFF,
                &mut ifr as *mut libc::ifreq,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })
    .join()
    .expect("tap thread")
}
