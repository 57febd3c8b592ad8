//! Pure path checks for archive entries: names are normalised to plain
//! components below the root, and link targets are judged before anything
//! touches the disk.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::Refusal;

/// Longest entry path accepted, in bytes (Linux's `PATH_MAX` less the NUL).
pub(crate) const MAX_PATH_BYTES: usize = 4095;
/// Deepest entry path accepted, in components.
pub(crate) const MAX_DEPTH: usize = 256;

/// An entry path as plain components below the root (empty for the root).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RelPath {
    components: Vec<OsString>,
}

impl RelPath {
    pub(crate) fn root() -> Self {
        Self {
            components: Vec::new(),
        }
    }

    /// Normalises an archive name: `.` and empty components dropped;
    /// absolute names, `..` components, NULs and overlong names refused.
    pub(crate) fn from_archive(raw: &[u8]) -> Result<Self, Refusal> {
        if raw.starts_with(b"/") {
            return Err(Refusal::AbsolutePath);
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err(Refusal::PathTooLong);
        }
        if raw.contains(&0) {
            return Err(Refusal::NulByte);
        }
        let mut components = Vec::new();
        for part in raw.split(|byte| *byte == b'/') {
            match part {
                b"" | b"." => {}
                b".." => return Err(Refusal::ParentComponent),
                name => components.push(OsStr::from_bytes(name).to_owned()),
            }
        }
        if components.len() > MAX_DEPTH {
            return Err(Refusal::PathTooLong);
        }
        Ok(Self { components })
    }

    /// A path made of plain components (from [`RelPath::to_path`]) back.
    pub(crate) fn from_plain(path: &Path) -> Self {
        let components = path
            .components()
            .filter_map(|component| match component {
                Component::Normal(name) => Some(name.to_owned()),
                _ => None,
            })
            .collect();
        Self { components }
    }

    pub(crate) fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    pub(crate) fn components(&self) -> &[OsString] {
        &self.components
    }

    /// The parent and the last component; `None` for the root.
    pub(crate) fn split_last(&self) -> Option<(RelPath, &OsStr)> {
        let (last, parent) = self.components.split_last()?;
        Some((
            RelPath {
                components: parent.to_vec(),
            },
            last.as_os_str(),
        ))
    }

    pub(crate) fn join(&self, name: &OsStr) -> RelPath {
        let mut components = self.components.clone();
        components.push(name.to_owned());
        RelPath { components }
    }

    /// Whether `self` is `other` or below it.
    pub(crate) fn starts_with(&self, other: &RelPath) -> bool {
        self.components.starts_with(&other.components)
    }

    /// The path relative to the root, `.` for the root (for `*at` calls).
    pub(crate) fn to_path(&self) -> PathBuf {
        if self.components.is_empty() {
            PathBuf::from(".")
        } else {
            self.components.iter().collect()
        }
    }

    pub(crate) fn display(&self) -> String {
        if self.components.is_empty() {
            "/".to_owned()
        } else {
            self.to_path().display().to_string()
        }
    }
}

/// Checks a symlink target for the link at `link`: relative targets must
/// not climb above the root from the link's directory; absolute targets
/// are interpreted inside the image (as the guest sees them) and must not
/// climb above it either.
pub(crate) fn check_symlink_target(link: &RelPath, target: &[u8]) -> Result<(), Refusal> {
    let escapes = || Refusal::SymlinkEscapes {
        target: String::from_utf8_lossy(target).into_owned(),
    };
    if target.is_empty() || target.contains(&0) {
        return Err(Refusal::BadLinkTarget);
    }
    if target.len() > MAX_PATH_BYTES {
        return Err(Refusal::PathTooLong);
    }
    let mut depth: usize = if target.starts_with(b"/") {
        0
    } else {
        link.components().len().saturating_sub(1)
    };
    for part in target.split(|byte| *byte == b'/') {
        match part {
            b"" | b"." => {}
            b".." => depth = depth.checked_sub(1).ok_or_else(escapes)?,
            _ => depth += 1,
        }
    }
    Ok(())
}

/// A hard link target: a name inside the archive, judged like an entry
/// name (absolute and `..` refused).
pub(crate) fn hard_link_target(target: &[u8]) -> Result<RelPath, Refusal> {
    let escapes = || Refusal::HardLinkEscapes {
        target: String::from_utf8_lossy(target).into_owned(),
    };
    match RelPath::from_archive(target) {
        Ok(path) if path.is_root() => Err(Refusal::BadLinkTarget),
        Ok(path) => Ok(path),
        Err(Refusal::AbsolutePath | Refusal::ParentComponent) => Err(escapes()),
        Err(other) => Err(other),
    }
}

