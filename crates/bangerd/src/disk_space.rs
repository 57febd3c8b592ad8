//! Disk honesty. VM disks are sparse: a guest's root and work disks take
//! host blocks only as the guest writes, up to their provisioned size. The
//! policy: a VM is created only when the state filesystem's free space can
//! hold all of its disks (`--allow-overcommit` creates it anyway); what all
//! VMs could still grow into is shown (doctor, `vm stats`, `vm show`); and
//! the daemon warns — in its log and on `vm list` — when the free space
//! falls below [`low_threshold`], before guests see I/O errors.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use banger_model::ByteSize;
use banger_model::VmSpec;
use banger_model::image::Image;
use banger_model::vm::{DiskUsage, Vm, VmDisks};

use crate::daemon::Daemon;
use crate::errors::ServiceError;

/// How often the daemon looks at the free space.
const MONITOR_EVERY: Duration = Duration::from_secs(20);

/// Free and total bytes of the filesystem holding `dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filesystem {
    pub free: ByteSize,
    pub total: ByteSize,
}

pub fn filesystem(dir: &Path) -> std::io::Result<Filesystem> {
    let stat = nix::sys::statvfs::statvfs(dir)?;
    let block = stat.fragment_size();
    Ok(Filesystem {
        free: ByteSize(stat.blocks_available() * block),
        total: ByteSize(stat.blocks() * block),
    })
}

/// Below this much free space the daemon warns: 5% of the filesystem,
/// at least 1 GiB, at most 10 GiB.
pub fn low_threshold(total: ByteSize) -> ByteSize {
    ByteSize((total.0 / 20).clamp(1 << 30, 10 << 30))
}

/// A VM's disks: provisioned from its spec and image, allocated from the
/// files (a dm-snapshot root counts its copy-on-write file).
pub fn vm_disks(vm: &Vm, image: Option<&Image>) -> VmDisks {
    let paths = vm.paths();
    let allocated = |path: &Path| {
        use std::os::unix::fs::MetadataExt;
        ByteSize(std::fs::metadata(path).map_or(0, |meta| meta.blocks() * 512))
    };
    VmDisks {
        root: DiskUsage {
            provisioned: image.map_or(ByteSize(0), |image| image.rootfs_size),
            allocated: ByteSize(
                allocated(&paths.root_disk()).0
                    + allocated(&banger_disk::overlay::cow_path(&paths.dir)).0,
            ),
        },
        work: DiskUsage {
            provisioned: vm.spec.disk_size,
            allocated: allocated(&paths.work_disk()),
        },
    }
}

/// Refuses a new VM whose disks the free space could not hold.
pub fn check_new_vm(
    daemon: &Daemon,
    name: &str,
    spec: &VmSpec,
    image: &Image,
    allow_overcommit: bool,
) -> Result<(), ServiceError> {
    if allow_overcommit {
        return Ok(());
    }
    let Ok(fs) = filesystem(&daemon.layout.state_dir) else {
        // Nothing to compare with (the dir is made later); the monitor
        // and doctor still watch.
        return Ok(());
    };
    let need = ByteSize(spec.disk_size.0 + image.rootfs_size.0);
    if need <= fs.free {
        return Ok(());
    }
    Err(ServiceError::NoSpace(format!(
        "VM {name} may grow to {} ({} disk + {} root from image {}), but {} has {} free",
        need.human(),
        spec.disk_size.human(),
        image.rootfs_size.human(),
        image.name,
        daemon.layout.state_dir.display(),
        fs.free.human(),
    ))
    .with_hint(
        "pick a smaller --disk-size, free space there, or pass --allow-overcommit \
         (disks are sparse; a guest that fills them then fills the host's filesystem)",
    ))
}

/// The warning for a state filesystem low on space, if it is.
pub fn low_space_warning(daemon: &Daemon) -> Option<String> {
    let fs = filesystem(&daemon.layout.state_dir).ok()?;
    (fs.free < low_threshold(fs.total)).then(|| {
        format!(
            "{} has only {} free: guests writing to their disks may soon get I/O errors; free space there",
            daemon.layout.state_dir.display(),
            fs.free.human()
        )
    })
}

/// Watches the free space; logs when it falls below the threshold and
/// when it recovers.
pub fn spawn_monitor(daemon: &Arc<Daemon>) {
    let weak: Weak<Daemon> = Arc::downgrade(daemon);
    tokio::spawn(async move {
        let mut low = false;
        loop {
            let Some(daemon) = weak.upgrade() else { return };
            let warning = low_space_warning(&daemon);
            match (&warning, low) {
                (Some(text), false) => {
                    tracing::warn!(warning = %text, "state filesystem low on space")
                }
                (None, true) => tracing::info!("state filesystem has room again"),
                _ => {}
            }
            low = warning.is_some();
            let shutdown = daemon.shutdown.clone();
            drop(daemon);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(MONITOR_EVERY) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_low_space_threshold_is_five_percent_within_bounds() {
        assert_eq!(low_threshold(ByteSize::gib(4)), ByteSize::gib(1));
        assert_eq!(low_threshold(ByteSize::gib(100)), ByteSize::gib(5));
        assert_eq!(low_threshold(ByteSize::gib(2000)), ByteSize::gib(10));
    }
}
