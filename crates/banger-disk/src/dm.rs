//! Device-mapper snapshot devices: names, tables, `dmsetup create/remove`
//! and listing banger's devices from sysfs (`/sys/block/dm-*/dm/name`).
//!
//! A VM's root is `snapshot <base> <cow> P 8`: the image's rootfs on a
//! read-only loop device as origin, a sparse per-VM COW file on a second
//! loop device, persistent (the COW survives deactivation, so a stopped VM
//! can be reactivated), 4 KiB chunks.

use std::io;
use std::path::{Path, PathBuf};

use banger_model::Id;
use serde::{Deserialize, Serialize};

use crate::exec::{self, ExecError, Tool};
use crate::loopdev::LoopDevice;

/// Every dm device banger creates has a name starting with this.
pub const DM_PREFIX: &str = "banger-";

const SYS_BLOCK: &str = "/sys/block";

/// `banger-<vm id>-root`.
pub fn root_dm_name(vm_id: &Id) -> Result<String, InvalidDmName> {
    let id = vm_id.as_str();
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(InvalidDmName { id: id.to_owned() });
    }
    Ok(format!("{DM_PREFIX}{id}-root"))
}

#[derive(Debug, thiserror::Error)]
#[error("vm id {id:?} cannot name a device-mapper device (expected up to 64 letters and digits)")]
pub struct InvalidDmName {
    pub id: String,
}

/// `/dev/mapper/<name>`.
pub fn dm_device_path(name: &str) -> PathBuf {
    Path::new("/dev/mapper").join(name)
}

/// The snapshot table for an origin of `sectors` 512-byte sectors.
pub(crate) fn snapshot_table(base: LoopDevice, cow: LoopDevice, sectors: u64) -> String {
    format!(
        "0 {sectors} snapshot {} {} P 8",
        base.path().display(),
        cow.path().display()
    )
}

pub(crate) fn create(name: &str, table: &str) -> Result<(), ExecError> {
    exec::run(
        Tool::Dmsetup,
        &exec::args(["create", name, "--table", table]),
    )?;
    Ok(())
}

/// `dmsetup remove --retry` (retries while udev or a prober holds it).
pub(crate) fn remove(name: &str) -> Result<(), ExecError> {
    exec::run(Tool::Dmsetup, &exec::args(["remove", "--retry", name]))?;
    Ok(())
}

/// A device-mapper device on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmDevice {
    pub name: String,
    /// `dm-<minor>` in /sys/block.
    pub kernel_name: String,
    /// The loop devices it sits on (from `slaves/`).
    pub loops: Vec<LoopDevice>,
}

#[derive(Debug, thiserror::Error)]
pub enum ListDmError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Every dm device on the host whose name starts with `prefix`.
pub fn list_devices(prefix: &str) -> Result<Vec<DmDevice>, ListDmError> {
    list_devices_in(Path::new(SYS_BLOCK), prefix)
}

fn list_devices_in(sys_block: &Path, prefix: &str) -> Result<Vec<DmDevice>, ListDmError> {
    let read_error = |path: &Path| {
        let path = path.to_owned();
        move |source| ListDmError::Read { path, source }
    };
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(sys_block) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(error) => return Err(read_error(sys_block)(error)),
    };
    for entry in entries {
        let entry = entry.map_err(read_error(sys_block))?;
        let kernel_name = entry.file_name().to_string_lossy().into_owned();
        if !kernel_name.starts_with("dm-") {
            continue;
        }
        let name_path = entry.path().join("dm/name");
        let name = match std::fs::read_to_string(&name_path) {
            Ok(name) => name.trim_end().to_owned(),
            // Removed while we looked.
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(read_error(&name_path)(error)),
        };
        if !name.starts_with(prefix) {
            continue;
        }
        let mut loops = Vec::new();
        if let Ok(slaves) = std::fs::read_dir(entry.path().join("slaves")) {
            for slave in slaves.flatten() {
                if let Some(number) = slave
                    .file_name()
                    .to_str()
                    .and_then(|name| name.strip_prefix("loop"))
                    .and_then(|number| number.parse().ok())
                {
                    loops.push(LoopDevice { number });
                }
            }
        }
        loops.sort();
        found.push(DmDevice {
            name,
            kernel_name,
            loops,
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Whether a dm device of this name exists.
pub fn exists(name: &str) -> bool {
    dm_device_path(name).exists()
        || list_devices(name)
            .map(|devices| devices.iter().any(|device| device.name == name))
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tables() {
        let id = Id::from_stored("0123456789abcdef0123456789abcdef");
        assert_eq!(
            root_dm_name(&id).unwrap(),
            "banger-0123456789abcdef0123456789abcdef-root"
        );
        assert!(root_dm_name(&Id::from_stored("../evil")).is_err());
        assert!(root_dm_name(&Id::from_stored("")).is_err());
        assert_eq!(
            snapshot_table(
                LoopDevice { number: 3 },
                LoopDevice { number: 4 },
                8_388_608
            ),
            "0 8388608 snapshot /dev/loop3 /dev/loop4 P 8"
        );
    }

    #[test]
    fn lists_from_a_sysfs_tree() {
        let root = tempfile::tempdir().unwrap();
        let mk = |dev: &str, name: &str, slaves: &[&str]| {
            let dir = root.path().join(dev);
            std::fs::create_dir_all(dir.join("dm")).unwrap();
            std::fs::create_dir_all(dir.join("slaves")).unwrap();
            std::fs::write(dir.join("dm/name"), format!("{name}\n")).unwrap();
            for slave in slaves {
                std::fs::create_dir(dir.join("slaves").join(slave)).unwrap();
            }
        };
        mk("dm-0", "banger-abc-root", &["loop7", "loop2"]);
        mk("dm-1", "vg0-home", &["vda2"]);
        std::fs::create_dir(root.path().join("loop0")).unwrap();
        let found = list_devices_in(root.path(), DM_PREFIX).unwrap();
        assert_eq!(
            found,
            vec![DmDevice {
                name: "banger-abc-root".into(),
                kernel_name: "dm-0".into(),
                loops: vec![LoopDevice { number: 2 }, LoopDevice { number: 7 }],
            }]
        );
    }
}
