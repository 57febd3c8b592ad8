//! Reflink for real, on btrfs and xfs made on loop-mounted sparse files.

use std::os::unix::fs::MetadataExt;

use banger_disk::mkfs::make_work_seed;
use banger_disk::{
    CloneMethod, DiskOps, FsType, HostDiskOps, RootOverlay, RootRequest, WorkDiskRequest,
    detect_strategy,
};
use banger_model::vm::{StorageStrategy, VmPaths};
use banger_model::{ByteSize, Id};

use crate::util::{self, ScratchFs, require_root};

fn reflink_root_and_work_disk(fstype: FsType) {
    let scratch = ScratchFs::new(fstype, 2 << 30);
    let root = scratch.root();

    let probe = detect_strategy(&root).unwrap();
    assert_eq!(probe.strategy, StorageStrategy::Reflink, "{probe:?}");

    // An image: a 256 MiB sparse rootfs and a real work seed.
    let image_dir = root.join("images/one");
    std::fs::create_dir_all(&image_dir).unwrap();
    let rootfs = image_dir.join("rootfs.ext4");
    util::sparse_image(&rootfs, 256 << 20);
    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir(tree.path().join("root")).unwrap();
    std::fs::write(tree.path().join("root/.profile"), b"echo hi\n").unwrap();
    let seed = image_dir.join("work-seed.ext4");
    make_work_seed(tree.path(), &seed).unwrap();

    let vm_dir = root.join("vms/a");
    std::fs::create_dir_all(&vm_dir).unwrap();
    let disks = HostDiskOps::new();
    let overlay = disks
        .create_root(&RootRequest {
            base: rootfs.clone(),
            vm_dir: vm_dir.clone(),
            vm_id: Id::generate(),
            strategy: probe.strategy,
        })
        .unwrap();
    let RootOverlay::File { strategy, path } = &overlay else {
        panic!("expected a file overlay, got {overlay:?}");
    };
    assert_eq!(*strategy, StorageStrategy::Reflink);
    assert_eq!(path, &VmPaths::new(&vm_dir).root_disk());
    assert!(
        util::all_extents_shared(path),
        "{} shares no extents",
        path.display()
    );
    assert_eq!(
        std::fs::read(path).unwrap(),
        std::fs::read(&rootfs).unwrap()
    );

    // The work disk: first VM grows the seed once (cached), the second
    // only clones the cached grown seed.
    for vm in ["a", "b"] {
        let vm_dir = root.join("vms").join(vm);
        std::fs::create_dir_all(&vm_dir).unwrap();
        let dest = VmPaths::new(&vm_dir).work_disk();
        let work = disks
            .make_work_disk(&WorkDiskRequest {
                seed: seed.clone(),
                dest: dest.clone(),
                size: ByteSize::gib(4),
                strategy: StorageStrategy::Reflink,
                grown_seed_cache: Some(image_dir.clone()),
                content: None,
                host_files: None,
                edits: None,
                progress: None,
            })
            .unwrap();
        assert_eq!(work.method, Some(CloneMethod::Reflink));
        assert_eq!(work.size, ByteSize::gib(4));
        assert!(work.from_cache, "vm {vm}");
        assert!(
            util::all_extents_shared(&dest),
            "work disk of {vm} shares no extents"
        );
        util::assert_fsck_clean(&dest);
        assert_eq!(
            util::dumpe2fs_field(&dest, "Block count"),
            ((4u64 << 30) / 4096).to_string()
        );
        assert_eq!(
            banger_disk::read_file(&dest, "/.profile").unwrap(),
            b"echo hi\n"
        );
    }
    let cached: Vec<_> = std::fs::read_dir(&image_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("grown"))
        .collect();
    assert_eq!(cached, vec![format!("work-seed.grown-{}.ext4", 4u64 << 30)]);

    disks.remove_root(&overlay).unwrap();
    assert!(!path.exists());
    // Removing the overlay did not touch the image.
    assert_eq!(std::fs::metadata(&rootfs).unwrap().len(), 256 << 20);
    assert!(std::fs::metadata(&rootfs).unwrap().blocks() > 0);
}

#[test]
fn reflink_on_btrfs() {
    require_root!();
    reflink_root_and_work_disk(FsType::Btrfs);
}

#[test]
fn reflink_on_xfs() {
    require_root!();
    reflink_root_and_work_disk(FsType::Xfs);
}

#[test]
fn host_ext4_has_no_reflink_and_falls_back() {
    // The test machine's own filesystem (ext4) cannot share extents.
    let dir = tempfile::tempdir().unwrap();
    let probe = detect_strategy(dir.path()).unwrap();
    if probe.strategy == StorageStrategy::Reflink {
        banger_testkit::skip(
            "host_ext4_has_no_reflink_and_falls_back",
            &format!("{} supports reflinks", dir.path().display()),
            banger_testkit::Prerequisite::NotInCi,
        );
        return;
    }
    assert!(!probe.reflink.is_yes());
    let src = dir.path().join("a.img");
    util::sparse_image(&src, 64 << 20);
    let method =
        banger_disk::clone_file(&src, &dir.path().join("b.img"), StorageStrategy::Reflink).unwrap();
    assert_eq!(method, CloneMethod::SparseCopy);
}
