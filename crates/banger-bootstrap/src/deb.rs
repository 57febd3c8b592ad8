//! Reading a `.deb` without installing it: an `ar` archive whose
//! `data.tar[.gz|.xz|.zst|.bz2]` member holds the package's files.
//! Entries are streamed; nothing is written to disk.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::decompress::Compression;

/// A package file in memory.
#[derive(Debug, Clone)]
pub struct Deb {
    path: PathBuf,
    bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadDebError {
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a Debian package (bad ar archive: {why})")]
    Format { path: PathBuf, why: String },
    #[error("{path} has no data.tar member")]
    NoData { path: PathBuf },
    #[error("reading the files of {path}")]
    Tar {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A file of the package, handed to [`Deb::walk`]'s visitor.
#[derive(Debug)]
pub struct DebFile<'a, R: Read> {
    /// Path inside the package, without a leading `./` or `/`.
    pub path: &'a str,
    pub kind: DebFileKind,
    /// The contents (for regular files).
    pub reader: &'a mut R,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebFileKind {
    File,
    Dir,
    Symlink(String),
    Other,
}

impl Deb {
    pub fn open(path: &Path) -> Result<Self, ReadDebError> {
        let bytes = fs_err::read(path).map_err(|source| ReadDebError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            bytes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `ar` members: (name, contents).
    pub fn members(&self) -> Result<Vec<(String, &[u8])>, ReadDebError> {
        let format = |why: &str| ReadDebError::Format {
            path: self.path.clone(),
            why: why.to_owned(),
        };
        let data = &self.bytes;
        if !data.starts_with(b"!<arch>\n") {
            return Err(format("no !<arch> magic"));
        }
        let mut at = 8;
        let mut members = Vec::new();
        while at + 60 <= data.len() {
            let header = &data[at..at + 60];
            if &header[58..60] != b"`\n" {
                return Err(format("bad member header"));
            }
            let name = String::from_utf8_lossy(&header[..16])
                .trim_end()
                .trim_end_matches('/')
                .to_owned();
            let size: usize = std::str::from_utf8(&header[48..58])
                .ok()
                .and_then(|size| size.trim().parse().ok())
                .ok_or_else(|| format("bad member size"))?;
            let start = at + 60;
            let end = start
                .checked_add(size)
                .filter(|end| *end <= data.len())
                .ok_or_else(|| format("member runs past the end"))?;
            members.push((name, &data[start..end]));
            at = end + (size % 2);
        }
        Ok(members)
    }

    /// Calls `visit` for every entry of `data.tar`, in archive order.
    pub fn walk(
        &self,
        mut visit: impl FnMut(DebFile<'_, tar::Entry<'_, Box<dyn Read + '_>>>) -> std::io::Result<()>,
    ) -> Result<(), ReadDebError> {
        let members = self.members()?;
        let (name, data) = members
            .into_iter()
            .find(|(name, _)| name.starts_with("data.tar"))
            .ok_or_else(|| ReadDebError::NoData {
                path: self.path.clone(),
            })?;
        let reader: Box<dyn Read + '_> = match Compression::from_extension(&name) {
            None if name == "data.tar" => Box::new(data),
            None => {
                return Err(ReadDebError::Format {
                    path: self.path.clone(),
                    why: format!("unknown member {name}"),
                });
            }
            Some(Compression::Gzip) => Box::new(flate2::read::GzDecoder::new(data)),
            Some(Compression::Xz) => Box::new(liblzma::read::XzDecoder::new(data)),
            Some(Compression::Zstd) => {
                Box::new(zstd::stream::read::Decoder::new(data).map_err(|source| {
                    ReadDebError::Tar {
                        path: self.path.clone(),
                        source,
                    }
                })?)
            }
            Some(Compression::Bzip2) => Box::new(bzip2::read::BzDecoder::new(data)),
            Some(other) => {
                return Err(ReadDebError::Format {
                    path: self.path.clone(),
                    why: format!("{other}-compressed data member"),
                });
            }
        };
        let tar_err = |source| ReadDebError::Tar {
            path: self.path.clone(),
            source,
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(tar_err)? {
            let mut entry = entry.map_err(tar_err)?;
            let raw = entry
                .path()
                .map_err(tar_err)?
                .to_string_lossy()
                .into_owned();
            let path = raw
                .trim_start_matches("./")
                .trim_start_matches('/')
                .trim_end_matches('/')
                .to_owned();
            let kind = match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => DebFileKind::File,
                tar::EntryType::Directory => DebFileKind::Dir,
                tar::EntryType::Symlink => DebFileKind::Symlink(
                    entry
                        .link_name()
                        .map_err(tar_err)?
                        .map(|target| target.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
                _ => DebFileKind::Other,
            };
            visit(DebFile {
                path: &path,
                kind,
                reader: &mut entry,
            })
            .map_err(tar_err)?;
        }
        Ok(())
    }

    /// The contents of the regular files whose paths `want` accepts.
    pub fn read_files(
        &self,
        mut want: impl FnMut(&str) -> bool,
    ) -> Result<Vec<(String, Vec<u8>)>, ReadDebError> {
        let mut found = Vec::new();
        self.walk(|file| {
            if file.kind == DebFileKind::File && want(file.path) {
                let mut data = Vec::new();
                file.reader.read_to_end(&mut data)?;
                found.push((file.path.to_owned(), data));
            }
            Ok(())
        })?;
        Ok(found)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A `.deb` with `files` (path, contents) in an xz-compressed data.tar.
    pub(crate) fn build_deb(files: &[(&str, &[u8])], symlinks: &[(&str, &str)]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, format!("./{path}"), *data)
                .unwrap();
        }
        for (path, target) in symlinks {
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            header.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut header, format!("./{path}"), target)
                .unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&tar).unwrap();
        let data = xz.finish().unwrap();
        let mut ar = b"!<arch>\n".to_vec();
        for (name, body) in [
            ("debian-binary", b"2.0\n".as_slice()),
            ("control.tar.xz", b"".as_slice()),
            ("data.tar.xz", data.as_slice()),
        ] {
            ar.extend_from_slice(
                format!(
                    "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    name,
                    0,
                    0,
                    0,
                    100644,
                    body.len()
                )
                .as_bytes(),
            );
            ar.extend_from_slice(body);
            if body.len() % 2 == 1 {
                ar.push(b'\n');
            }
        }
        ar
    }

    #[test]
    fn reads_members_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.deb");
        std::fs::write(
            &path,
            build_deb(
                &[("boot/vmlinuz-6.1", b"kernel"), ("usr/share/doc/x", b"doc")],
                &[("bin/sh", "busybox")],
            ),
        )
        .unwrap();
        let deb = Deb::open(&path).unwrap();
        let names: Vec<String> = deb.members().unwrap().into_iter().map(|m| m.0).collect();
        assert_eq!(names, ["debian-binary", "control.tar.xz", "data.tar.xz"]);
        let files = deb.read_files(|path| path.starts_with("boot/")).unwrap();
        assert_eq!(files, [("boot/vmlinuz-6.1".to_owned(), b"kernel".to_vec())]);
        let mut links = Vec::new();
        deb.walk(|file| {
            if let DebFileKind::Symlink(target) = file.kind {
                links.push((file.path.to_owned(), target));
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(links, [("bin/sh".to_owned(), "busybox".to_owned())]);
    }

    #[test]
    fn refuses_non_packages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.deb");
        std::fs::write(&path, b"hello").unwrap();
        assert!(matches!(
            Deb::open(&path).unwrap().members(),
            Err(ReadDebError::Format { .. })
        ));
    }
}
