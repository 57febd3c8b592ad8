//! Sim guests through the helper: `banger-simvm` started as root for a
//! caller, its sockets the caller's, found and killed for that caller only;
//! and one refusal each for paths that are not the caller's to name.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use banger_firecracker::ApiClient;
use banger_firecracker::api::Vsock;
use banger_helper::protocol::{
    FindSimParams, PidParams, SimStarted, StartSimParams, VethParams, method,
};
use banger_rpc::ErrorCode;

use crate::refusals::code;
use crate::support::{ALICE, BOB, TestHelper, connect_as, in_netns, link_line, root_or_skip, sh};

/// A VM directory of `owner`'s with the logs its daemon makes first.
struct VmDir {
    _root: tempfile::TempDir,
    dir: PathBuf,
}

impl VmDir {
    fn new(owner: (u32, u32)) -> Self {
        let root = tempfile::Builder::new()
            .prefix("bs")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = root.path().join("vm");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        for log in ["console.log", "vmm.log"] {
            std::fs::write(dir.join(log), "").unwrap();
            std::os::unix::fs::chown(dir.join(log), Some(owner.0), Some(owner.1)).unwrap();
        }
        std::os::unix::fs::chown(&dir, Some(owner.0), Some(owner.1)).unwrap();
        Self { _root: root, dir }
    }

    fn params(&self) -> StartSimParams {
        StartSimParams {
            id: "0123abcd".into(),
            api_socket: self.dir.join("api.sock"),
            console_log: self.dir.join("console.log"),
            log_path: Some(self.dir.join("vmm.log")),
        }
    }
}

/// A sim guest started for Alice, once its API socket is there.
async fn alices_sim(helper: &TestHelper) -> (VmDir, banger_helper::HelperClient, u32) {
    let vm = VmDir::new(ALICE);
    let mut alice = helper.client(ALICE).await;
    let SimStarted { pid } = alice.call::<method::StartSim>(vm.params()).await.unwrap();
    wait_for("the api socket", || vm.params().api_socket.exists());
    (vm, alice, pid)
}

async fn refused(
    alice: &mut banger_helper::HelperClient,
    params: StartSimParams,
    expected: ErrorCode,
    why: &str,
) {
    let result = alice.call::<method::StartSim>(params.clone()).await;
    assert_eq!(code(result), expected, "{why}: {params:?}");
    assert!(!params.api_socket.exists(), "{why}: nothing started");
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn a_sim_guest_started_for_a_user_is_that_users_alone() {
    if !root_or_skip("a_sim_guest_started_for_a_user_is_that_users_alone") {
        return;
    }
    in_netns(|| async {
        let helper = TestHelper::with_sims().await;
        let (vm, mut alice, pid) = alices_sim(&helper).await;
        let params = vm.params();

        // simvm runs as root, with the caller as owner on its command line.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(
            status.lines().any(|l| l.starts_with("Uid:\t0\t")),
            "{status}"
        );
        // Its sockets are the caller's: the API, and the vsock socket it
        // binds when configured.
        let meta = std::fs::metadata(&params.api_socket).unwrap();
        assert_eq!((meta.uid(), meta.gid()), ALICE);
        drop(connect_as(&params.api_socket, ALICE.0, ALICE.1).await);
        let mut api = ApiClient::connect(&params.api_socket).await.unwrap();
        let vsock = vm.dir.join("vsock.sock");
        api.put_vsock(&Vsock {
            vsock_id: None,
            guest_cid: 3,
            uds_path: vsock.to_string_lossy().into_owned(),
        })
        .await
        .unwrap();
        let meta = std::fs::metadata(&vsock).unwrap();
        assert_eq!((meta.uid(), meta.gid()), ALICE);

        // Found for its owner; someone else may neither find nor kill it.
        let find = FindSimParams {
            api_socket: params.api_socket.clone(),
        };
        let found = alice.call::<method::FindSim>(find.clone()).await.unwrap();
        assert_eq!(found.pid, Some(pid));
        let mut bob = helper.client(BOB).await;
        assert_eq!(
            code(bob.call::<method::FindSim>(find.clone()).await),
            ErrorCode::PermissionDenied
        );
        assert_eq!(
            code(bob.call::<method::KillSim>(PidParams { pid }).await),
            ErrorCode::PermissionDenied
        );
        assert!(alive(pid));
        // Nor may Alice kill what is not a sim guest of hers.
        assert_eq!(
            code(
                alice
                    .call::<method::KillSim>(PidParams {
                        pid: std::process::id()
                    })
                    .await
            ),
            ErrorCode::PermissionDenied
        );

        let killed = alice
            .call::<method::KillSim>(PidParams { pid })
            .await
            .unwrap();
        assert!(killed.existed);
        wait_for("simvm to be gone", || !alive(pid));
        let again = alice
            .call::<method::KillSim>(PidParams { pid })
            .await
            .unwrap();
        assert!(!again.existed, "a gone guest is not an error");
        let found = alice.call::<method::FindSim>(find).await.unwrap();
        assert_eq!(found.pid, None);
    });
}

