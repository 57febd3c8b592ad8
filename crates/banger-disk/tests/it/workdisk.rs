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

/// A request for a copied (not reflinked) disk without a grown-seed cache.
fn copy_request(
    seed: std::path::PathBuf,
    dest: std::path::PathBuf,
    size: ByteSize,
    content: Option<std::path::PathBuf>,
) -> WorkDiskRequest {
    WorkDiskRequest {
        seed,
        dest,
        size,
        strategy: StorageStrategy::Copy,
        grown_seed_cache: None,
        content,
        host_files: None,
        edits: None,
        progress: None,
    }
}

#[test]
fn copy_clone_grows_and_stays_clean() {
    let dir = tempfile::tempdir().unwrap();
    let seed = seed_in(dir.path());
    let dest = dir.path().join("work.ext4");
    let work = make_work_disk(&copy_request(
        seed.clone(),
        dest.clone(),
        ByteSize::gib(3),
        None,
    ))
    .unwrap();
    assert_eq!(work.method, Some(CloneMethod::SparseCopy));
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
    let error =
        make_work_disk(&copy_request(seed, dest.clone(), ByteSize::mib(8), None)).unwrap_err();
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
    make_work_disk(&copy_request(seed, dest.clone(), ByteSize::gib(200), None)).unwrap();
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
    make_work_disk(&copy_request(seed, dest.clone(), ByteSize::gib(1), None)).unwrap();
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

#[test]
fn a_disk_with_content_holds_it_beside_the_seeds_files_at_the_requested_size() {
    let dir = tempfile::tempdir().unwrap();
    let seed = seed_in(dir.path());
    // What `vm run PATH` stages: the repository, and a file the seed has too.
    let content = dir.path().join("content");
    std::fs::create_dir_all(content.join("repo/.git")).unwrap();
    std::fs::create_dir_all(content.join(".config")).unwrap();
    std::fs::write(content.join("repo/run.sh"), b"#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(
        content.join("repo/run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("run.sh", content.join("repo/link")).unwrap();
    std::fs::write(content.join(".config/app"), b"setting=from content\n").unwrap();
    let dest = dir.path().join("work.ext4");
    let work = make_work_disk(&copy_request(
        seed,
        dest.clone(),
        ByteSize::gib(2),
        Some(content.clone()),
    ))
    .unwrap();
    assert_eq!(work.method, None);
    assert_eq!(work.size, ByteSize::gib(2));
    util::assert_fsck_clean(&dest);
    assert_eq!(
        util::dumpe2fs_field(&dest, "Filesystem volume name"),
        "banger-work"
    );
    assert_eq!(
        banger_disk::read_file(&dest, "/repo/run.sh").unwrap(),
        b"#!/bin/sh\necho ran\n"
    );
    let run = banger_disk::stat(&dest, "/repo/run.sh").unwrap().unwrap();
    assert_eq!(run.mode & 0o7777, 0o755);
    let link = banger_disk::stat(&dest, "/repo/link").unwrap().unwrap();
    assert_eq!(link.kind, banger_disk::edits::FileKind::Symlink);
    // The content wins over the seed's file of the same name.
    assert_eq!(
        banger_disk::read_file(&dest, "/.config/app").unwrap(),
        b"setting=from content\n"
    );
    // It grows like any work disk.
    let grown = grow_work_disk(&dest, ByteSize::gib(3)).unwrap();
    assert_eq!(grown.after, ByteSize::gib(3));
    util::assert_fsck_clean(&dest);
}

#[test]
fn a_disk_with_content_carries_the_seeds_files() {
    let dir = tempfile::tempdir().unwrap();
    let seed = seed_in(dir.path());
    let content = dir.path().join("content");
    std::fs::create_dir_all(content.join("repo")).unwrap();
    let dest = dir.path().join("work.ext4");
    make_work_disk(&copy_request(
        seed,
        dest.clone(),
        ByteSize::gib(1),
        Some(content),
    ))
    .unwrap();
    assert_eq!(
        banger_disk::read_file(&dest, "/.config/app").unwrap(),
        b"setting=1\n"
    );
}

#[test]
fn content_larger_than_the_disk_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let seed = seed_in(dir.path());
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    // 100 MiB of data cannot go into a 128 MiB disk with ext4's overhead
    // and the headroom left for the guest.
    let file = std::fs::File::create(content.join("big")).unwrap();
    std::io::Write::write_all(&mut &file, &vec![7u8; 100 << 20]).unwrap();
    let dest = dir.path().join("work.ext4");
    let error = make_work_disk(&copy_request(
        seed,
        dest.clone(),
        ByteSize::mib(128),
        Some(content),
    ))
    .unwrap_err();
    assert!(
        matches!(error, MakeWorkDiskError::ContentTooLarge { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("--disk-size"), "{error}");
    assert!(!dest.exists());
}
