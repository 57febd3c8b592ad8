//! Editing an ext4 image without mounting it, through `debugfs`.
//!
//! [`Ext4Edits`] collects edits (write a file, `mkdir -p`, chmod, chown,
//! symlink, remove); [`apply_edits`] applies them all in one `debugfs -w -f`
//! run. Before that, one read-only run looks up the paths the edits touch
//! (`inode_dump`, fixed-format hex that no file name or symlink target can
//! spoof), so the script is planned exactly: it only creates what is
//! missing, removes a file before replacing it, and keeps the file type
//! bits when changing a mode. Every command of the script is then expected
//! to succeed silently; any other output is an error naming the command.
//!
//! debugfs's command language splits on whitespace and takes `"…"` as one
//! word with `""` standing for a literal quote; backslashes are literal.
//! Paths and symlink targets are quoted that way. Newlines cannot be
//! quoted and are refused, as are `.`/`..` components and relative paths.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use fs_err as fs;

use crate::exec::{self, ExecError, Tool};

/// debugfs reads command files in lines of at most BUFSIZ (8192) bytes.
const MAX_LINE: usize = 8000;
const MAX_PATH: usize = 4095;
const MAX_NAME: usize = 255;
const MAX_SYMLINK: usize = 4095;

/// Permissions and ownership of something written into an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Meta {
    pub const fn new(mode: u32, uid: u32, gid: u32) -> Self {
        Self { mode, uid, gid }
    }

    /// Owned by root.
    pub const fn root(mode: u32) -> Self {
        Self::new(mode, 0, 0)
    }
}

/// What kind of inode a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl FileKind {
    fn from_mode(mode: u32) -> Option<Self> {
        Some(match mode & 0o170000 {
            0o100000 => Self::Regular,
            0o040000 => Self::Directory,
            0o120000 => Self::Symlink,
            0o020000 => Self::CharDevice,
            0o060000 => Self::BlockDevice,
            0o010000 => Self::Fifo,
            0o140000 => Self::Socket,
            _ => return None,
        })
    }

    fn type_bits(self) -> u32 {
        match self {
            Self::Regular => 0o100000,
            Self::Directory => 0o040000,
            Self::Symlink => 0o120000,
            Self::CharDevice => 0o020000,
            Self::BlockDevice => 0o060000,
            Self::Fifo => 0o010000,
            Self::Socket => 0o140000,
        }
    }
}

/// One edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ext4Edit {
    /// Create or replace a regular file; its parent must exist.
    WriteFile {
        path: String,
        content: Vec<u8>,
        meta: Meta,
    },
    /// Create the directory and missing parents (parents get 0755
    /// root:root); set the mode and owner of the directory itself, whether
    /// it was created or already there.
    MkdirP { path: String, meta: Meta },
    /// Change permission bits of an existing path (type bits kept).
    Chmod { path: String, mode: u32 },
    /// Change the owner of an existing path (a symlink itself, not its target).
    Chown { path: String, uid: u32, gid: u32 },
    /// Create or replace a symlink at `path` pointing to `target`.
    Symlink {
        path: String,
        target: String,
        uid: u32,
        gid: u32,
    },
    /// Remove a file, symlink or empty directory; a missing path is fine.
    Remove { path: String },
}

/// A batch of edits, applied in order by [`apply_edits`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ext4Edits {
    edits: Vec<Ext4Edit>,
}

/// A path or symlink target that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestPathError {
    #[error("guest path {0:?} is not absolute")]
    Relative(String),
    #[error("guest path {0:?} contains a newline, carriage return or NUL")]
    ControlCharacter(String),
    #[error("guest path {0:?} contains a . or .. component")]
    DotComponent(String),
    #[error("guest path {0:?} is too long")]
    TooLong(String),
    #[error("guest path {0:?} names the root directory, which cannot be replaced or removed")]
    Root(String),
    #[error(
        "symlink target {0:?} is empty, too long or contains a newline, carriage return or NUL"
    )]
    BadTarget(String),
    #[error("mode {mode:#o} of {path:?} has bits outside 0o7777")]
    BadMode { path: String, mode: u32 },
}

