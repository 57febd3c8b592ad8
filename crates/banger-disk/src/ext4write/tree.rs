//! What goes into the filesystem: directories, regular files (read from a
//! host file when written, or held in memory) and symlinks, with their
//! modes, owners and times. Built from host directories or by hand.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A node's index in [`Tree`]; the root is [`Tree::ROOT`].
pub type NodeId = usize;

/// Seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

impl Time {
    pub fn now() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            secs: now.as_secs() as i64,
            nanos: now.subsec_nanos(),
        }
    }
}

/// Permissions (with the set-id and sticky bits), owner and times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Time,
    pub atime: Time,
}

impl Meta {
    /// Root's, with `perm`, made now.
    pub fn root(perm: u16) -> Self {
        let now = Time::now();
        Self {
            perm,
            uid: 0,
            gid: 0,
            mtime: now,
            atime: now,
        }
    }
}

/// Where a regular file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A host file, read when the image is written; it must still be a
    /// regular file of the same length then.
    Path(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    /// Entries by name, sorted.
    Dir(Vec<(Vec<u8>, NodeId)>),
    File {
        source: Source,
        len: u64,
    },
    Symlink(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Node {
    pub(super) meta: Meta,
    pub(super) kind: Kind,
}

/// How host owners map into the image: files of `own` (the uid and gid
/// the walk runs as) become root's, as in a user namespace of its own;
/// all other owners stay as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owners {
    pub own_uid: u32,
    pub own_gid: u32,
}

impl Owners {
    /// The calling process's effective ids.
    pub fn of_process() -> Self {
        Self {
            own_uid: nix::unistd::geteuid().as_raw(),
            own_gid: nix::unistd::getegid().as_raw(),
        }
    }

    fn map(&self, uid: u32, gid: u32) -> (u32, u32) {
        (
            if uid == self.own_uid { 0 } else { uid },
            if gid == self.own_gid { 0 } else { gid },
        )
    }
}

/// What [`Tree::add_dir`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Added {
    /// Device nodes, FIFOs and sockets, which are left out.
    pub special: u64,
    /// Top-level names the tree already had, which are kept.
    pub shadowed: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}")]
pub struct WalkError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// A directory tree to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    pub(super) nodes: Vec<Node>,
}

impl Tree {
    pub const ROOT: NodeId = 0;

    /// An empty root directory.
    pub fn new(root: Meta) -> Self {
        Self {
            nodes: vec![Node {
                meta: root,
                kind: Kind::Dir(Vec::new()),
            }],
        }
    }

    /// Adds an empty directory `name` under `parent`.
    pub fn add_dir_node(&mut self, parent: NodeId, name: &[u8], meta: Meta) -> NodeId {
        self.add(parent, name, meta, Kind::Dir(Vec::new()))
    }

    /// Adds a regular file `name` under `parent`.
    pub fn add_file(
        &mut self,
        parent: NodeId,
        name: &[u8],
        meta: Meta,
        source: Source,
    ) -> io::Result<NodeId> {
        let len = match &source {
            Source::Bytes(bytes) => bytes.len() as u64,
            Source::Path(path) => std::fs::symlink_metadata(path)?.len(),
        };
        Ok(self.add(parent, name, meta, Kind::File { source, len }))
    }

    /// Adds a symlink `name` under `parent`.
    pub fn add_symlink(
        &mut self,
        parent: NodeId,
        name: &[u8],
        meta: Meta,
        target: &[u8],
    ) -> NodeId {
        self.add(parent, name, meta, Kind::Symlink(target.to_vec()))
    }

