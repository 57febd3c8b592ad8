//! Work disks: seed clone, growth with resize2fs, growth refusal.

use banger_disk::mkfs::make_work_seed;
use banger_disk::workdisk::{GrowWorkDiskError, MakeWorkDiskError, grow_work_disk, make_work_disk};
use banger_disk::{CloneMethod, MountedExt4, WorkDiskRequest};
use banger_model::ByteSize;
use banger_model::vm::StorageStrategy;

use crate::util::{self, require_root};

fn seed_in(dir: &std::path::Path) -> std::path::PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("root/.config")).unwrap();
    std::fs::write(tree.join("root/.config/app"), b"setting=1\n").unwrap();
    let seed = dir.join("work-seed.ext4");
    make_work_seed(&tree, &seed).unwrap();
    seed
}

#[test]
fn copy_clone_grows_and_stays_clean() {
    let dir = tempfile::tempdir().unwrap();
    let seed = seed_in(dir.path());
    let dest = dir.path().join("work.ext4");
    let work = make_work_disk(&WorkDiskRequest {
        seed: seed.clone(),
        dest: dest.clone(),
        size: ByteSize::gib(3),
        strategy: StorageStrategy::Copy,
        grown_seed_cache: None,
    })
    .unwrap();
    assert_eq!(work.method, CloneMethod::SparseCopy);
    assert!(!work.from_cache);
    assert_eq!(work.size, ByteSize::gib(3));
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 3 << 30);
    util::assert_fsck_clean(&dest);
    assert_eq!(
        util::dumpe2fs_field(&dest, "Block count"),
        ((3u64 << 30) / 4096).to_string()
    );
    assert_eq!(util::dumpe2fs_field(&dest, "Block size"), "4096");
    // The seed itself is untouched, the content carried over.
    assert!(std::fs::metadata(&seed).unwrap().len() < 1 << 30);
    assert_eq!(
        banger_disk::read_file(&dest, "/.config/app").unwrap(),
        b"setting=1\n"
    );

    // Growing further works; the same size is a no-op; shrinking is refused.
    let grown = grow_work_disk(&dest, ByteSize::gib(5)).unwrap();
    assert_eq!(
        (grown.before, grown.after),
        (ByteSize::gib(3), ByteSize::gib(5))
    );
    let same = grow_work_disk(&dest, ByteSize::gib(5)).unwrap();
    assert_eq!(same.before, same.after);
    let error = grow_work_disk(&dest, ByteSize::gib(2)).unwrap_err();
    assert!(matches!(error, GrowWorkDiskError::Shrink { .. }), "{error}");
    assert!(error.to_string().contains("only grow"), "{error}");
    util::assert_fsck_clean(&dest);
    assert_eq!(
        util::dumpe2fs_field(&dest, "Block count"),
        ((5u64 << 30) / 4096).to_string()
    );
}

#[test]
fn smaller_than_the_seed_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let seed = seed_in(dir.path());
    let dest = dir.path().join("work.ext4");
    let error = make_work_disk(&WorkDiskRequest {
        seed,
        dest: dest.clone(),
        size: ByteSize::mib(8),
        strategy: StorageStrategy::Copy,
        grown_seed_cache: None,
    })
    .unwrap_err();
    assert!(
        matches!(error, MakeWorkDiskError::SmallerThanSeed { .. }),
        "{error}"
    );
    assert!(!dest.exists());
}

#[test]
fn growth_far_beyond_the_seed_works() {
    // Without reserved descriptor blocks, resize2fs fails growing a 64 MiB
    // filesystem past ~64 GiB; work seeds are made growable.
    let dir = tempfile::tempdir().unwrap();
    let seed = seed_in(dir.path());
    let dest = dir.path().join("work.ext4");
    make_work_disk(&WorkDiskRequest {
        seed,
        dest: dest.clone(),
        size: ByteSize::gib(200),
        strategy: StorageStrategy::Copy,
        grown_seed_cache: None,
    })
    .unwrap();
    util::assert_fsck_clean(&dest);
    assert_eq!(
        util::dumpe2fs_field(&dest, "Block count"),
        ((200u64 << 30) / 4096).to_string()
    );
}

#[test]
fn a_used_disk_is_checked_before_resizing() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let seed = seed_in(dir.path());
    let dest = dir.path().join("work.ext4");
    make_work_disk(&WorkDiskRequest {
        seed,
        dest: dest.clone(),
        size: ByteSize::gib(1),
        strategy: StorageStrategy::Copy,
        grown_seed_cache: None,
    })
    .unwrap();
    // A mount after the last check makes resize2fs ask for e2fsck -f.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    {
        let mounted = MountedExt4::ext4(&dest, false).unwrap();
        std::fs::write(mounted.path().join("note"), b"written while mounted\n").unwrap();
    }
    let grown = grow_work_disk(&dest, ByteSize::gib(2)).unwrap();
    assert_eq!(grown.after, ByteSize::gib(2));
    util::assert_fsck_clean(&dest);
    assert_eq!(
        banger_disk::read_file(&dest, "/note").unwrap(),
        b"written while mounted\n"
    );
    assert!(util::loops_under(dir.path()).is_empty());
}
