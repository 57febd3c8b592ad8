//! debootstrap for a user: the real debootstrap against Debian's mirror
//! (its `.deb`s shared with the fixture script's cache), run as root by the
//! helper into the user's directory; the tree is then the user's, set-id
//! bits kept, and the owners it had are answered. Not in a network
//! namespace of its own: debootstrap needs the mirror, and this method
//! touches no link.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use banger_helper::SimGuests;
use banger_helper::protocol::{DebootstrapParams, method};
use banger_model::image::ImageProfile;
use banger_rpc::ErrorCode;

use crate::refusals::code;
use crate::support::{ALICE, TestHelper, root_or_skip};

fn params(dir: &std::path::Path) -> DebootstrapParams {
    DebootstrapParams {
        distro: "debian:bookworm".into(),
        mirror: banger_model::distro::DEBIAN_MIRROR.into(),
        profile: ImageProfile::Minimal,
        packages: Vec::new(),
        target: dir.join("0123456789abcdef0123456789abcdef.rootfs"),
        log: dir.join("debootstrap.log"),
        proxy: None,
    }
}

fn own_dir(owner: (u32, u32)) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("bb")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.path().join("debootstrap.log"), "").unwrap();
    for path in [dir.path().to_owned(), dir.path().join("debootstrap.log")] {
        std::os::unix::fs::chown(&path, Some(owner.0), Some(owner.1)).unwrap();
    }
    dir
}

#[test]
fn debootstrap_for_a_user_gives_the_tree_and_its_owners() {
    let test = "debootstrap_for_a_user_gives_the_tree_and_its_owners";
    if !root_or_skip(test) {
        return;
    }
    if banger_exec::find_program("debootstrap", banger_exec::SBIN).is_none() {
        banger_testkit::skip(
            test,
            "debootstrap is not installed",
            banger_testkit::Prerequisite::ProvidedByCi,
        );
        return;
    }
    let cache = std::env::var_os("BANGER_FIXTURE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| banger_testkit::sim::repo_root().join(".cache"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let helper =
            TestHelper::start_with_cache(SimGuests::disabled("not needed"), Some(cache)).await;
        let mut alice = helper.client(ALICE).await;

        // Refused: a directory of root's, a name that is not a build tree's.
        let roots = own_dir((0, 0));
        let refused = alice
            .call::<method::Debootstrap>(params(roots.path()))
            .await;
        assert_eq!(code(refused), ErrorCode::PermissionDenied);
        let dir = own_dir(ALICE);
        let bad_name = DebootstrapParams {
            target: dir.path().join("etc"),
            ..params(dir.path())
        };
        let refused = alice.call::<method::Debootstrap>(bad_name).await;
        assert_eq!(code(refused), ErrorCode::InvalidArgument);

        // An unreachable mirror: debootstrap's failure names the log where
        // the caller has it, and the (empty) tree is the caller's to remove.
        let failing = own_dir(ALICE);
        let unreachable = DebootstrapParams {
            mirror: "http://127.0.0.1:9/debian".into(),
            ..params(failing.path())
        };
        let error = alice
            .call::<method::Debootstrap>(unreachable.clone())
            .await
            .expect_err("no mirror there");
        let message = &error.rpc().expect("an answer").message;
        assert!(
            message.contains(&unreachable.log.display().to_string()) && !message.contains("/proc/"),
            "{message}"
        );
        let left = std::fs::metadata(&unreachable.target).unwrap();
        assert_eq!((left.uid(), left.gid()), ALICE);

        let params = params(dir.path());
        // While debootstrap runs, the caller renames the target away and
        // puts a symlink to a directory of root's in its place: debootstrap
        // keeps building where it started.
        let decoy = tempfile::Builder::new()
            .prefix("bb-decoy")
            .tempdir_in("/tmp")
            .unwrap();
        let moved = dir.path().join("fedcba9876543210fedcba9876543210.rootfs");
        let swap = {
            let (target, moved, decoy) = (
                params.target.clone(),
                moved.clone(),
                decoy.path().to_owned(),
            );
            std::thread::spawn(move || {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while !target.is_dir() {
                    assert!(std::time::Instant::now() < deadline, "no target appeared");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                std::fs::rename(&target, &moved).unwrap();
                std::os::unix::fs::symlink(&decoy, &target).unwrap();
            })
        };
        let done = alice
            .call::<method::Debootstrap>(params.clone())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{e:?}\n{}",
                    std::fs::read_to_string(&params.log).unwrap_or_default()
                )
            });
        swap.join().unwrap();
        assert_eq!(
            std::fs::read_dir(decoy.path()).unwrap().count(),
            0,
            "debootstrap followed the swapped-in symlink"
        );
        let tree = &moved;
        // The owners it had, for the image.
        let shadow = done
            .owners
            .iter()
            .find(|owner| owner.path == std::path::Path::new("etc/shadow"))
            .unwrap_or_else(|| panic!("no etc/shadow in {:?}", done.owners));
        assert_eq!((shadow.uid, shadow.gid), (0, 42), "root:shadow");
        assert!(done.owners.iter().all(|o| o.uid != 0 || o.gid != 0));
        // Everything is Alice's now, set-id bits kept.
        for path in ["", "etc/shadow", "usr/bin/su", "root", "etc/machine-id"] {
            let meta = std::fs::symlink_metadata(tree.join(path)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), ALICE, "{path}");
        }
        let su = std::fs::metadata(tree.join("usr/bin/su")).unwrap();
        assert_eq!(su.mode() & 0o4000, 0o4000, "su keeps its setuid bit");
        // Cleaned as root before it was given away: what needs root to
        // remove (device nodes) or to empty (read-only machine-id) is done.
        assert_eq!(std::fs::read_dir(tree.join("dev")).unwrap().count(), 0);
        assert_eq!(std::fs::read(tree.join("etc/machine-id")).unwrap(), b"");
        // debootstrap's output went to Alice's log, and nothing is mounted.
        let log = std::fs::read_to_string(&params.log).unwrap();
        assert!(log.contains("Base system installed successfully"), "{log}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&tree.to_string_lossy().into_owned()),
            "{mounts}"
        );
        // The same target again (now the symlink) is refused.
        let again = alice.call::<method::Debootstrap>(params.clone()).await;
        assert_eq!(code(again), ErrorCode::Conflict);
        assert_eq!(std::fs::read_dir(decoy.path()).unwrap().count(), 0);
    });
}