    /// Adds what the host directory `dir` holds to the root (names the
    /// root already has are kept), with owners mapped by `owners`. Symlinks
    /// are not followed; hard links stay hard links; device nodes, FIFOs
    /// and sockets are left out (a guest's `/dev` is a devtmpfs).
    pub fn add_dir(&mut self, dir: &Path, owners: Owners) -> Result<Added, WalkError> {
        let walk_error = |path: &Path| {
            let path = path.to_owned();
            move |source: io::Error| WalkError { path, source }
        };
        let mut added = Added::default();
        let mut links: HashMap<(u64, u64), NodeId> = HashMap::new();
        let mut stack: Vec<(PathBuf, NodeId)> = vec![(dir.to_owned(), Self::ROOT)];
        while let Some((host_dir, node)) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&host_dir)
                .map_err(walk_error(&host_dir))?
                .collect::<Result<_, _>>()
                .map_err(walk_error(&host_dir))?;
            entries.sort_by_key(|entry| entry.file_name());
            for entry in entries {
                let name = entry.file_name();
                let path = entry.path();
                if node == Self::ROOT && self.lookup(Self::ROOT, name.as_bytes()).is_some() {
                    added.shadowed += 1;
                    continue;
                }
                let host = std::fs::symlink_metadata(&path).map_err(walk_error(&path))?;
                let meta = meta_of(&host, owners);
                let kind = host.file_type();
                if host.nlink() > 1
                    && !kind.is_dir()
                    && let Some(&existing) = links.get(&(host.dev(), host.ino()))
                {
                    self.link(node, name.as_bytes(), existing);
                    continue;
                }
                let child = if kind.is_dir() {
                    let child = self.add_dir_node(node, name.as_bytes(), meta);
                    stack.push((path, child));
                    child
                } else if kind.is_file() {
                    self.add(
                        node,
                        name.as_bytes(),
                        meta,
                        Kind::File {
                            source: Source::Path(path),
                            len: host.len(),
                        },
                    )
                } else if kind.is_symlink() {
                    let target = std::fs::read_link(&path).map_err(walk_error(&path))?;
                    self.add_symlink(node, name.as_bytes(), meta, target.as_os_str().as_bytes())
                } else {
                    debug_assert!(
                        kind.is_char_device()
                            || kind.is_block_device()
                            || kind.is_fifo()
                            || kind.is_socket()
                    );
                    added.special += 1;
                    continue;
                };
                if host.nlink() > 1 && !kind.is_dir() {
                    links.insert((host.dev(), host.ino()), child);
                }
            }
        }
        Ok(added)
    }

    /// The entry `name` of the directory `dir`.
    pub fn lookup(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        match &self.nodes[dir].kind {
            Kind::Dir(entries) => entries
                .binary_search_by(|(entry, _)| entry.as_slice().cmp(name))
                .ok()
                .map(|index| entries[index].1),
            _ => None,
        }
    }

    /// Sets the root directory's metadata.
    pub fn set_root_meta(&mut self, meta: Meta) {
        self.nodes[Self::ROOT].meta = meta;
    }

    pub fn root_meta(&self) -> Meta {
        self.nodes[Self::ROOT].meta
    }

    /// Bytes of all regular files (a hard-linked file counts once).
    pub fn file_bytes(&self) -> u64 {
        self.nodes
            .iter()
            .map(|node| match node.kind {
                Kind::File { len, .. } => len,
                _ => 0,
            })
            .sum()
    }

    /// Nodes in the tree (a hard-linked file counts once).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    fn add(&mut self, parent: NodeId, name: &[u8], meta: Meta, kind: Kind) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(Node { meta, kind });
        self.link(parent, name, id);
        id
    }

    /// Enters `child` under `name` in `parent`, replacing an entry of that
    /// name.
    fn link(&mut self, parent: NodeId, name: &[u8], child: NodeId) {
        let Kind::Dir(entries) = &mut self.nodes[parent].kind else {
            panic!("node {parent} is not a directory");
        };
        match entries.binary_search_by(|(entry, _)| entry.as_slice().cmp(name)) {
            Ok(index) => entries[index].1 = child,
            Err(index) => entries.insert(index, (name.to_vec(), child)),
        }
    }
}

fn meta_of(host: &std::fs::Metadata, owners: Owners) -> Meta {
    let (uid, gid) = owners.map(host.uid(), host.gid());
    Meta {
        perm: (host.mode() & 0o7777) as u16,
        uid,
        gid,
        mtime: Time {
            secs: host.mtime(),
            nanos: host.mtime_nsec() as u32,
        },
        atime: Time {
            secs: host.atime(),
            nanos: host.atime_nsec() as u32,
        },
    }
}

/// A name as the error messages show it.
pub(super) fn shown(name: &[u8]) -> std::borrow::Cow<'_, str> {
    OsStr::from_bytes(name).to_string_lossy()
}