/// A sim guest whose daemon never learned its pid (the helper died before
/// answering) is gone once the daemon's rollback removes its directory.
#[test]
fn an_orphaned_sim_guest_stops_when_its_socket_goes() {
    if !root_or_skip("an_orphaned_sim_guest_stops_when_its_socket_goes") {
        return;
    }
    in_netns(|| async {
        let helper = TestHelper::with_sims().await;
        let (vm, _alice, pid) = alices_sim(&helper).await;
        let params = vm.params();
        std::fs::remove_file(&params.api_socket).unwrap();
        wait_for("the orphaned simvm to stop", || !alive(pid));
    });
}

#[test]
fn sim_paths_that_are_not_the_callers_are_refused() {
    if !root_or_skip("sim_paths_that_are_not_the_callers_are_refused") {
        return;
    }
    in_netns(|| async {
        let helper = TestHelper::with_sims().await;
        let mut alice = helper.client(ALICE).await;

        // Root's directory, and Bob's.
        let roots = VmDir::new((0, 0));
        refused(
            &mut alice,
            roots.params(),
            ErrorCode::PermissionDenied,
            "root's dir",
        )
        .await;
        let bobs = VmDir::new(BOB);
        refused(
            &mut alice,
            bobs.params(),
            ErrorCode::PermissionDenied,
            "Bob's dir",
        )
        .await;

        // Alice's, but others may write in it.
        let shared = VmDir::new(ALICE);
        std::fs::set_permissions(&shared.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        refused(
            &mut alice,
            shared.params(),
            ErrorCode::PermissionDenied,
            "a shared dir",
        )
        .await;

        let vm = VmDir::new(ALICE);
        // Reached through a symlink (Alice's own, to her own dir).
        let link = vm.dir.parent().unwrap().join("link");
        std::os::unix::fs::symlink(&vm.dir, &link).unwrap();
        let through_link = StartSimParams {
            api_socket: link.join("api.sock"),
            console_log: link.join("console.log"),
            log_path: Some(link.join("vmm.log")),
            ..vm.params()
        };
        refused(
            &mut alice,
            through_link,
            ErrorCode::InvalidArgument,
            "a symlink on the way",
        )
        .await;

        // A console that is a symlink (to a file root owns).
        let console = vm.dir.join("evil.log");
        std::os::unix::fs::symlink("/etc/passwd", &console).unwrap();
        let evil_console = StartSimParams {
            console_log: console,
            ..vm.params()
        };
        refused(
            &mut alice,
            evil_console,
            ErrorCode::InvalidArgument,
            "a symlinked console",
        )
        .await;

        // A log of root's in Alice's dir.
        let roots_log = vm.dir.join("root.log");
        std::fs::write(&roots_log, "").unwrap();
        let foreign_log = StartSimParams {
            log_path: Some(roots_log),
            ..vm.params()
        };
        refused(
            &mut alice,
            foreign_log,
            ErrorCode::PermissionDenied,
            "root's log",
        )
        .await;

        // Files outside the api socket's directory, relative and `..` paths.
        let elsewhere = StartSimParams {
            log_path: Some(PathBuf::from("/tmp/vmm.log")),
            ..vm.params()
        };
        refused(
            &mut alice,
            elsewhere,
            ErrorCode::InvalidArgument,
            "a log elsewhere",
        )
        .await;
        let relative = StartSimParams {
            api_socket: PathBuf::from("api.sock"),
            ..vm.params()
        };
        refused(
            &mut alice,
            relative,
            ErrorCode::InvalidArgument,
            "a relative path",
        )
        .await;
        let dotdot = StartSimParams {
            api_socket: vm.dir.join("../vm/api.sock"),
            ..vm.params()
        };
        refused(&mut alice, dotdot, ErrorCode::InvalidArgument, "a .. path").await;
        let bad_id = StartSimParams {
            id: "a/b".into(),
            ..vm.params()
        };
        refused(&mut alice, bad_id, ErrorCode::InvalidArgument, "a bad id").await;

        // Finding by a path that is not absolute.
        let find = alice
            .call::<method::FindSim>(FindSimParams {
                api_socket: PathBuf::from("api.sock"),
            })
            .await;
        assert_eq!(code(find), ErrorCode::InvalidArgument);
    });
}

#[test]
fn a_helper_without_sims_says_so() {
    if !root_or_skip("a_helper_without_sims_says_so") {
        return;
    }
    in_netns(|| async {
        let helper = TestHelper::start().await;
        let vm = VmDir::new(ALICE);
        let mut alice = helper.client(ALICE).await;
        let error = alice
            .call::<method::StartSim>(vm.params())
            .await
            .expect_err("refused");
        let rpc = error.rpc().expect("an answer");
        assert_eq!(rpc.code, ErrorCode::FailedPrecondition, "{rpc:?}");
        assert!(
            rpc.hint.as_deref().unwrap_or("").contains("--vmm qemu"),
            "{rpc:?}"
        );
    });
}

#[test]
fn only_veths_on_the_callers_bridge_are_the_callers() {
    if !root_or_skip("only_veths_on_the_callers_bridge_are_the_callers") {
        return;
    }
    in_netns(|| async {
        let helper = TestHelper::with_sims().await;
        let mut alice = helper.client(ALICE).await;
        let net = alice.network().await.unwrap();
        alice
            .call::<method::EnsureBridge>(banger_helper::protocol::EnsureBridgeParams {
                name: net.bridge.clone(),
                address: net.address,
            })
            .await
            .unwrap();
        sh(&[
            "ip", "link", "add", "bsvalice", "type", "veth", "peer", "name", "p0",
        ]);
        sh(&["ip", "link", "set", "bsvalice", "master", &net.bridge]);
        sh(&[
            "ip", "link", "add", "bsvother", "type", "veth", "peer", "name", "p1",
        ]);

        let listed = alice
            .call::<method::ListTaps>(banger_helper::protocol::ListTapsParams {
                prefix: "bsv".into(),
            })
            .await
            .unwrap();
        assert_eq!(listed.names, ["bsvalice"]);
        let other = alice
            .call::<method::DeleteSimVeth>(VethParams {
                name: "bsvother".into(),
            })
            .await;
        assert_eq!(code(other), ErrorCode::PermissionDenied);
        let outside = alice
            .call::<method::DeleteSimVeth>(VethParams { name: "p1".into() })
            .await;
        assert_eq!(code(outside), ErrorCode::InvalidArgument);
        let deleted = alice
            .call::<method::DeleteSimVeth>(VethParams {
                name: "bsvalice".into(),
            })
            .await
            .unwrap();
        assert!(deleted.existed);
        assert_eq!(link_line("bsvalice"), None);
        assert!(link_line("bsvother").is_some());
    });
}
