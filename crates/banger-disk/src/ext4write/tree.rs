//! What goes into the filesystem: directories, regular files (read from a
//! host file when written, or held in memory) and symlinks, with their
//! modes, owners and times. Built from host directories or by hand.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_model::host_files::Section;
use banger_rootfs::Resolve;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, SFlag};

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
#[derive(Debug, Clone)]
pub enum Source {
    /// A host file, read when the image is written; it must still be a
    /// regular file of the same length then.
    Path(PathBuf),
    /// A host file beneath a directory, reached without following any
    /// symlink (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`); also a
    /// regular file of the same length when written.
    Beneath {
        root: Arc<OwnedFd>,
        path: PathBuf,
    },
    Bytes(Vec<u8>),
}

impl PartialEq for Source {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Path(a), Self::Path(b)) => a == b,
            (Self::Bytes(a), Self::Bytes(b)) => a == b,
            (Self::Beneath { root: a, path: pa }, Self::Beneath { root: b, path: pb }) => {
                Arc::ptr_eq(a, b) && pa == pb
            }
            _ => false,
        }
    }
}

impl Eq for Source {}

impl Source {
    /// The path errors name.
    pub fn shown(&self) -> PathBuf {
        match self {
            Self::Path(path) | Self::Beneath { path, .. } => path.clone(),
            Self::Bytes(_) => PathBuf::from("<generated file>"),
        }
    }
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

/// What [`Tree::add_host_files`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostAdded {
    /// The nodes added for the listed paths (files and symlinks).
    pub nodes: Vec<NodeId>,
    /// Files and symlinks added.
    pub files: u64,
    /// Bytes of the files added.
    pub bytes: u64,
    /// Paths the tree already had.
    pub shadowed: u64,
    /// Paths gone, reached through a symlink, or not files or symlinks.
    pub left_out: u64,
}