/// What a whiteout entry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Whiteout<'a> {
    /// `.wh..wh..opq`: hide everything lower layers put in the directory.
    Opaque,
    /// `.wh.NAME`: remove NAME.
    Remove(&'a OsStr),
    /// Other `.wh..wh.` names (aufs bookkeeping): ignored.
    Meta,
}

pub(crate) fn whiteout(name: &OsStr) -> Option<Whiteout<'_>> {
    let bytes = name.as_bytes();
    if bytes == b".wh..wh..opq" {
        return Some(Whiteout::Opaque);
    }
    if bytes.starts_with(b".wh..wh.") {
        return Some(Whiteout::Meta);
    }
    bytes
        .strip_prefix(b".wh.")
        .map(|rest| Whiteout::Remove(OsStr::from_bytes(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(raw: &str) -> RelPath {
        RelPath::from_archive(raw.as_bytes()).unwrap()
    }

    #[test]
    fn normalises_names() {
        assert_eq!(rel("./etc/passwd").to_path(), PathBuf::from("etc/passwd"));
        assert_eq!(rel("etc//x/./y/").to_path(), PathBuf::from("etc/x/y"));
        assert!(rel("./").is_root());
        assert!(rel(".").is_root());
        assert_eq!(rel(".").to_path(), PathBuf::from("."));
        assert_eq!(RelPath::from_archive(b"/etc/x"), Err(Refusal::AbsolutePath));
        for bad in ["../x", "a/../b", "a/..", "./.."] {
            assert_eq!(
                RelPath::from_archive(bad.as_bytes()),
                Err(Refusal::ParentComponent),
                "{bad}"
            );
        }
        assert_eq!(RelPath::from_archive(b"a\0b"), Err(Refusal::NulByte));
        let deep = "a/".repeat(MAX_DEPTH + 1);
        assert_eq!(
            RelPath::from_archive(deep.as_bytes()),
            Err(Refusal::PathTooLong)
        );
        assert!(rel("a/b/c").starts_with(&rel("a/b")));
        assert!(!rel("a/bc").starts_with(&rel("a/b")));
        assert!(rel("a").starts_with(&RelPath::root()));
    }

    #[test]
    fn judges_symlink_targets() {
        let ok = |link: &str, target: &str| check_symlink_target(&rel(link), target.as_bytes());
        assert!(ok("lib", "usr/lib").is_ok());
        assert!(ok("etc/localtime", "/usr/share/zoneinfo/UTC").is_ok());
        assert!(ok("etc/os-release", "../usr/lib/os-release").is_ok());
        assert!(ok("a/b/c", "../../x").is_ok());
        assert!(ok("dev/stdout", "/proc/self/fd/1").is_ok());
        assert!(ok("a", "x/../../y").is_err());
        assert!(ok("a/b", "../../x").is_err());
        assert!(ok("evil", "../../../../etc").is_err());
        assert!(ok("evil", "/../etc").is_err());
        assert!(ok("evil", "").is_err());
    }

    #[test]
    fn judges_hard_link_targets() {
        assert_eq!(hard_link_target(b"./usr/bin/x").unwrap(), rel("usr/bin/x"));
        assert!(matches!(
            hard_link_target(b"/etc/shadow"),
            Err(Refusal::HardLinkEscapes { .. })
        ));
        assert!(matches!(
            hard_link_target(b"../../etc/shadow"),
            Err(Refusal::HardLinkEscapes { .. })
        ));
        assert_eq!(hard_link_target(b"."), Err(Refusal::BadLinkTarget));
    }

    #[test]
    fn recognises_whiteouts() {
        assert_eq!(whiteout(OsStr::new(".wh..wh..opq")), Some(Whiteout::Opaque));
        assert_eq!(whiteout(OsStr::new(".wh..wh.plnk")), Some(Whiteout::Meta));
        assert_eq!(
            whiteout(OsStr::new(".wh.foo")),
            Some(Whiteout::Remove(OsStr::new("foo")))
        );
        assert_eq!(whiteout(OsStr::new("foo.wh.")), None);
    }
}
