//! A `newc` cpio archive writer (the format the kernel unpacks an initramfs
//! from), and a reader for tests and inspection.
//!
//! Entries are kept sorted by path and every parent directory is added, so
//! the kernel's unpacker always meets a directory before what it contains.
//! Output is deterministic: inode numbers follow path order, mtimes are 0.

use std::collections::BTreeMap;

const MAGIC: &[u8] = b"070701";
const TRAILER: &str = "TRAILER!!!";
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

/// One archive entry: a node with its permission bits (owner root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub node: Node,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpioPathError {
    #[error("cpio path {0:?} must be absolute, without `.`/`..` components or empty parts")]
    Bad(String),
    #[error("cpio path {0:?} is a parent directory and cannot also be a file")]
    NotADir(String),
}

/// An archive under construction.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) `path` and creates its missing parents (0755).
    pub fn insert(&mut self, path: &str, node: Node, mode: u32) -> Result<(), CpioPathError> {
        let clean = normalise(path)?;
        let mut parent = String::new();
        let parts: Vec<&str> = clean.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            match self.entries.get(&parent) {
                Some(Entry {
                    node: Node::Dir, ..
                }) => {}
                Some(_) => return Err(CpioPathError::NotADir(format!("/{parent}"))),
                None => {
                    self.entries.insert(
                        parent.clone(),
                        Entry {
                            node: Node::Dir,
                            mode: 0o755,
                        },
                    );
                }
            }
        }
        self.entries.insert(clean, Entry { node, mode });
        Ok(())
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> Result<(), CpioPathError> {
        self.insert(path, Node::Dir, mode)
    }

    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) -> Result<(), CpioPathError> {
        self.insert(path, Node::File(data), mode)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), CpioPathError> {
        self.insert(path, Node::Symlink(target.to_owned()), 0o777)
    }

    pub fn char_device(
        &mut self,
        path: &str,
        major: u32,
        minor: u32,
        mode: u32,
    ) -> Result<(), CpioPathError> {
        self.insert(path, Node::CharDevice { major, minor }, mode)
    }

    /// The entries, by path without the leading `/`.
    pub fn entries(&self) -> &BTreeMap<String, Entry> {
        &self.entries
    }

    /// The archive's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let (kind, data, nlink, rdev): (u32, &[u8], u32, (u32, u32)) = match &entry.node {
                Node::Dir => (S_IFDIR, &[], 2, (0, 0)),
                Node::File(data) => (S_IFREG, data, 1, (0, 0)),
                Node::Symlink(target) => (S_IFLNK, target.as_bytes(), 1, (0, 0)),
                Node::CharDevice { major, minor } => (S_IFCHR, &[], 1, (*major, *minor)),
            };
            write_entry(
                &mut out,
                ino as u32 + 1,
                kind | (entry.mode & 0o7777),
                nlink,
                rdev,
                path,
                data,
            );
        }
        write_entry(&mut out, 0, 0, 1, (0, 0), TRAILER, &[]);
        out
    }

    /// Reads a `newc` archive (as written here, or by `cpio -H newc`).
    pub fn parse(mut data: &[u8]) -> Result<Self, ParseCpioError> {
        let mut archive = Self::new();
        let mut offset = 0usize;
        loop {
            if data.len() < 110 || &data[..6] != MAGIC {
                return Err(ParseCpioError { offset });
            }
            let field = |i: usize| -> Result<u32, ParseCpioError> {
                let text = std::str::from_utf8(&data[6 + i * 8..14 + i * 8])
                    .map_err(|_| ParseCpioError { offset })?;
                u32::from_str_radix(text, 16).map_err(|_| ParseCpioError { offset })
            };
            let mode = field(1)?;
            let size = field(6)? as usize;
            let (rmajor, rminor) = (field(9)?, field(10)?);
            let name_size = field(11)? as usize;
            let name_end = 110 + name_size;
            let data_start = pad4(name_end);
            let data_end = data_start + size;
            if name_size == 0 || data.len() < data_end {
                return Err(ParseCpioError { offset });
            }
            let name = std::str::from_utf8(&data[110..name_end - 1])
                .map_err(|_| ParseCpioError { offset })?
                .to_owned();
            if name == TRAILER {
                return Ok(archive);
            }
            let body = data[data_start..data_end].to_vec();
            let node = match mode & 0o170_000 {
                S_IFDIR => Node::Dir,
                S_IFREG => Node::File(body),
                S_IFLNK => {
                    Node::Symlink(String::from_utf8(body).map_err(|_| ParseCpioError { offset })?)
                }
                S_IFCHR => Node::CharDevice {
                    major: rmajor,
                    minor: rminor,
                },
                _ => return Err(ParseCpioError { offset }),
            };
            archive.entries.insert(
                name.trim_start_matches('/').to_owned(),
                Entry {
                    node,
                    mode: mode & 0o7777,
                },
            );
            let next = pad4(data_end);
            offset += next;
            data = data.get(next..).ok_or(ParseCpioError { offset })?;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed newc cpio entry at offset {offset}")]
pub struct ParseCpioError {
    pub offset: usize,
}

fn normalise(path: &str) -> Result<String, CpioPathError> {
    let bad = || CpioPathError::Bad(path.to_owned());
    let rest = path.strip_prefix('/').ok_or_else(bad)?;
    if rest.is_empty()
        || rest
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(bad());
    }
    Ok(rest.to_owned())
}

fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

fn write_entry(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(MAGIC);
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(pad4(out.len()), 0);
    out.extend_from_slice(data);
    out.resize(pad4(out.len()), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_adds_parents() {
        let mut archive = Archive::new();
        archive
            .file("/lib/modules/6.1/kernel/a.ko", b"module".to_vec(), 0o644)
            .unwrap();
        archive.symlink("/bin/sh", "busybox").unwrap();
        archive.char_device("/dev/console", 5, 1, 0o600).unwrap();
        archive
            .file("/init", b"#!/bin/sh\n".to_vec(), 0o755)
            .unwrap();
        let bytes = archive.to_bytes();
        assert_eq!(bytes.len() % 4, 0);
        let parsed = Archive::parse(&bytes).unwrap();
        assert_eq!(parsed.entries(), archive.entries());
        let names: Vec<&str> = parsed.entries().keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/6.1",
                "lib/modules/6.1/kernel",
                "lib/modules/6.1/kernel/a.ko"
            ]
        );
    }

    #[test]
    fn the_system_cpio_reads_it() {
        let Some(cpio) = ["/usr/bin/cpio", "/bin/cpio"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
        else {
            banger_testkit::skip(
                "the_system_cpio_reads_it",
                "cpio is not installed (apt-get install cpio)",
                banger_testkit::Prerequisite::ProvidedByCi,
            );
            return;
        };
        let mut archive = Archive::new();
        archive.file("/etc/x", b"hello".to_vec(), 0o600).unwrap();
        archive.symlink("/etc/y", "x").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.cpio");
        std::fs::write(&file, archive.to_bytes()).unwrap();
        let listing = crate::exec::tests_support::list_cpio(cpio, &file);
        assert!(listing.contains("etc/x"), "{listing}");
        assert!(listing.contains("etc/y -> x"), "{listing}");
    }

    #[test]
    fn refuses_bad_paths() {
        let mut archive = Archive::new();
        for bad in ["relative", "/", "/a/../b", "/a//b", "/./a"] {
            assert!(archive.dir(bad, 0o755).is_err(), "{bad}");
        }
        archive.file("/f", vec![], 0o644).unwrap();
        assert!(matches!(
            archive.file("/f/g", vec![], 0o644),
            Err(CpioPathError::NotADir(_))
        ));
    }
}
