//! Loop devices, the mount guard, real rollback and orphan listing.

use std::io::Write;
use std::path::Path;

use banger_disk::loopdev::{self, LoopOptions};
use banger_disk::ops::{list_orphans, release_orphan};
use banger_disk::overlay::CreateRootError;
use banger_disk::{DiskOps, HostDiskOps, MountedExt4, Orphan, RootRequest};
use banger_model::Id;
use banger_model::vm::StorageStrategy;

use crate::util::{self, require_root};

fn sysfs_attr(device: loopdev::LoopDevice, attr: &str) -> String {
    std::fs::read_to_string(format!("/sys/block/loop{}/{attr}", device.number))
        .unwrap()
        .trim()
        .to_owned()
}

fn losetup_mentions(path: &Path) -> bool {
    let listing = util::run("losetup", &["-a"]);
    listing.contains(util::path_str(path))
}

#[test]
fn attach_list_detach() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let dir_path = std::fs::canonicalize(dir.path()).unwrap();
    let file = dir_path.join("disk with space.img");
    util::sparse_image(&file, 64 << 20);

    let ro = loopdev::attach(
        &file,
        LoopOptions {
            read_only: true,
            autoclear: false,
        },
    )
    .unwrap();
    let rw = loopdev::attach(
        &file,
        LoopOptions {
            read_only: false,
            autoclear: false,
        },
    )
    .unwrap();
    let (ro_dev, rw_dev) = (ro.device(), rw.device());
    assert_ne!(ro_dev, rw_dev);
    assert_eq!(sysfs_attr(ro_dev, "ro"), "1");
    assert_eq!(sysfs_attr(rw_dev, "ro"), "0");
    assert_eq!(sysfs_attr(ro_dev, "loop/autoclear"), "0");
    assert_eq!(ro_dev.backing_file().unwrap().unwrap().path, file);

    // A read-only device refuses to open for writing, or to write.
    if let Ok(mut handle) = std::fs::OpenOptions::new().write(true).open(ro_dev.path()) {
        assert!(
            handle
                .write_all(&[0u8; 4096])
                .and_then(|()| handle.sync_all())
                .is_err()
        );
    }

    let listed = loopdev::list_backed_under(&dir_path).unwrap();
    let devices: Vec<_> = listed.iter().map(|info| info.device).collect();
    assert!(
        devices.contains(&ro_dev) && devices.contains(&rw_dev),
        "{listed:?}"
    );
    assert!(losetup_mentions(&file));

    // Not auto-clear: closing our descriptors keeps them attached.
    let ro_dev = ro.release();
    let rw_dev = rw.release();
    assert_eq!(loopdev::list_backed_under(&dir_path).unwrap().len(), 2);

    // A stored number pointing at another file is left alone.
    assert!(!loopdev::detach_if_backed_by(ro_dev, Path::new("/elsewhere.img")).unwrap());
    assert!(loopdev::detach_if_backed_by(ro_dev, &file).unwrap());
    loopdev::detach(rw_dev).unwrap();
    // Detaching twice is fine.
    loopdev::detach(rw_dev).unwrap();
    assert!(util::loops_under(&dir_path).is_empty());
    assert!(!losetup_mentions(&file));
}

#[test]
fn autoclear_goes_away_with_its_last_user() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auto.img");
    util::sparse_image(&file, 16 << 20);
    let attached = loopdev::attach(
        &file,
        LoopOptions {
            read_only: false,
            autoclear: true,
        },
    )
    .unwrap();
    let device = attached.device();
    assert_eq!(sysfs_attr(device, "loop/autoclear"), "1");
    assert_eq!(util::loops_under(dir.path()).len(), 1);
    drop(attached);
    // The kernel clears it on the last close; give a deferred clear a moment.
    for _ in 0..50 {
        if util::loops_under(dir.path()).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(util::loops_under(dir.path()).is_empty());
}

fn early_return(image: &Path, seen: &mut Option<std::path::PathBuf>) -> Result<(), String> {
    let mounted = MountedExt4::ext4(image, false).map_err(|e| e.to_string())?;
    *seen = Some(mounted.path().to_owned());
    std::fs::write(mounted.path().join("written"), b"1").unwrap();
    Err("bail out half-way".to_owned())?;
    unreachable!("the guard must clean up on the early return above");
}