fn has_control(text: &str) -> bool {
    text.contains(['\n', '\r', '\0'])
}

/// Validates and normalises an absolute guest path (`//` collapsed, no
/// trailing slash).
fn guest_path(raw: &str) -> Result<String, GuestPathError> {
    if !raw.starts_with('/') {
        return Err(GuestPathError::Relative(raw.to_owned()));
    }
    if has_control(raw) {
        return Err(GuestPathError::ControlCharacter(raw.to_owned()));
    }
    let mut normal = String::with_capacity(raw.len());
    for component in raw.split('/').filter(|c| !c.is_empty()) {
        if component == "." || component == ".." {
            return Err(GuestPathError::DotComponent(raw.to_owned()));
        }
        if component.len() > MAX_NAME {
            return Err(GuestPathError::TooLong(raw.to_owned()));
        }
        normal.push('/');
        normal.push_str(component);
    }
    if normal.is_empty() {
        normal.push('/');
    }
    if normal.len() > MAX_PATH {
        return Err(GuestPathError::TooLong(raw.to_owned()));
    }
    Ok(normal)
}

fn not_root(path: String) -> Result<String, GuestPathError> {
    if path == "/" {
        Err(GuestPathError::Root(path))
    } else {
        Ok(path)
    }
}

fn check_mode(path: &str, mode: u32) -> Result<(), GuestPathError> {
    if mode & !0o7777 != 0 {
        return Err(GuestPathError::BadMode {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

impl Ext4Edits {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    pub fn len(&self) -> usize {
        self.edits.len()
    }

    /// The edits, in order.
    pub fn edits(&self) -> &[Ext4Edit] {
        &self.edits
    }

    pub fn write_file(
        &mut self,
        path: &str,
        content: impl Into<Vec<u8>>,
        meta: Meta,
    ) -> Result<&mut Self, GuestPathError> {
        let path = not_root(guest_path(path)?)?;
        check_mode(&path, meta.mode)?;
        self.edits.push(Ext4Edit::WriteFile {
            path,
            content: content.into(),
            meta,
        });
        Ok(self)
    }

    pub fn mkdir_p(&mut self, path: &str, meta: Meta) -> Result<&mut Self, GuestPathError> {
        let path = guest_path(path)?;
        check_mode(&path, meta.mode)?;
        self.edits.push(Ext4Edit::MkdirP { path, meta });
        Ok(self)
    }

    pub fn chmod(&mut self, path: &str, mode: u32) -> Result<&mut Self, GuestPathError> {
        let path = guest_path(path)?;
        check_mode(&path, mode)?;
        self.edits.push(Ext4Edit::Chmod { path, mode });
        Ok(self)
    }

    pub fn chown(&mut self, path: &str, uid: u32, gid: u32) -> Result<&mut Self, GuestPathError> {
        let path = guest_path(path)?;
        self.edits.push(Ext4Edit::Chown { path, uid, gid });
        Ok(self)
    }

    pub fn symlink(
        &mut self,
        path: &str,
        target: &str,
        uid: u32,
        gid: u32,
    ) -> Result<&mut Self, GuestPathError> {
        let path = not_root(guest_path(path)?)?;
        if target.is_empty() || target.len() > MAX_SYMLINK || has_control(target) {
            return Err(GuestPathError::BadTarget(target.to_owned()));
        }
        self.edits.push(Ext4Edit::Symlink {
            path,
            target: target.to_owned(),
            uid,
            gid,
        });
        Ok(self)
    }

    pub fn remove(&mut self, path: &str) -> Result<&mut Self, GuestPathError> {
        let path = not_root(guest_path(path)?)?;
        self.edits.push(Ext4Edit::Remove { path });
        Ok(self)
    }

    /// Appends another batch.
    pub fn extend(&mut self, other: Ext4Edits) -> &mut Self {
        self.edits.extend(other.edits);
        self
    }
}

/// Quotes one word for debugfs.
pub(crate) fn quote(word: &str) -> String {
    format!("\"{}\"", word.replace('"', "\"\""))
}

fn parent_and_name(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((parent, name)) => (parent, name),
        None => ("/", path),
    }
}

/// Every proper prefix and the path itself: `/a/b` → `/a`, `/a/b`.
fn prefixes(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for component in path.split('/').filter(|c| !c.is_empty()) {
        current.push('/');
        current.push_str(component);
        out.push(current.clone());
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyEditsError {
    #[error("cannot stage file contents for debugfs")]
    Stage(#[source] io::Error),
    #[error("debugfs could not open {image}: {output}")]
    Open { image: PathBuf, output: String },
    #[error("in {image}: {path} is not a directory")]
    NotADirectory { image: PathBuf, path: String },
    #[error("in {image}: {path} is a directory")]
    IsADirectory { image: PathBuf, path: String },
    #[error("in {image}: {path} does not exist")]
    NotFound { image: PathBuf, path: String },
    #[error("in {image}: an edit of {path} makes a debugfs command longer than it accepts")]
    LineTooLong { image: PathBuf, path: String },
    #[error("debugfs on {image} failed at `{command}`: {output}")]
    Command {
        image: PathBuf,
        command: String,
        output: String,
    },
    #[error(
        "debugfs on {image} stopped after {done} of {total} commands (exit {status}): {output}"
    )]
    Incomplete {
        image: PathBuf,
        done: usize,
        total: usize,
        status: String,
        output: String,
    },
    #[error("debugfs on {image}")]
    Exec {
        image: PathBuf,
        #[source]
        source: ExecError,
    },
}

/// What the output of one planned command may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Silent,
    /// `write` reports the inode it allocated.
    AllocatedInode,
}

#[derive(Debug)]
struct Script {
    commands: Vec<(String, Expect)>,
}

impl Script {
    fn push(
        &mut self,
        image: &Path,
        path: &str,
        command: String,
        expect: Expect,
    ) -> Result<(), ApplyEditsError> {
        if command.len() > MAX_LINE {
            return Err(ApplyEditsError::LineTooLong {
                image: image.to_owned(),
                path: path.to_owned(),
            });
        }
        self.commands.push((command, expect));
        Ok(())
    }

    fn set_meta(
        &mut self,
        image: &Path,
        path: &str,
        mode: Option<u32>,
        uid: u32,
        gid: u32,
    ) -> Result<(), ApplyEditsError> {
        let quoted = quote(path);
        if let Some(mode) = mode {
            self.push(
                image,
                path,
                format!("sif {quoted} mode 0{mode:o}"),
                Expect::Silent,
            )?;
        }
        self.push(
            image,
            path,
            format!("sif {quoted} uid {uid}"),
            Expect::Silent,
        )?;
        self.push(
            image,
            path,
            format!("sif {quoted} gid {gid}"),
            Expect::Silent,
        )
    }
}

/// Applies `edits` to the ext4 filesystem in `image` (file or block
/// device, not mounted), all in one debugfs run.
#[tracing::instrument(level = "debug", skip_all, fields(image = %image.display(), edits = edits.len()))]
pub fn apply_edits(image: &Path, edits: &Ext4Edits) -> Result<(), ApplyEditsError> {
    if edits.is_empty() {
        return Ok(());
    }
    // The state of every path the plan consults, as it is now.
    let mut queried = BTreeSet::new();
    for edit in &edits.edits {
        match edit {
            Ext4Edit::MkdirP { path, .. } => {
                queried.extend(prefixes(path));
                queried.insert(path.clone());
            }
            Ext4Edit::WriteFile { path, .. }
            | Ext4Edit::Symlink { path, .. }
            | Ext4Edit::Chmod { path, .. }
            | Ext4Edit::Chown { path, .. }
            | Ext4Edit::Remove { path } => {
                queried.insert(path.clone());
            }
        }
    }
    let queried: Vec<String> = queried.into_iter().collect();
    let found = lookup(image, &queried)?;
    let mut state: HashMap<String, Option<FileKind>> = queried
        .iter()
        .cloned()
        .zip(found.into_iter().map(|stat| stat.map(|stat| stat.kind)))
        .collect();
    state.insert("/".to_owned(), Some(FileKind::Directory));

    let staging = tempfile::Builder::new()
        .prefix("banger-debugfs-")
        .tempdir()
        .map_err(ApplyEditsError::Stage)?;
    let mut script = Script {
        commands: Vec::new(),
    };
    let kind =
        |state: &HashMap<String, Option<FileKind>>, path: &str| state.get(path).copied().flatten();

    for (index, edit) in edits.edits.iter().enumerate() {
        match edit {
            Ext4Edit::MkdirP { path, meta } => {
                for prefix in prefixes(path) {
                    match kind(&state, &prefix) {
                        Some(FileKind::Directory) => {}
                        Some(_) => {
                            return Err(ApplyEditsError::NotADirectory {
                                image: image.to_owned(),
                                path: prefix,
                            });
                        }
                        None => {
                            script.push(
                                image,
                                &prefix,
                                format!("mkdir {}", quote(&prefix)),
                                Expect::Silent,
                            )?;
                            state.insert(prefix, Some(FileKind::Directory));
                        }
                    }
                }
                script.set_meta(
                    image,
                    path,
                    Some(FileKind::Directory.type_bits() | meta.mode),
                    meta.uid,
                    meta.gid,
                )?;
            }
            Ext4Edit::WriteFile {
                path,
                content,
                meta,
            } => {
                match kind(&state, path) {
                    Some(FileKind::Directory) => {
                        return Err(ApplyEditsError::IsADirectory {
                            image: image.to_owned(),
                            path: path.clone(),
                        });
                    }
                    Some(_) => {
                        script.push(image, path, format!("rm {}", quote(path)), Expect::Silent)?
                    }
                    None => {}
                }
                let source = staging.path().join(format!("content-{index}"));
                fs::write(&source, content).map_err(ApplyEditsError::Stage)?;
                let source = source.to_str().ok_or_else(|| {
                    ApplyEditsError::Stage(io::Error::other(
                        "temporary directory path is not UTF-8",
                    ))
                })?;
                let (parent, name) = parent_and_name(path);
                script.push(image, path, format!("cd {}", quote(parent)), Expect::Silent)?;
                script.push(
                    image,
                    path,
                    format!("write {} {}", quote(source), quote(name)),
                    Expect::AllocatedInode,
                )?;
                // Back to the root: debugfs resolves the parent of a
                // top-level path such as `/var` (the empty string) against
                // the current directory, so later mkdir/symlink need `/`.
                script.push(image, path, "cd \"/\"".to_owned(), Expect::Silent)?;
                script.set_meta(
                    image,
                    path,
                    Some(FileKind::Regular.type_bits() | meta.mode),
                    meta.uid,
                    meta.gid,
                )?;
                state.insert(path.clone(), Some(FileKind::Regular));
            }
            Ext4Edit::Symlink {
                path,
                target,
                uid,
                gid,
            } => {
                match kind(&state, path) {
                    Some(FileKind::Directory) => {
                        return Err(ApplyEditsError::IsADirectory {
                            image: image.to_owned(),
                            path: path.clone(),
                        });
                    }
                    Some(_) => {
                        script.push(image, path, format!("rm {}", quote(path)), Expect::Silent)?
                    }
                    None => {}
                }
                script.push(
                    image,
                    path,
                    format!("symlink {} {}", quote(path), quote(target)),
                    Expect::Silent,
                )?;
                script.set_meta(image, path, None, *uid, *gid)?;
                state.insert(path.clone(), Some(FileKind::Symlink));
            }
            Ext4Edit::Chmod { path, mode } => {
                let Some(current) = kind(&state, path) else {
                    return Err(ApplyEditsError::NotFound {
                        image: image.to_owned(),
                        path: path.clone(),
                    });
                };
                let quoted = quote(path);
                script.push(
                    image,
                    path,
                    format!("sif {quoted} mode 0{:o}", current.type_bits() | mode),
                    Expect::Silent,
                )?;
            }
            Ext4Edit::Chown { path, uid, gid } => {
                if kind(&state, path).is_none() {
                    return Err(ApplyEditsError::NotFound {
                        image: image.to_owned(),
                        path: path.clone(),
                    });
                }
                script.set_meta(image, path, None, *uid, *gid)?;
            }
            Ext4Edit::Remove { path } => match kind(&state, path) {
                None => {}
                Some(FileKind::Directory) => {
                    script.push(
                        image,
                        path,
                        format!("rmdir {}", quote(path)),
                        Expect::Silent,
                    )?;
                    state.insert(path.clone(), None);
                }
                Some(_) => {
                    script.push(image, path, format!("rm {}", quote(path)), Expect::Silent)?;
                    state.insert(path.clone(), None);
                }
            },
        }
    }

    if script.commands.is_empty() {
        return Ok(());
    }
    let commands: Vec<String> = script
        .commands
        .iter()
        .map(|(command, _)| command.clone())
        .collect();
    let (status, output) = run_script(image, staging.path(), &commands, true)?;
    let sections = split_sections(image, &output, &commands, status)?;
    for ((command, expect), lines) in script.commands.iter().zip(&sections) {
        let unexpected: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|line| !line.trim().is_empty())
            .filter(|line| !(*expect == Expect::AllocatedInode && is_allocated_inode(line)))
            .collect();
        if !unexpected.is_empty() {
            return Err(ApplyEditsError::Command {
                image: image.to_owned(),
                command: command.clone(),
                output: unexpected.join("\n"),
            });
        }
    }
    if !status.success() {
        return Err(ApplyEditsError::Incomplete {
            image: image.to_owned(),
            done: commands.len(),
            total: commands.len(),
            status: status.to_string(),
            output,
        });
    }
    tracing::debug!(commands = commands.len(), "applied ext4 edits");
    Ok(())
}

fn is_allocated_inode(line: &str) -> bool {
    line.strip_prefix("Allocated inode: ")
        .is_some_and(|rest| !rest.is_empty() && rest.trim().bytes().all(|b| b.is_ascii_digit()))
}

/// Writes `commands` to a script file and runs debugfs on it.
fn run_script(
    image: &Path,
    staging: &Path,
    commands: &[String],
    writable: bool,
) -> Result<(std::process::ExitStatus, String), ApplyEditsError> {
    let script_path = staging.join(if writable {
        "edits.debugfs"
    } else {
        "lookup.debugfs"
    });
    let mut text = commands.join("\n");
    text.push('\n');
    fs::write(&script_path, text).map_err(ApplyEditsError::Stage)?;
    let mut args: Vec<OsString> = Vec::new();
    if writable {
        args.push("-w".into());
    }
    args.push("-f".into());
    args.push(script_path.into_os_string());
    args.push(image.as_os_str().to_owned());
    exec::run_combined(Tool::Debugfs, &args).map_err(|source| ApplyEditsError::Exec {
        image: image.to_owned(),
        source,
    })
}

/// Splits debugfs output into the lines each command produced, using the
/// `debugfs: <command>` echo that precedes each one.
fn split_sections<'a>(
    image: &Path,
    output: &'a str,
    commands: &[String],
    status: std::process::ExitStatus,
) -> Result<Vec<Vec<&'a str>>, ApplyEditsError> {
    let mut sections: Vec<Vec<&str>> = Vec::with_capacity(commands.len());
    let mut preamble = Vec::new();
    for line in output.lines() {
        let next = sections.len();
        if next < commands.len()
            && line
                .strip_prefix("debugfs: ")
                .is_some_and(|echo| echo == commands[next])
        {
            sections.push(Vec::new());
            continue;
        }
        match sections.last_mut() {
            Some(section) => section.push(line),
            None => preamble.push(line),
        }
    }
    // Before the first command only the version banner is expected.
    let complaints: Vec<&str> = preamble
        .iter()
        .copied()
        .filter(|line| !line.trim().is_empty() && !is_banner(line))
        .collect();
    if !complaints.is_empty()
        || sections
            .iter()
            .flatten()
            .any(|line| line.contains("Filesystem not open"))
    {
        return Err(ApplyEditsError::Open {
            image: image.to_owned(),
            output: if complaints.is_empty() {
                output.trim().to_owned()
            } else {
                complaints.join("\n")
            },
        });
    }
    if sections.len() < commands.len() {
        return Err(ApplyEditsError::Incomplete {
            image: image.to_owned(),
            done: sections.len(),
            total: commands.len(),
            status: status.to_string(),
            output: output.trim().to_owned(),
        });
    }
    Ok(sections)
}

