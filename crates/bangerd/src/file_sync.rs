//! `[[file_sync]]`: host files and directories copied into the guest's
//! `/root` (the work disk's top directory) at every VM start.
//!
//! Files get the entry's mode (default 0600); directories are copied
//! recursively with their source modes. A missing host path is a warning;
//! any other problem aborts the start, naming the entry.

use std::path::Path;

use banger_disk::Ext4Edits;
use banger_disk::edits::Meta;
use banger_model::file_sync::FileSync;

use crate::errors::{Cause, Doing, ServiceError};

/// Mode of directories created to hold a synced path.
const PARENT_MODE: u32 = 0o700;

/// Adds the edits for every entry; returns warnings for skipped entries.
pub fn add_edits(
    entries: &[FileSync],
    home: &Path,
    edits: &mut Ext4Edits,
) -> Result<Vec<String>, ServiceError> {
    let mut warnings = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let host = entry.host.resolve(home);
        let what = || format!("file_sync[{index}] ({})", host.display());
        let meta = match fs_err::metadata(&host) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                warnings.push(format!(
                    "file_sync[{index}]: {} does not exist; skipped",
                    host.display()
                ));
                continue;
            }
            Err(err) => return Err(err).rejected(what()),
        };
        let guest = format!("/{}", entry.guest.display());
        add_parents(&guest, edits).rejected(what())?;
        if meta.is_dir() {
            add_dir(&host, &guest, edits).rejected(what())?;
        } else {
            let content = fs_err::read(&host).rejected(what())?;
            edits
                .write_file(&guest, content, root_owned(entry.file_mode()))
                .rejected(what())?;
        }
    }
    Ok(warnings)
}

fn root_owned(mode: u32) -> Meta {
    Meta {
        mode,
        uid: 0,
        gid: 0,
    }
}

fn add_parents(
    guest: &str,
    edits: &mut Ext4Edits,
) -> Result<(), banger_disk::edits::GuestPathError> {
    if let Some(parent) = Path::new(guest).parent()
        && parent != Path::new("/")
    {
        edits.mkdir_p(&parent.to_string_lossy(), root_owned(PARENT_MODE))?;
    }
    Ok(())
}

fn add_dir(host: &Path, guest: &str, edits: &mut Ext4Edits) -> Result<(), Cause> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs_err::metadata(host)?.permissions().mode() & 0o7777;
    edits.mkdir_p(guest, root_owned(mode))?;
    edits.chmod(guest, mode)?;
    let mut children: Vec<_> = fs_err::read_dir(host)?.collect::<Result<_, _>>()?;
    children.sort_by_key(|entry| entry.file_name());
    for child in children {
        let name = child.file_name();
        let name = name
            .to_str()
            .ok_or_else(|| format!("{} is not UTF-8", child.path().display()))?;
        let host_child = child.path();
        let guest_child = format!("{guest}/{name}");
        let kind = child.file_type()?;
        if kind.is_dir() {
            add_dir(&host_child, &guest_child, edits)?;
        } else if kind.is_symlink() {
            let target = fs_err::read_link(&host_child)?;
            edits.symlink(&guest_child, &target.to_string_lossy(), 0, 0)?;
        } else if kind.is_file() {
            let meta = fs_err::metadata(&host_child)?;
            let content = fs_err::read(&host_child)?;
            edits.write_file(
                &guest_child,
                content,
                root_owned(meta.permissions().mode() & 0o7777),
            )?;
        } else {
            tracing::warn!(path = %host_child.display(), "file_sync skips special files");
        }
    }
    Ok(())
}
