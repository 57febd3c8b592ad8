//! The sparse-copy fallback on the host's own filesystem.

use std::os::unix::fs::MetadataExt;

use banger_disk::{DiskOps, HostDiskOps, RootOverlay, RootRequest};
use banger_model::Id;
use banger_model::vm::StorageStrategy;

use crate::util;

#[test]
fn copy_keeps_holes_like_cp_sparse_always() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("rootfs.ext4");
    util::sparse_image(&base, 256 << 20);
    let vm_dir = dir.path().join("vm");
    std::fs::create_dir(&vm_dir).unwrap();

    let overlay = HostDiskOps::new()
        .create_root(&RootRequest {
            base: base.clone(),
            vm_dir: vm_dir.clone(),
            vm_id: Id::generate(),
            strategy: StorageStrategy::Copy,
        })
        .unwrap();
    let RootOverlay::File { strategy, path } = &overlay else {
        panic!("expected a file overlay: {overlay:?}");
    };
    assert_eq!(*strategy, StorageStrategy::Copy);

    let reference = dir.path().join("cp.img");
    util::run(
        "cp",
        &[
            "--sparse=always",
            util::path_str(&base),
            util::path_str(&reference),
        ],
    );
    let ours = std::fs::metadata(path).unwrap();
    let theirs = std::fs::metadata(&reference).unwrap();
    let source = std::fs::metadata(&base).unwrap();
    assert_eq!(ours.len(), source.len());
    // Four 1 MiB data regions: allocation stays at the source's, as cp's does.
    assert!(
        ours.blocks() <= source.blocks() + 64,
        "copy allocated {} blocks, source {}",
        ours.blocks(),
        source.blocks()
    );
    assert!(
        ours.blocks() <= theirs.blocks() + 64,
        "ours {} vs cp {}",
        ours.blocks(),
        theirs.blocks()
    );
    assert!(ours.blocks() * 512 < 8 << 20);
    assert_eq!(std::fs::read(path).unwrap(), std::fs::read(&base).unwrap());

    HostDiskOps::new().remove_root(&overlay).unwrap();
    assert!(!path.exists());
}
