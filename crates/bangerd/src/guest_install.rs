//! Installing banger's guest files (first-boot script, agent, units, sshd
//! drop-in) into an ext4 image without mounting it.

use std::path::Path;

use banger_disk::edits::Meta;
use banger_disk::{DiskOps, Ext4Edits};
use banger_guest::files::{EntryKind, GuestFiles};

#[derive(Debug, thiserror::Error)]
pub enum InstallGuestFilesError {
    #[error("reading guest file for {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("guest path {path} cannot be written")]
    Path {
        path: String,
        #[source]
        source: banger_disk::edits::GuestPathError,
    },
    #[error("writing guest files into {image}")]
    Apply {
        image: String,
        #[source]
        source: banger_disk::ApplyEditsError,
    },
}

/// The edits that install `files`, owned by root.
pub fn edits_for(files: &GuestFiles) -> Result<Ext4Edits, InstallGuestFilesError> {
    let mut edits = Ext4Edits::new();
    for entry in files.entries() {
        let path = entry.path.as_ref();
        let path_err = |source| InstallGuestFilesError::Path {
            path: path.to_owned(),
            source,
        };
        match &entry.kind {
            EntryKind::Dir { mode } => {
                edits
                    .mkdir_p(
                        path,
                        Meta {
                            mode: *mode,
                            uid: 0,
                            gid: 0,
                        },
                    )
                    .map_err(path_err)?;
            }
            EntryKind::File { source, mode } => {
                let content = source
                    .read()
                    .map_err(|source| InstallGuestFilesError::Read {
                        path: path.to_owned(),
                        source,
                    })?;
                edits
                    .write_file(
                        path,
                        content.into_owned(),
                        Meta {
                            mode: *mode,
                            uid: 0,
                            gid: 0,
                        },
                    )
                    .map_err(path_err)?;
            }
            EntryKind::Symlink { target } => {
                edits.symlink(path, target, 0, 0).map_err(path_err)?;
            }
        }
    }
    Ok(edits)
}

/// Installs the guest files into the ext4 image at `image`.
pub fn install(
    disk: &dyn DiskOps,
    image: &Path,
    agent: &Path,
) -> Result<(), InstallGuestFilesError> {
    let edits = edits_for(&GuestFiles::new(agent))?;
    disk.apply_edits(image, &edits)
        .map_err(|source| InstallGuestFilesError::Apply {
            image: image.display().to_string(),
            source,
        })
}
