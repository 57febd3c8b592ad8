//! The real binary: `banger-helper serve` makes its socket 0660 for its
//! group, and after `kill -9` a new helper recognises what the old one
//! made, for whom, and removes it on request.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use banger_helper::HelperClient;
use banger_helper::protocol::{
    CreateTapParams, EnsureBridgeParams, ListTapsParams, TapParams, method,
};
use banger_rpc::ErrorCode;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::refusals::code;
use crate::support::{connect_as, in_netns, link_line, root_or_skip, sh, tap_name};

/// `nogroup` on Debian: the group the spawned helper admits.
const GROUP: &str = "nogroup";
const GID: u32 = 65534;
/// nobody, whose primary group is nogroup.
const NOBODY: (u32, u32) = (65534, GID);
/// Another member by primary group.
const OTHER: (u32, u32) = (60011, GID);

/// A spawned helper, killed when dropped so a failing test leaks no process.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

fn spawn_helper(socket: &Path) -> Spawned {
    Spawned(
        Command::new(env!("CARGO_BIN_EXE_banger-helper"))
            .args(["serve", "--socket"])
            .arg(socket)
            .args(["--group", GROUP])
            .env("BANGER_HELPER_LOG", "debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn banger-helper"),
    )
}

/// Waits until a helper answers on `socket`.
async fn wait_ready(socket: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("banger-helper exited early: {status}");
        }
        if let Ok(mut client) = HelperClient::connect(socket).await
            && client.network().await.is_ok()
        {
            return;
        }
        assert!(Instant::now() < deadline, "banger-helper did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn client(socket: &Path, who: (u32, u32)) -> HelperClient {
    HelperClient::new(connect_as(socket, who.0, who.1).await)
}

#[test]
fn after_kill_9_a_new_helper_recognises_and_removes_what_the_old_one_made() {
    let test = "after_kill_9_a_new_helper_recognises_and_removes_what_the_old_one_made";
    if !root_or_skip(test) {
        return;
    }
    if nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(GID))
        .ok()
        .flatten()
        .is_none_or(|group| group.name != GROUP)
    {
        banger_testkit::skip(
            test,
            "needs group nogroup with gid 65534",
            banger_testkit::skip::Prerequisite::NotInCi,
        );
        return;
    }
    in_netns(|| async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("run/helper.sock");

        let mut first = spawn_helper(&socket);
        wait_ready(&socket, &mut first).await;
        let meta = std::fs::symlink_metadata(&socket).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o7777, 0o660, "socket mode");
        assert_eq!((meta.uid(), meta.gid()), (0, GID), "socket owner and group");

        let mut nobody = client(&socket, NOBODY).await;
        let net = nobody.network().await.unwrap();
        nobody
            .call::<method::EnsureBridge>(EnsureBridgeParams {
                name: net.bridge.clone(),
                address: net.address,
            })
            .await
            .unwrap();
        let tap = tap_name();
        nobody
            .call::<method::CreateTap>(CreateTapParams {
                name: tap.clone(),
                bridge: net.bridge.clone(),
            })
            .await
            .unwrap();
        drop(nobody);

        kill(Pid::from_raw(first.id() as i32), Signal::SIGKILL).unwrap();
        first.wait().unwrap();
        assert!(socket.exists(), "kill -9 leaves the socket file behind");

        // A TAP caught between creation and its alias (the helper killed in
        // the middle of making it) is still known by its TUN owner.
        let half_made = tap_name();
        let nobody_uid = NOBODY.0.to_string();
        sh(&[
            "ip",
            "tuntap",
            "add",
            "dev",
            &half_made,
            "mode",
            "tap",
            "user",
            &nobody_uid,
        ]);

        let mut second = spawn_helper(&socket);
        wait_ready(&socket, &mut second).await;

        // Still the other user's to keep.
        let mut other = client(&socket, OTHER).await;
        let deleted = other
            .call::<method::DeleteTap>(TapParams { name: tap.clone() })
            .await;
        assert_eq!(code(deleted), ErrorCode::PermissionDenied);

        let mut nobody = client(&socket, NOBODY).await;
        let listed = nobody
            .call::<method::ListTaps>(ListTapsParams {
                prefix: "btap-".into(),
            })
            .await
            .unwrap();
        let mut expected = vec![tap.clone(), half_made.clone()];
        expected.sort();
        assert_eq!(listed.names, expected, "recognised after restart");
        let deleted = other
            .call::<method::DeleteTap>(TapParams {
                name: half_made.clone(),
            })
            .await;
        assert_eq!(code(deleted), ErrorCode::PermissionDenied);
        let deleted = nobody
            .call::<method::DeleteTap>(TapParams {
                name: half_made.clone(),
            })
            .await
            .unwrap();
        assert!(deleted.existed);
        assert_eq!(link_line(&half_made), None);
        let deleted = nobody
            .call::<method::DeleteTap>(TapParams { name: tap.clone() })
            .await
            .unwrap();
        assert!(deleted.existed);
        assert_eq!(link_line(&tap), None);

        kill(Pid::from_raw(second.id() as i32), Signal::SIGTERM).unwrap();
        let status = second.wait().unwrap();
        assert!(status.success(), "{status}");
        assert!(!socket.exists(), "a clean stop removes the socket");
    });
}

#[test]
fn serve_refuses_a_socket_path_that_is_not_a_socket() {
    if !root_or_skip("serve_refuses_a_socket_path_that_is_not_a_socket") {
        return;
    }
    in_netns(|| async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("helper.sock");
        std::fs::write(&path, "precious").unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_banger-helper"))
            .args(["serve", "--socket"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("is not a socket"), "{stderr}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    });
}