/// An edit the tree cannot take.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditTreeError {
    #[error("{0} does not exist")]
    Missing(String),
    #[error("{0} is not a directory")]
    NotADirectory(String),
    #[error("{0} is a directory that is not empty")]
    NotEmpty(String),
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
            Source::Beneath { root, path } => {
                let file = banger_rootfs::resolve::open(
                    root.as_fd(),
                    path,
                    OFlag::O_PATH,
                    Resolve::beneath().no_symlinks(),
                )?;
                nix::sys::stat::fstat(&file)?.st_size as u64
            }
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

    /// Adds the files `section` names, from beneath its host root, into
    /// its directory of the tree (made if missing). Nothing on the host is
    /// followed: a path through a symlink, or gone since it was listed, is
    /// left out, as are device nodes, FIFOs and sockets. A path whose
    /// directory in the tree is not a directory, or that the tree already
    /// has, is left as the tree has it. Directories made on the way take
    /// their host directory's metadata.
    pub fn add_host_files(
        &mut self,
        section: &Section,
        owners: Owners,
    ) -> Result<HostAdded, WalkError> {
        let walk_error = |path: &Path, source: io::Error| WalkError {
            path: path.to_owned(),
            source,
        };
        let root: Arc<OwnedFd> = Arc::new(
            std::fs::File::open(&section.root)
                .map_err(|error| walk_error(&section.root, error))?
                .into(),
        );
        let mut added = HostAdded::default();
        let Some(into) = self.make_dirs(Self::ROOT, &section.into, |_| Some(Meta::root(0o755)))
        else {
            added.left_out = section.paths.len() as u64;
            return Ok(added);
        };
        // The host directory last used, and its node (paths come sorted,
        // so runs of files share it).
        let mut current: Option<(PathBuf, Option<(OwnedFd, NodeId)>)> = None;
        for path in &section.paths {
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                added.left_out += 1;
                continue;
            };
            if current.as_ref().is_none_or(|(dir, _)| dir != parent) {
                let opened = self.host_dir(&root, parent, into, owners);
                current = Some((parent.to_owned(), opened));
            }
            let Some((_, Some((dir_fd, node)))) = &current else {
                added.left_out += 1;
                continue;
            };
            let (dir_fd, node) = (dir_fd, *node);
            if self.lookup(node, name.as_bytes()).is_some() {
                added.shadowed += 1;
                continue;
            }
            let stat = match nix::sys::stat::fstatat(dir_fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(Errno::ENOENT | Errno::ENOTDIR) => {
                    added.left_out += 1;
                    continue;
                }
                Err(errno) => return Err(walk_error(path, errno.into())),
            };
            let meta = meta_of_stat(&stat, owners);
            match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
                SFlag::S_IFREG => {
                    self.add(
                        node,
                        name.as_bytes(),
                        meta,
                        Kind::File {
                            source: Source::Beneath {
                                root: Arc::clone(&root),
                                path: path.clone(),
                            },
                            len: stat.st_size as u64,
                        },
                    );
                    added.files += 1;
                    added.bytes += stat.st_size as u64;
                    added.nodes.push(self.nodes.len() - 1);
                }
                SFlag::S_IFLNK => {
                    let target = nix::fcntl::readlinkat(dir_fd, name)
                        .map_err(|errno| walk_error(path, errno.into()))?;
                    let link = self.add_symlink(node, name.as_bytes(), meta, target.as_bytes());
                    added.files += 1;
                    added.nodes.push(link);
                }
                _ => added.left_out += 1,
            }
        }
        Ok(added)
    }

    /// The host directory `rel` beneath `root` (opened without following
    /// symlinks) and its node under `into`, made as needed.
    fn host_dir(
        &mut self,
        root: &OwnedFd,
        rel: &Path,
        into: NodeId,
        owners: Owners,
    ) -> Option<(OwnedFd, NodeId)> {
        let open = |rel: &Path| {
            let rel = if rel.as_os_str().is_empty() {
                Path::new(".")
            } else {
                rel
            };
            banger_rootfs::resolve::open(
                root.as_fd(),
                rel,
                OFlag::O_PATH | OFlag::O_DIRECTORY,
                Resolve::beneath().no_symlinks(),
            )
            .ok()
        };
        let fd = open(rel)?;
        let node = self.make_dirs(into, rel, |prefix| {
            let dir = open(prefix)?;
            nix::sys::stat::fstat(&dir)
                .ok()
                .map(|stat| meta_of_stat(&stat, owners))
        })?;
        Some((fd, node))
    }

    /// The directory `rel` under `from`, its missing directories made with
    /// the metadata `meta_for(prefix)` gives (`None`: not made). `None`
    /// when something on the way is not a directory.
    fn make_dirs(
        &mut self,
        from: NodeId,
        rel: &Path,
        mut meta_for: impl FnMut(&Path) -> Option<Meta>,
    ) -> Option<NodeId> {
        let mut node = from;
        let mut prefix = PathBuf::new();
        for component in rel.components() {
            let std::path::Component::Normal(name) = component else {
                return None;
            };
            prefix.push(name);
            node = match self.lookup(node, name.as_bytes()) {
                Some(child) if matches!(self.nodes[child].kind, Kind::Dir(_)) => child,
                Some(_) => return None,
                None => {
                    let meta = meta_for(&prefix)?;
                    self.add_dir_node(node, name.as_bytes(), meta)
                }
            };
        }
        Some(node)
    }

    /// Applies `edits` as debugfs would to an image of this tree (see
    /// [`crate::edits::Ext4Edit`]); new files and directories are made now.
    pub fn apply_edits(&mut self, edits: &crate::edits::Ext4Edits) -> Result<(), EditTreeError> {
        use crate::edits::Ext4Edit;
        let now = Time::now();
        let meta_of = |meta: &crate::edits::Meta| Meta {
            perm: (meta.mode & 0o7777) as u16,
            uid: meta.uid,
            gid: meta.gid,
            mtime: now,
            atime: now,
        };
        for edit in edits.edits() {
            match edit {
                Ext4Edit::WriteFile {
                    path,
                    content,
                    meta,
                } => {
                    let (parent, name) = self.parent_of(path)?;
                    self.add(
                        parent,
                        name,
                        meta_of(meta),
                        Kind::File {
                            source: Source::Bytes(content.clone()),
                            len: content.len() as u64,
                        },
                    );
                }
                Ext4Edit::MkdirP { path, meta } => {
                    let mut node = Self::ROOT;
                    for part in path.split('/').filter(|part| !part.is_empty()) {
                        node = match self.lookup(node, part.as_bytes()) {
                            Some(child) if matches!(self.nodes[child].kind, Kind::Dir(_)) => child,
                            Some(_) => return Err(EditTreeError::NotADirectory(path.clone())),
                            None => self.add_dir_node(
                                node,
                                part.as_bytes(),
                                meta_of(&crate::edits::Meta::root(0o755)),
                            ),
                        };
                    }
                    let dir = &mut self.nodes[node].meta;
                    (dir.perm, dir.uid, dir.gid) =
                        ((meta.mode & 0o7777) as u16, meta.uid, meta.gid);
                }
                Ext4Edit::Chmod { path, mode } => {
                    let node = self.find(path)?;
                    self.nodes[node].meta.perm = (mode & 0o7777) as u16;
                }
                Ext4Edit::Chown { path, uid, gid } => {
                    let node = self.find(path)?;
                    let meta = &mut self.nodes[node].meta;
                    (meta.uid, meta.gid) = (*uid, *gid);
                }
                Ext4Edit::Symlink {
                    path,
                    target,
                    uid,
                    gid,
                } => {
                    let (parent, name) = self.parent_of(path)?;
                    let meta = Meta {
                        perm: 0o777,
                        uid: *uid,
                        gid: *gid,
                        mtime: now,
                        atime: now,
                    };
                    self.add_symlink(parent, name, meta, target.as_bytes());
                }
                Ext4Edit::Remove { path } => {
                    let Ok((parent, name)) = self.parent_of(path) else {
                        continue;
                    };
                    if let Some(node) = self.lookup(parent, name)
                        && matches!(&self.nodes[node].kind, Kind::Dir(entries) if !entries.is_empty())
                    {
                        return Err(EditTreeError::NotEmpty(path.clone()));
                    }
                    if let Kind::Dir(entries) = &mut self.nodes[parent].kind {
                        entries.retain(|(entry, _)| entry.as_slice() != name);
                    }
                }
            }
        }
        Ok(())
    }

    /// The node at the absolute guest `path`.
    fn find(&self, path: &str) -> Result<NodeId, EditTreeError> {
        self.lookup_path(Self::ROOT, path.as_bytes())
            .ok_or_else(|| EditTreeError::Missing(path.to_owned()))
    }

    /// The directory holding the absolute guest `path`, and its name.
    fn parent_of<'p>(&self, path: &'p str) -> Result<(NodeId, &'p [u8]), EditTreeError> {
        let trimmed = path.trim_end_matches('/');
        let (dir, name) = trimmed
            .rsplit_once('/')
            .filter(|(_, name)| !name.is_empty())
            .ok_or_else(|| EditTreeError::Missing(path.to_owned()))?;
        let parent = self.find(if dir.is_empty() { "/" } else { dir })?;
        match self.nodes[parent].kind {
            Kind::Dir(_) => Ok((parent, name.as_bytes())),
            _ => Err(EditTreeError::NotADirectory(dir.to_owned())),
        }
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

    /// The node at the slash-separated `path` below `from`.
    pub fn lookup_path(&self, from: NodeId, path: &[u8]) -> Option<NodeId> {
        path.split(|&byte| byte == b'/')
            .filter(|part| !part.is_empty())
            .try_fold(from, |node, part| self.lookup(node, part))
    }

    pub fn meta(&self, node: NodeId) -> Meta {
        self.nodes[node].meta
    }

    /// A regular file's length, or a symlink target's; `None` for a
    /// directory.
    pub fn len_of(&self, node: NodeId) -> Option<u64> {
        match &self.nodes[node].kind {
            Kind::File { len, .. } => Some(*len),
            Kind::Symlink(target) => Some(target.len() as u64),
            Kind::Dir(_) => None,
        }
    }

    /// A regular file's bytes as they are now (read from the host when
    /// they come from there).
    pub fn read_file(&self, node: NodeId) -> io::Result<Vec<u8>> {
        match &self.nodes[node].kind {
            Kind::File {
                source: Source::Bytes(bytes),
                ..
            } => Ok(bytes.clone()),
            Kind::File {
                source: Source::Path(path),
                ..
            } => std::fs::read(path),
            Kind::File {
                source: Source::Beneath { root, path },
                ..
            } => {
                let fd = banger_rootfs::resolve::open(
                    root.as_fd(),
                    path,
                    OFlag::O_RDONLY,
                    Resolve::beneath().no_symlinks(),
                )?;
                let mut bytes = Vec::new();
                io::Read::read_to_end(&mut std::fs::File::from(fd), &mut bytes)?;
                Ok(bytes)
            }
            _ => Err(io::Error::other(format!(
                "node {node} is not a regular file"
            ))),
        }
    }

    /// Gives a regular file these bytes instead, of the same length (a
    /// planned image keeps its layout).
    pub fn set_file_bytes(&mut self, node: NodeId, bytes: Vec<u8>) -> io::Result<()> {
        match &mut self.nodes[node].kind {
            Kind::File { source, len } if *len == bytes.len() as u64 => {
                *source = Source::Bytes(bytes);
                Ok(())
            }
            _ => Err(io::Error::other(format!(
                "node {node} is not a regular file of {} bytes",
                bytes.len()
            ))),
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

fn meta_of_stat(stat: &FileStat, owners: Owners) -> Meta {
    let (uid, gid) = owners.map(stat.st_uid, stat.st_gid);
    Meta {
        perm: (stat.st_mode & 0o7777) as u16,
        uid,
        gid,
        mtime: Time {
            secs: stat.st_mtime,
            nanos: stat.st_mtime_nsec as u32,
        },
        atime: Time {
            secs: stat.st_atime,
            nanos: stat.st_atime_nsec as u32,
        },
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
