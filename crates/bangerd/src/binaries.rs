//! Finding banger's companion binaries (`banger-vsock-agent`,
//! `banger-simvm`): next to `bangerd`, then in `../lib/banger/` of an
//! installed prefix, then in `PATH`.

use std::path::{Path, PathBuf};

pub const AGENT: &str = "banger-vsock-agent";
pub const SIMVM: &str = "banger-simvm";

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot find {name} next to bangerd ({searched}) or in PATH; reinstall banger with `make install`"
)]
pub struct FindBinaryError {
    pub name: String,
    pub searched: String,
}

pub fn find(name: &str) -> Result<PathBuf, FindBinaryError> {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join(name));
        candidates.push(dir.join("../lib/banger").join(name));
    }
    if let Some(found) = candidates.iter().find(|path| path.is_file()) {
        return Ok(found.clone());
    }
    if let Some(found) = banger_exec::find_program(name, &[]) {
        return Ok(found);
    }
    Err(FindBinaryError {
        name: name.to_owned(),
        searched: candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Whether `path` starts with the ELF magic.
pub fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// Whether `path` is a regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