#[test]
fn mount_guard_undoes_itself_on_early_return_and_panic() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.ext4");
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    banger_disk::build_ext4_from_dir(&tree, &image, &Default::default()).unwrap();

    let mut seen = None;
    assert!(early_return(&image, &mut seen).is_err());
    let mountpoint = seen.unwrap();
    assert!(util::mounted_under(&mountpoint).is_empty(), "still mounted");
    assert!(!mountpoint.exists(), "mount point left behind");
    assert!(util::loops_under(dir.path()).is_empty(), "loop left behind");
    assert_eq!(banger_disk::read_file(&image, "/written").unwrap(), b"1");

    let image_for_panic = image.clone();
    let result = std::panic::catch_unwind(move || {
        let mounted = MountedExt4::ext4(&image_for_panic, false).unwrap();
        let path = mounted.path().to_owned();
        std::fs::write(path.join("before-panic"), b"2").unwrap();
        panic!("panic at {}", path.display());
    });
    let message = result.unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    let panicked_at = Path::new(message.trim_start_matches("panic at "));
    assert!(util::mounted_under(panicked_at).is_empty());
    assert!(!panicked_at.exists());
    assert!(util::loops_under(dir.path()).is_empty());
    util::assert_fsck_clean(&image);

    // A busy mount is still undone (lazily), never leaked.
    let mounted = MountedExt4::ext4(&image, false).unwrap();
    let path = mounted.path().to_owned();
    let busy = std::fs::File::open(path.join("written")).unwrap();
    drop(mounted);
    assert!(util::mounted_under(&path).is_empty());
    drop(busy);
    for _ in 0..50 {
        if util::loops_under(dir.path()).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(util::loops_under(dir.path()).is_empty());
}

#[test]
fn dm_snapshot_failure_rolls_back_real_loops_and_files() {
    require_root!();
    // Device-mapper does not work on the test machines: the snapshot
    // sequence attaches two real loop devices and creates the cow file,
    // then `dmsetup create` fails — and everything must be released.
    if banger_disk::strategy::probe_device_mapper().is_yes() {
        banger_testkit::skip(
            "dm_snapshot_failure_rolls_back_real_loops_and_files",
            "device-mapper works here, so dmsetup create would not fail",
            banger_testkit::Prerequisite::NotInCi,
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("rootfs.ext4");
    util::sparse_image(&base, 64 << 20);
    let vm_dir = dir.path().join("vm");
    std::fs::create_dir(&vm_dir).unwrap();
    let error = HostDiskOps::new()
        .create_root(&RootRequest {
            base,
            vm_dir: vm_dir.clone(),
            vm_id: Id::generate(),
            strategy: StorageStrategy::DmSnapshot,
        })
        .unwrap_err();
    assert!(matches!(error, CreateRootError::DmCreate { .. }), "{error}");
    assert!(util::loops_under(dir.path()).is_empty(), "loops leaked");
    assert!(!vm_dir.join("root.cow").exists(), "cow file leaked");
    assert_eq!(std::fs::read_dir(&vm_dir).unwrap().count(), 0);
}

#[test]
fn orphans_are_found_and_released() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let state = std::fs::canonicalize(dir.path()).unwrap();
    let vm_dir = state.join("vms/x");
    std::fs::create_dir_all(&vm_dir).unwrap();
    let leftover = vm_dir.join("root.ext4");
    util::sparse_image(&leftover, 16 << 20);
    // What a crashed daemon would leave: a non-auto-clear loop device.
    let device = loopdev::attach(&leftover, LoopOptions::default())
        .unwrap()
        .release();
    let orphans = list_orphans(&state).unwrap();
    let ours: Vec<_> = orphans
        .iter()
        .filter(|orphan| matches!(orphan, Orphan::Loop(info) if info.device == device))
        .collect();
    assert_eq!(ours.len(), 1, "{orphans:?}");
    // Deleted backing files are still found and released.
    std::fs::remove_file(&leftover).unwrap();
    let orphans = list_orphans(&state).unwrap();
    let Some(Orphan::Loop(info)) = orphans
        .iter()
        .find(|o| matches!(o, Orphan::Loop(i) if i.device == device))
    else {
        panic!("deleted backing file no longer listed: {orphans:?}");
    };
    assert!(info.backing.deleted);
    release_orphan(&Orphan::Loop(info.clone())).unwrap();
    assert!(util::loops_under(&state).is_empty());
    // Another directory's loops are not banger's business.
    assert!(
        list_orphans(&state.join("vms/none"))
            .unwrap()
            .iter()
            .all(|o| matches!(o, Orphan::Dm(_)))
    );
}
