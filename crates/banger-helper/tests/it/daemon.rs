//! A daemon that is not root: the real `banger` and `bangerd`, run as a
//! member of the helper's group, take their bridge, subnet and DNS port
//! from the helper instead of `[network]`.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use banger_testkit::env::{Output, chown_tree, run};
use serde_json::Value;

use crate::support::{GROUP_GID, TestHelper, in_netns, root_or_skip};

/// `nobody`, as a member of the helper's group: a uid with a passwd entry
/// (ssh-keygen and ssh refuse a uid without one).
const USER: (u32, u32) = (65534, GROUP_GID);

/// `banger ARGS` as `USER` in a world under `root`.
fn banger_as_user(root: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(banger_testkit::binary("banger"));
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
        .env("NO_COLOR", "1")
        .env("HOME", root.join("home"))
        .env("XDG_CONFIG_HOME", root.join("config"))
        .env("XDG_STATE_HOME", root.join("state"))
        .env("XDG_CACHE_HOME", root.join("cache"))
        .env("XDG_RUNTIME_DIR", root.join("run"))
        .args(args)
        .uid(USER.0)
        .gid(USER.1);
    run(command)
}

/// Kills the world's daemon if the test ends before stopping it (a panic
/// must not leave a daemon running as another user).
struct DaemonGuard(std::path::PathBuf);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        let lock = self.0.join("run/banger/bangerd.lock");
        let pid = std::fs::read_to_string(lock)
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse::<i32>().ok());
        if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn a_users_daemon_takes_its_network_from_the_helper() {
    if !root_or_skip("a_users_daemon_takes_its_network_from_the_helper") {
        return;
    }
    in_netns(|| async {
        let helper = TestHelper::with_sims().await;
        let expected = helper.client(USER).await.network().await.unwrap();
        let world = tempfile::Builder::new()
            .prefix("bu")
            .tempdir_in("/tmp")
            .unwrap();
        let root = world.path().to_owned();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(root.join("home")).unwrap();
        std::fs::create_dir_all(root.join("config/banger")).unwrap();
        std::fs::write(
            root.join("config/banger/config.toml"),
            format!("helper_socket = \"{}\"\n", helper.socket.display()),
        )
        .unwrap();
        chown_tree(&root, USER.0, USER.1);
        let _daemon = DaemonGuard(root.clone());

        let status = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || {
                banger_as_user(&root, &["daemon", "status", "--json"]);
                let out = banger_as_user(&root, &["daemon", "start"]);
                assert_eq!(out.code, Some(0), "{out}");
                banger_as_user(&root, &["daemon", "status", "--json"])
            })
            .await
            .unwrap()
        };
        assert_eq!(status.code, Some(0), "{status}");
        let status: Value = serde_json::from_str(&status.stdout).unwrap();
        let network = &status["network"];
        assert_eq!(network["bridge"], expected.bridge.as_str(), "{status:#}");
        assert_eq!(
            network["subnet"],
            expected.address.to_string(),
            "{status:#}"
        );
        assert_eq!(
            network["via"],
            format!("banger-helper at {}", helper.socket.display()),
            "{status:#}"
        );
        // The DNS listener left at its default moved to the user's own port.
        let port = 42069 + u16::from(expected.pool_space);
        assert_eq!(
            status["dns_listeners"][0],
            format!("udp://127.0.0.1:{port}"),
            "{status:#}"
        );
        // Doctor, through that daemon, says where its network comes from.
        let doctor = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || banger_as_user(&root, &["doctor", "--json"]))
                .await
                .unwrap()
        };
        let doctor: Value = serde_json::from_str(&doctor.stdout).unwrap();
        let helper_check = doctor["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|check| check["name"] == "helper")
            .unwrap_or_else(|| panic!("no helper check: {doctor:#}"));
        assert_eq!(helper_check["status"], "pass", "{helper_check}");
        assert!(
            helper_check["detail"]
                .as_str()
                .unwrap()
                .ends_with(&format!("banger-helper at {}", helper.socket.display())),
            "{helper_check}"
        );
        // An image the user's daemon imports from the user's own tree: the
        // files are the user's on the host and root's in the image.
        let fixture = banger_testkit::sim::fixture_rootfs();
        if fixture.is_dir() {
            let tree = root.join("tree");
            let copy = std::process::Command::new("cp")
                .arg("-a")
                .arg(&fixture)
                .arg(&tree)
                .status()
                .unwrap();
            assert!(copy.success());
            chown_tree(&tree, USER.0, USER.1);
            let show = {
                let root = root.clone();
                let tree = tree.clone();
                tokio::task::spawn_blocking(move || {
                    let tree = tree.to_str().unwrap();
                    let out = banger_as_user(&root, &["image", "import", tree, "--name", "mine"]);
                    assert_eq!(out.code, Some(0), "{out}");
                    banger_as_user(&root, &["image", "show", "mine", "--json"])
                })
                .await
                .unwrap()
            };
            let image: Value = serde_json::from_str(&show.stdout).unwrap();
            let rootfs = image["rootfs_path"].as_str().unwrap();
            for path in ["/etc/passwd", "/root", "/usr/bin/env"] {
                let stat = banger_testkit::env::run({
                    let mut command = std::process::Command::new("debugfs");
                    command.args(["-R", &format!("stat {path}"), rootfs]);
                    command
                });
                assert!(
                    stat.stdout.contains("User:     0   Group:     0"),
                    "{path} in the image:\n{stat}"
                );
            }
            sim_vm_through_the_helper(&root).await;
        } else {
            banger_testkit::skip(
                "a_users_daemon_takes_its_network_from_the_helper (image import)",
                "the Debian fixture is not built (tests/fixtures/debian-rootfs.sh)",
                banger_testkit::Prerequisite::ProvidedByCi,
            );
        }

        // Everything it wrote is the user's.
        let state = root.join("state/banger");
        let found = banger_doctor::ownership::foreign_owned(&[state], USER.0);
        assert!(found.is_empty(), "{found:?}");

        let out = tokio::task::spawn_blocking(move || banger_as_user(&root, &["daemon", "stop"]))
            .await
            .unwrap();
        assert_eq!(out.code, Some(0), "{out}");
    });
}

