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

use crate::errors::ServiceError;

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
        let fail = |problem: String| {
            ServiceError::invalid(format!(
                "file_sync[{index}] ({}): {problem}",
                host.display()
            ))
        };
        let meta = match fs_err::metadata(&host) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                warnings.push(format!(
                    "file_sync[{index}]: {} does not exist; skipped",
                    host.display()
                ));
                continue;
            }
            Err(err) => return Err(fail(err.to_string())),
        };
        let guest = format!("/{}", entry.guest.display());
        add_parents(&guest, edits).map_err(|err| fail(err.to_string()))?;
        if meta.is_dir() {
            add_dir(&host, &guest, edits).map_err(fail)?;
        } else {
            let content = fs_err::read(&host).map_err(|err| fail(err.to_string()))?;
            edits
                .write_file(&guest, content, root_owned(entry.file_mode()))
                .map_err(|err| fail(err.to_string()))?;
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

fn add_dir(host: &Path, guest: &str, edits: &mut Ext4Edits) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs_err::metadata(host)
        .map_err(|err| err.to_string())?
        .permissions()
        .mode()
        & 0o7777;
    edits
        .mkdir_p(guest, root_owned(mode))
        .map_err(|err| err.to_string())?;
    edits.chmod(guest, mode).map_err(|err| err.to_string())?;
    let mut children: Vec<_> = fs_err::read_dir(host)
        .map_err(|err| err.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|err| err.to_string())?;
    children.sort_by_key(|entry| entry.file_name());
    for child in children {
        let name = child.file_name();
        let name = name
            .to_str()
            .ok_or_else(|| format!("{} is not UTF-8", child.path().display()))?;
        let host_child = child.path();
        let guest_child = format!("{guest}/{name}");
        let kind = child.file_type().map_err(|err| err.to_string())?;
        if kind.is_dir() {
            add_dir(&host_child, &guest_child, edits)?;
        } else if kind.is_symlink() {
            let target = fs_err::read_link(&host_child).map_err(|err| err.to_string())?;
            edits
                .symlink(&guest_child, &target.to_string_lossy(), 0, 0)
                .map_err(|err| err.to_string())?;
        } else if kind.is_file() {
            let meta = fs_err::metadata(&host_child).map_err(|err| err.to_string())?;
            let content = fs_err::read(&host_child).map_err(|err| err.to_string())?;
            edits
                .write_file(
                    &guest_child,
                    content,
                    root_owned(meta.permissions().mode() & 0o7777),
                )
                .map_err(|err| err.to_string())?;
        } else {
            tracing::warn!(path = %host_child.display(), "file_sync skips special files");
        }
    }
    Ok(())
}
