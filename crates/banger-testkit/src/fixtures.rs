//! Root filesystems built by banger's own bootstrap code and cached under
//! the repository's ignored `.cache/` (or `BANGER_FIXTURE_CACHE`), so that
//! a machine builds each once: the developer image's tree, made exactly as
//! `banger image bootstrap` makes it (same package list, same debootstrap
//! plan, same clean-up), for tests that `image import` it and so get the
//! current guest files.

use std::path::{Path, PathBuf};

use banger_bootstrap::distro::{Distro, ImageProfile};
use banger_bootstrap::host::{BootstrapHost, HostBootstrap};
use banger_bootstrap::rootfs::{self, RootfsPlan};
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

/// Where fixtures and `.deb` caches live.
pub fn cache_root() -> PathBuf {
    std::env::var_os("BANGER_FIXTURE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::sim::repo_root().join(".cache"))
}

/// The developer profile's root filesystem (debian:bookworm), built on
/// first use (debootstrap from Debian's mirror, a few minutes; `.deb`s kept
/// in `.cache/debootstrap/`) and reused while its package list is unchanged.
/// Needs root and the mirror; panics with debootstrap's log otherwise.
/// Concurrent callers wait for one build.
pub fn developer_rootfs() -> PathBuf {
    let cache = cache_root();
    let dir = cache.join("fixtures/developer-bookworm");
    fs_err::create_dir_all(&dir).unwrap();
    let lock = fs_err::File::create(cache.join("fixtures/developer-bookworm.lock")).unwrap();
    let _lock = Flock::lock(lock.into_parts().0, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, err)| panic!("locking the developer fixture: {err}"));

    let distro = Distro::parse("debian:bookworm").unwrap();
    let target = dir.join("rootfs");
    let building = dir.join("rootfs.tmp");
    let log = dir.join("debootstrap.log");
    let plan = RootfsPlan::new(
        &distro,
        distro.default_mirror,
        ImageProfile::Developer,
        &[],
        &building,
        &cache,
        &log,
    )
    .unwrap();
    let stamp = stamp_of(&plan);
    let stamp_file = dir.join("stamp");
    if fs_err::read_to_string(&stamp_file).is_ok_and(|found| found.trim() == stamp)
        && target.join("etc/os-release").is_file()
    {
        return target;
    }
    let started = std::time::Instant::now();
    eprintln!(
        "building the developer image fixture in {} (debootstrap {distro}: {}); log: {}",
        dir.display(),
        plan.packages.join(", "),
        log.display()
    );
    let _ = fs_err::remove_file(&stamp_file);
    for stale in [&target, &building] {
        remove_tree(stale);
    }
    let host = HostBootstrap;
    host.preflight(&plan)
        .unwrap_or_else(|err| panic!("cannot build the developer fixture: {err}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let ran = runtime.block_on(host.debootstrap(&plan, &mut |_| {}, &cancel));
    if let Err(err) = ran {
        remove_tree(&building);
        panic!("building the developer fixture failed: {err}");
    }
    rootfs::finish(&building).unwrap();
    fs_err::rename(&building, &target).unwrap();
    fs_err::write(&stamp_file, format!("{stamp}\n")).unwrap();
    eprintln!(
        "built the developer image fixture in {:.0?}",
        started.elapsed()
    );
    target
}

/// What the tree depends on: the release and the package list.
fn stamp_of(plan: &RootfsPlan) -> String {
    let mut hash = Sha256::new();
    hash.update(format!("{}\n{}\n", plan.distro, plan.packages.join(",")));
    hex::encode(hash.finalize())
}

/// Removes a tree debootstrap may have left mounts in.
fn remove_tree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    if let Err(err) = HostBootstrap.release_mounts(dir) {
        panic!("cannot clean {}: {err}", dir.display());
    }
    fs_err::remove_dir_all(dir).unwrap();
}