/// A sim VM of the user's daemon: banger-helper starts its simvm as root,
/// the daemon drives it, finds it again after a restart, and deletes it.
async fn sim_vm_through_the_helper(root: &Path) {
    let user = |args: &'static [&'static str]| {
        let root = root.to_owned();
        async move {
            tokio::task::spawn_blocking(move || banger_as_user(&root, args))
                .await
                .unwrap()
        }
    };
    let out = user(&[
        "vm", "create", "--name", "s1", "--image", "mine", "--vmm", "sim",
    ])
    .await;
    assert_eq!(out.code, Some(0), "{out}\n{}", daemon_log(root));
    let show = user(&["vm", "show", "s1", "--json"]).await;
    let vm: Value = serde_json::from_str(&show.stdout).unwrap_or_else(|_| panic!("{show}"));
    assert_eq!(vm["state"], "running", "{vm:#}");
    let pid = vm["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid: {vm:#}")) as u32;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t0\t")),
        "simvm runs as root"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("--owner\u{0}65534:60000"),
        "{cmdline:?}"
    );

    // A new daemon finds the running VM again through the helper.
    let out = user(&["daemon", "stop"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    let out = user(&["daemon", "start"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    let show = user(&["vm", "show", "s1", "--json"]).await;
    let vm: Value = serde_json::from_str(&show.stdout).unwrap_or_else(|_| panic!("{show}"));
    assert_eq!(
        vm["state"],
        "running",
        "adopted after a restart: {vm:#}\n{}",
        daemon_log(root)
    );
    assert_eq!(vm["pid"].as_u64(), Some(u64::from(pid)));

    let out = user(&["vm", "delete", "s1"]).await;
    assert_eq!(out.code, Some(0), "{out}\n{}", daemon_log(root));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "simvm {pid} still runs"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn daemon_log(root: &Path) -> String {
    std::fs::read_to_string(root.join("state/banger/logs/bangerd.log")).unwrap_or_default()
}
