//! Files a new work disk takes straight from the host (`vm run PATH`): the
//! client names them, the daemon copies them into the disk as it writes
//! it. A workspace's unchanged tracked files are most of its bytes; taken
//! from the checkout itself, they are never staged.
//!
//! The list travels as a file (a large repository names hundreds of
//! thousands of paths): a header line, then per section its host root,
//! the directory it fills on the disk, the count of paths and the paths,
//! each ended by a NUL. Paths are relative and plain (no `.`, `..`, empty
//! or absolute components).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

const HEADER: &[u8] = b"banger host files 1\n";

/// One host directory's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// An absolute host directory the paths are beneath.
    pub root: PathBuf,
    /// Where they go on the disk, relative to its root.
    pub into: PathBuf,
    /// Relative to both.
    pub paths: Vec<PathBuf>,
    /// When they were last seen unchanged (git compared them with the
    /// index), in seconds since the epoch: a file modified before then is
    /// as the repository's index says, so the disk's index may call it
    /// clean.
    pub clean_before: Option<i64>,
}

/// The whole list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostFiles {
    pub sections: Vec<Section>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostFilesError {
    #[error("not a host file list (its header is missing)")]
    Header,
    #[error("the list ends in the middle of a section")]
    Truncated,
    #[error("{0:?} is not an absolute directory")]
    Root(PathBuf),
    #[error("{0:?} is not a plain relative path")]
    Path(PathBuf),
}

impl HostFiles {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = HEADER.to_vec();
        let field = |out: &mut Vec<u8>, bytes: &[u8]| {
            out.extend_from_slice(bytes);
            out.push(0);
        };
        for section in &self.sections {
            field(&mut out, section.root.as_os_str().as_bytes());
            field(&mut out, section.into.as_os_str().as_bytes());
            let clean_before = section
                .clean_before
                .map(|secs| secs.to_string())
                .unwrap_or_default();
            field(&mut out, clean_before.as_bytes());
            field(&mut out, section.paths.len().to_string().as_bytes());
            for path in &section.paths {
                field(&mut out, path.as_os_str().as_bytes());
            }
        }
        out
    }

    /// Reads and checks a list (roots absolute, every other path plain
    /// and relative).
    pub fn decode(bytes: &[u8]) -> Result<Self, HostFilesError> {
        let body = bytes.strip_prefix(HEADER).ok_or(HostFilesError::Header)?;
        let body = match body.strip_suffix(b"\0") {
            Some(body) => body,
            None if body.is_empty() => return Ok(Self::default()),
            None => return Err(HostFilesError::Truncated),
        };
        let mut fields = body
            .split(|&byte| byte == 0)
            .map(|field| Path::new(OsStr::from_bytes(field)));
        let mut sections = Vec::new();
        while let Some(root) = fields.next() {
            if !root.is_absolute() || root.components().any(|c| c == Component::ParentDir) {
                return Err(HostFilesError::Root(root.to_owned()));
            }
            let into = fields.next().ok_or(HostFilesError::Truncated)?;
            if !into.as_os_str().is_empty() {
                plain(into)?;
            }
            let clean_before = fields.next().ok_or(HostFilesError::Truncated)?;
            let clean_before = match clean_before.as_os_str().is_empty() {
                true => None,
                false => Some(
                    clean_before
                        .to_str()
                        .and_then(|secs| secs.parse().ok())
                        .ok_or(HostFilesError::Truncated)?,
                ),
            };
            let count: usize = fields
                .next()
                .and_then(|count| count.to_str()?.parse().ok())
                .ok_or(HostFilesError::Truncated)?;
            let mut paths = Vec::with_capacity(count.min(1 << 20));
            for _ in 0..count {
                let path = fields.next().ok_or(HostFilesError::Truncated)?;
                plain(path)?;
                paths.push(path.to_owned());
            }
            sections.push(Section {
                root: root.to_owned(),
                into: into.to_owned(),
                paths,
                clean_before,
            });
        }
        Ok(Self { sections })
    }
}

fn plain(path: &Path) -> Result<(), HostFilesError> {
    let ok = !path.as_os_str().is_empty()
        && !path.as_os_str().as_bytes().ends_with(b"/")
        && path.components().all(|c| matches!(c, Component::Normal(_)))
        // `components` skips `.` and repeated slashes; refuse them too.
        && !path
            .as_os_str()
            .as_bytes()
            .split(|&byte| byte == b'/')
            .any(|part| part.is_empty() || part == b".");
    if ok {
        Ok(())
    } else {
        Err(HostFilesError::Path(path.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_comes_back_as_it_went() {
        let files = HostFiles {
            sections: vec![Section {
                root: "/home/me/src/app".into(),
                into: "repo".into(),
                paths: vec!["README.md".into(), "src/ä b\nc.rs".into()],
                clean_before: Some(1_800_000_000),
            }],
        };
        assert_eq!(HostFiles::decode(&files.encode()).unwrap(), files);
        assert_eq!(
            HostFiles::decode(&HostFiles::default().encode()).unwrap(),
            HostFiles::default()
        );
    }

    #[test]
    fn escaping_paths_and_broken_lists_are_refused() {
        let with = |root: &str, into: &str, path: &str| HostFiles {
            sections: vec![Section {
                root: root.into(),
                into: into.into(),
                paths: vec![path.into()],
                clean_before: None,
            }],
        };
        for (root, into, path) in [
            ("/r", "repo", "../etc/passwd"),
            ("/r", "repo", "/etc/passwd"),
            ("/r", "repo", "a/./b"),
            ("/r", "repo", "a//b"),
            ("/r", "repo", "a/"),
            ("/r", "repo", ""),
            ("/r", "../x", "a"),
            ("relative", "repo", "a"),
        ] {
            let encoded = with(root, into, path).encode();
            assert!(HostFiles::decode(&encoded).is_err(), "{root} {into} {path}");
        }
        let mut truncated = with("/r", "repo", "a").encode();
        truncated.truncate(truncated.len() - 2);
        assert_eq!(
            HostFiles::decode(&truncated),
            Err(HostFilesError::Truncated)
        );
        assert_eq!(
            HostFiles::decode(b"something else"),
            Err(HostFilesError::Header)
        );
    }
}
