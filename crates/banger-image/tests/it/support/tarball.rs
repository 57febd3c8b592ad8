//! Building layer tarballs byte by byte, including hostile ones that the
//! `tar` crate's own builder would refuse to write (absolute names, `..`).

use std::io::Write;

use tar::{EntryType, Header};

#[derive(Default)]
pub(crate) struct Tarball {
    bytes: Vec<u8>,
}

pub(crate) struct Entry<'a> {
    pub(crate) kind: EntryType,
    pub(crate) name: &'a [u8],
    pub(crate) link: Option<&'a [u8]>,
    pub(crate) data: &'a [u8],
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) mtime: u64,
    pub(crate) device: Option<(u32, u32)>,
    pub(crate) xattrs: &'a [(&'a str, &'a [u8])],
}

impl Default for Entry<'_> {
    fn default() -> Self {
        Self {
            kind: EntryType::Regular,
            name: b"",
            link: None,
            data: b"",
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            device: None,
            xattrs: &[],
        }
    }
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "LEN key=value\n" where LEN counts itself.
    let body_len = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body_len + 1;
    while len.to_string().len() + body_len != len {
        len = len.to_string().len() + body_len;
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

impl Tarball {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn header(kind: EntryType, name: &[u8], size: u64) -> Header {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(0o644);
        let old = header.as_old_mut();
        let len = name.len().min(old.name.len());
        old.name[..len].copy_from_slice(&name[..len]);
        header
    }

    fn push(&mut self, header: &mut Header, data: &[u8]) {
        header.set_cksum();
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
    }

    /// Any entry, names written raw (GNU long-name records for long ones).
    pub(crate) fn entry(&mut self, entry: Entry<'_>) -> &mut Self {
        if entry.name.len() > 100 {
            let mut data = entry.name.to_vec();
            data.push(0);
            let mut long =
                Self::header(EntryType::GNULongName, b"././@LongLink", data.len() as u64);
            self.push(&mut long, &data);
        }
        if let Some(link) = entry.link
            && link.len() > 100
        {
            let mut data = link.to_vec();
            data.push(0);
            let mut long =
                Self::header(EntryType::GNULongLink, b"././@LongLink", data.len() as u64);
            self.push(&mut long, &data);
        }
        if !entry.xattrs.is_empty() {
            let mut records = Vec::new();
            for (name, value) in entry.xattrs {
                records.extend(pax_record(&format!("SCHILY.xattr.{name}"), value));
            }
            let mut pax = Self::header(EntryType::XHeader, b"PaxHeaders/x", records.len() as u64);
            self.push(&mut pax, &records);
        }
        let mut header = Self::header(entry.kind, entry.name, entry.data.len() as u64);
        header.set_mode(entry.mode);
        header.set_uid(entry.uid);
        header.set_gid(entry.gid);
        header.set_mtime(entry.mtime);
        if let Some(link) = entry.link {
            let old = header.as_old_mut();
            let len = link.len().min(old.linkname.len());
            old.linkname[..len].copy_from_slice(&link[..len]);
        }
        if let Some((major, minor)) = entry.device {
            header.set_device_major(major).unwrap();
            header.set_device_minor(minor).unwrap();
        }
        self.push(&mut header, entry.data);
        self
    }

    pub(crate) fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(Entry {
            kind: EntryType::Directory,
            name: name.as_bytes(),
            mode: 0o755,
            ..Entry::default()
        })
    }

    pub(crate) fn dir_with(
        &mut self,
        name: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) -> &mut Self {
        self.entry(Entry {
            kind: EntryType::Directory,
            name: name.as_bytes(),
            mode,
            uid,
            gid,
            mtime,
            ..Entry::default()
        })
    }

    pub(crate) fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(Entry {
            name: name.as_bytes(),
            data,
            ..Entry::default()
        })
    }

    pub(crate) fn file_with(
        &mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) -> &mut Self {
        self.entry(Entry {
            name: name.as_bytes(),
            data,
            mode,
            uid,
            gid,
            mtime,
            ..Entry::default()
        })
    }

    pub(crate) fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(Entry {
            kind: EntryType::Symlink,
            name: name.as_bytes(),
            link: Some(target.as_bytes()),
            mode: 0o777,
            ..Entry::default()
        })
    }

    pub(crate) fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(Entry {
            kind: EntryType::Link,
            name: name.as_bytes(),
            link: Some(target.as_bytes()),
            ..Entry::default()
        })
    }

    pub(crate) fn whiteout(&mut self, path: &str) -> &mut Self {
        let (dir, name) = match path.rsplit_once('/') {
            Some((dir, name)) => (format!("{dir}/"), name),
            None => (String::new(), path),
        };
        self.file(&format!("{dir}.wh.{name}"), b"")
    }

    pub(crate) fn opaque(&mut self, dir: &str) -> &mut Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"")
    }

    pub(crate) fn device(
        &mut self,
        name: &str,
        kind: EntryType,
        major: u32,
        minor: u32,
    ) -> &mut Self {
        self.entry(Entry {
            kind,
            name: name.as_bytes(),
            mode: 0o600,
            device: Some((major, minor)),
            ..Entry::default()
        })
    }

    /// The archive with its end-of-archive marker.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut out = self.bytes.clone();
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

pub(crate) fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}