fn is_banner(line: &str) -> bool {
    line.starts_with("debugfs ") && line.contains('(')
}

/// What [`stat`] reports about a path in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4Stat {
    pub kind: FileKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadExt4Error {
    #[error(transparent)]
    Path(#[from] GuestPathError),
    #[error("in {image}: {path} does not exist")]
    NotFound { image: PathBuf, path: String },
    #[error("in {image}: {path} is not a regular file")]
    NotAFile { image: PathBuf, path: String },
    #[error("reading {path} from {image}")]
    Debugfs {
        image: PathBuf,
        path: String,
        #[source]
        source: Box<ApplyEditsError>,
    },
    #[error("reading {path} from {image}: debugfs wrote no output file")]
    Dump {
        image: PathBuf,
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Looks up `paths` in one read-only debugfs run: `None` for a path that
/// does not exist (or cannot be reached).
fn lookup(image: &Path, paths: &[String]) -> Result<Vec<Option<Ext4Stat>>, ApplyEditsError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let staging = tempfile::Builder::new()
        .prefix("banger-debugfs-")
        .tempdir()
        .map_err(ApplyEditsError::Stage)?;
    let commands: Vec<String> = paths
        .iter()
        .map(|path| format!("inode_dump {}", quote(path)))
        .collect();
    let (status, output) = run_script(image, staging.path(), &commands, false)?;
    let sections = split_sections(image, &output, &commands, status)?;
    Ok(sections
        .iter()
        .map(|lines| parse_inode_dump(lines))
        .collect())
}

/// Reads the mode, owner, size and link count of `path` in `image`;
/// `None` when it does not exist.
pub fn stat(image: &Path, path: &str) -> Result<Option<Ext4Stat>, ReadExt4Error> {
    let path = guest_path(path)?;
    let mut found =
        lookup(image, std::slice::from_ref(&path)).map_err(|source| ReadExt4Error::Debugfs {
            image: image.to_owned(),
            path: path.clone(),
            source: Box::new(source),
        })?;
    Ok(found.pop().flatten())
}

/// Reads a regular file out of `image` without mounting it.
pub fn read_file(image: &Path, path: &str) -> Result<Vec<u8>, ReadExt4Error> {
    let path = guest_path(path)?;
    let debugfs_error = |source: ApplyEditsError| ReadExt4Error::Debugfs {
        image: image.to_owned(),
        path: path.clone(),
        source: Box::new(source),
    };
    let staging = tempfile::Builder::new()
        .prefix("banger-debugfs-")
        .tempdir()
        .map_err(|error| debugfs_error(ApplyEditsError::Stage(error)))?;
    let out = staging.path().join("content");
    let out_str = out.to_str().ok_or_else(|| {
        debugfs_error(ApplyEditsError::Stage(io::Error::other(
            "temporary directory path is not UTF-8",
        )))
    })?;
    let commands = vec![
        format!("inode_dump {}", quote(&path)),
        format!("dump {} {}", quote(&path), quote(out_str)),
    ];
    let (status, output) =
        run_script(image, staging.path(), &commands, false).map_err(debugfs_error)?;
    let sections = split_sections(image, &output, &commands, status).map_err(debugfs_error)?;
    let Some(found) = parse_inode_dump(&sections[0]) else {
        return Err(ReadExt4Error::NotFound {
            image: image.to_owned(),
            path,
        });
    };
    if found.kind != FileKind::Regular {
        return Err(ReadExt4Error::NotAFile {
            image: image.to_owned(),
            path,
        });
    }
    let complaints: Vec<&str> = sections[1]
        .iter()
        .copied()
        .filter(|line| !line.trim().is_empty())
        .collect();
    if !complaints.is_empty() {
        return Err(debugfs_error(ApplyEditsError::Command {
            image: image.to_owned(),
            command: commands[1].clone(),
            output: complaints.join("\n"),
        }));
    }
    fs::read(&out).map_err(|error| ReadExt4Error::Dump {
        image: image.to_owned(),
        path: path.clone(),
        source: error,
    })
}

/// Parses `inode_dump` output: lines of an octal offset, eight groups of
/// four hex digits (two bytes each, in memory order) and an ASCII column;
/// `*` stands for "the previous line repeats". Anything else (an error
/// message) means the path was not found.
fn parse_inode_dump(lines: &[&str]) -> Option<Ext4Stat> {
    const NEED: usize = 128;
    let mut bytes: Vec<u8> = Vec::with_capacity(256);
    let mut last: Option<[u8; 16]> = None;
    let mut repeat = false;
    for line in lines.iter().map(|line| line.trim_end()) {
        if line.is_empty() {
            continue;
        }
        if line == "*" {
            repeat = true;
            continue;
        }
        let mut words = line.split_whitespace();
        let offset = usize::from_str_radix(words.next()?, 8).ok()?;
        if repeat {
            let row = last?;
            while bytes.len() < offset {
                bytes.extend_from_slice(&row);
            }
            repeat = false;
        }
        if offset != bytes.len() {
            return None;
        }
        let mut row = [0u8; 16];
        for pair in row.chunks_mut(2) {
            let word = words.next()?;
            if word.len() != 4 {
                return None;
            }
            pair[0] = u8::from_str_radix(&word[0..2], 16).ok()?;
            pair[1] = u8::from_str_radix(&word[2..4], 16).ok()?;
        }
        bytes.extend_from_slice(&row);
        last = Some(row);
    }
    if repeat && let Some(row) = last {
        while bytes.len() < NEED {
            bytes.extend_from_slice(&row);
        }
    }
    if bytes.len() < NEED {
        return None;
    }
    let u16_at = |offset: usize| u16::from_le_bytes([bytes[offset], bytes[offset + 1]]);
    let u32_at = |offset: usize| {
        u32::from_le_bytes([
            bytes[offset],
            bytes[offset + 1],
            bytes[offset + 2],
            bytes[offset + 3],
        ])
    };
    let mode = u32::from(u16_at(0));
    Some(Ext4Stat {
        kind: FileKind::from_mode(mode)?,
        mode: mode & 0o7777,
        uid: u32::from(u16_at(2)) | (u32::from(u16_at(120)) << 16),
        gid: u32::from(u16_at(24)) | (u32::from(u16_at(122)) << 16),
        size: u64::from(u32_at(4)) | (u64::from(u32_at(108)) << 32),
        links: u16_at(26),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_validated_and_normalised() {
        assert_eq!(guest_path("/a//b/").unwrap(), "/a/b");
        assert_eq!(guest_path("/").unwrap(), "/");
        assert!(matches!(
            guest_path("a/b"),
            Err(GuestPathError::Relative(_))
        ));
        assert!(matches!(
            guest_path("/a\nb"),
            Err(GuestPathError::ControlCharacter(_))
        ));
        assert!(matches!(
            guest_path("/a/../b"),
            Err(GuestPathError::DotComponent(_))
        ));
        assert!(matches!(
            guest_path(&format!("/{}", "x".repeat(300))),
            Err(GuestPathError::TooLong(_))
        ));
        let mut edits = Ext4Edits::new();
        assert!(matches!(edits.remove("/"), Err(GuestPathError::Root(_))));
        assert!(matches!(
            edits.chmod("/x", 0o10000),
            Err(GuestPathError::BadMode { .. })
        ));
        assert!(matches!(
            edits.symlink("/x", "a\nb", 0, 0),
            Err(GuestPathError::BadTarget(_))
        ));
        assert!(edits.is_empty());
    }

    #[test]
    fn quoting_doubles_quotes_and_keeps_the_rest() {
        assert_eq!(quote(r#"/a b/q"u\x"#), r#""/a b/q""u\x""#);
        assert_eq!(parent_and_name("/etc/hostname"), ("/etc", "hostname"));
        assert_eq!(parent_and_name("/top"), ("/", "top"));
        assert_eq!(prefixes("/a/b/c"), vec!["/a", "/a/b", "/a/b/c"]);
    }

    #[test]
    fn parses_an_inode_dump() {
        let dump = [
            "0000  8081 7011 0600 0000 c7f3 026b c7f3 026b  ..p........k...k",
            "0020  c7f3 026b 0000 0000 0000 0100 0200 0000  ...k............",
            "0040  0000 0800 0000 0000 0af3 0100 0400 0000  ................",
            "0060  0000 0000 0000 0000 0100 0000 2211 0000  ............\"...",
            "0100  0000 0000 0000 0000 0000 0000 0000 0000  ................",
            "*",
            "0160  0000 0000 0000 0000 0100 0000 9578 0000  .............x..",
            "0200  2000 edb8 0000 0000 0000 0000 0000 0000   ...............",
            "*",
            "",
        ];
        let stat = parse_inode_dump(&dump).unwrap();
        assert_eq!(stat.kind, FileKind::Regular);
        assert_eq!(stat.mode, 0o600);
        assert_eq!(stat.uid, 70000);
        assert_eq!(stat.gid, 0);
        assert_eq!(stat.size, 6);
        assert_eq!(stat.links, 1);
        assert!(parse_inode_dump(&["/nope: File not found by ext2_lookup "]).is_none());
        assert!(parse_inode_dump(&[]).is_none());
    }

    #[test]
    fn sections_follow_command_echoes() {
        let commands = vec!["mkdir \"/a\"".to_owned(), "write \"/t/c\" \"f\"".to_owned()];
        let output = "debugfs 1.47.0 (5-Feb-2023)\ndebugfs: mkdir \"/a\"\ndebugfs: write \"/t/c\" \"f\"\nAllocated inode: 13\n";
        let status = std::process::ExitStatus::default();
        let sections = split_sections(Path::new("x"), output, &commands, status).unwrap();
        assert_eq!(
            sections,
            vec![Vec::<&str>::new(), vec!["Allocated inode: 13"]]
        );
        assert!(is_allocated_inode("Allocated inode: 13"));
        assert!(!is_allocated_inode("Allocated inode: "));

        let broken = "debugfs 1.47.0 (5-Feb-2023)\ndebugfs: Bad magic number in super-block while trying to open x\ndebugfs: mkdir \"/a\"\nmkdir: Filesystem not open\n";
        assert!(matches!(
            split_sections(Path::new("x"), broken, &commands, status),
            Err(ApplyEditsError::Open { .. })
        ));
    }
}
