//! The workspace laid out on the host before the VM boots (`vm run PATH`).
//!
//! The guest's `/root/repo` is built in a scratch directory: a clone of the
//! repository checked out at HEAD, the working tree's changes over it (the
//! same paths, read the same way, as [`super::payload`] sends), and the
//! copied-in commit recorded. The daemon then builds the VM's work disk from
//! that directory and the image's `/root` in one `mkfs.ext4 -d` pass, so the
//! guest boots with its workspace in place and nothing is streamed over SSH.
//! `vm workspace prepare` on a running VM keeps the SSH path; both give the
//! guest the same repository.
//!
//! git runs here as the user, on the repository as it is on disk, but
//! without the user's global and system config (see
//! [`crate::exec::git_isolated`]): no hook, filter or setting of theirs
//! runs, as in a guest that has none.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path};

use super::payload::{
    Change, Plan, Skipped, Summary, UNREADABLE_SHOWN, io, read_changes, read_error,
};
use super::repo::{PrepareError, Repo, bytes_path};
use super::tree::{Entry, ReadError, Tree};
use crate::exec;
use banger_model::host_files::{HostFiles, Section};

/// The repository's directory in the staged `/root`.
pub const REPO_DIR: &str = "repo";

/// What was staged.
#[derive(Debug, Clone)]
pub struct Staged {
    pub summary: Summary,
    /// The commit of the workspace as copied in (export's default base).
    pub copied_in: String,
    /// HEAD's unchanged files, which the daemon takes from the checkout
    /// (`None`: everything is in the staged directory).
    pub host_files: Option<HostFiles>,
}

/// Lays out `root/repo` from `repo` as [`Plan`] says. `root` must be an
/// empty directory of the caller's.
pub fn build(repo: &Repo, plan: &Plan, root: &Path) -> Result<Staged, PrepareError> {
    let dest = root.join(REPO_DIR);
    let base = repo.base(plan.from.as_deref())?;
    let mut summary = Summary {
        base: base.clone(),
        ..Summary::default()
    };
    let tree = Tree::open(&repo.top).map_err(read_error)?;
    let mut unreadable = Vec::new();
    // Paths of the working tree written over the checkout, and paths gone
    // from it, NUL-separated for the copied-in commit's index.
    let mut written: Vec<u8> = Vec::new();
    let mut removed: Vec<u8> = Vec::new();
    // HEAD's files, when the checkout is left to the daemon.
    let mut tracked: Option<Vec<Tracked>> = None;
    let mut clean_before = None;
    // The repository's objects, when the clone borrows them.
    let mut shared_objects: Option<std::path::PathBuf> = None;

    if plan.full_copy {
        // Everything, .git and submodules included.
        fs::create_dir(&dest).map_err(io(&dest))?;
        let mut dirs = Vec::new();
        tree.walk(&mut |path, entry| {
            if let Entry::Dir { stat } = &entry {
                dirs.push((path.to_owned(), stat.st_mode & 0o7777));
            }
            match write_entry(&dest, path, entry, &mut summary) {
                Err(ReadError::Unreadable(path)) => unreadable.push(path),
                other => other?,
            }
            Ok(())
        })
        .map_err(read_error)?;
        // Directory modes last: a read-only directory is filled first.
        for (path, mode) in dirs.iter().rev() {
            let dir = dest.join(path);
            fs::set_permissions(&dir, fs::Permissions::from_mode(*mode)).map_err(io(&dir))?;
        }
    } else {
        match &repo.head {
            Some(head) => {
                // Repo::open read the repository with the user's own git
                // config, which trusts it (safe.directory) or it would have
                // failed there. This clone runs without that config, so it
                // gets a global config of one setting: that trust, for the
                // work tree and for the .git upload-pack reads (a `-c`
                // would not reach upload-pack).
                let trust = trust_config(&repo.top)?;
                // When the checkout is left to the daemon, so are the
                // objects: the clone borrows them (--shared) and the
                // daemon writes them in from the repository itself. Not
                // when the repository borrows objects itself.
                if plan.from.is_none() {
                    shared_objects = Some(repo.objects_dir()?)
                        .filter(|objects| !objects.join("info/alternates").exists());
                }
                let shared = shared_objects.is_some().then_some(OsStr::new("--shared"));
                let args: Vec<&OsStr> = [
                    OsStr::new("clone"),
                    OsStr::new("--quiet"),
                    OsStr::new("--no-checkout"),
                    OsStr::new("--template="),
                ]
                .into_iter()
                .chain(shared)
                .chain([OsStr::new("--"), repo.top.as_os_str(), dest.as_os_str()])
                .collect();
                run(
                    root,
                    &args,
                    &[("GIT_CONFIG_GLOBAL", trust.path().as_os_str())],
                    None,
                )?;
                git_str(&dest, &["remote", "remove", "origin"])?;
                if plan.from.is_none() {
                    // The working tree is HEAD's plus the changes below:
                    // HEAD's files are left where they are, listed for the
                    // daemon to take from the checkout as it writes the
                    // disk; only the index is made here.
                    match &repo.head_branch {
                        Some(branch) => {
                            git_str(
                                &dest,
                                &["update-ref", &format!("refs/heads/{branch}"), head],
                            )?;
                            git_str(
                                &dest,
                                &["symbolic-ref", "HEAD", &format!("refs/heads/{branch}")],
                            )?;
                        }
                        None => {
                            git_str(&dest, &["update-ref", "--no-deref", "HEAD", head])?;
                        }
                    };
                    git_str(&dest, &["read-tree", "HEAD"])?;
                    tracked = Some(tracked_files(&dest)?);
                } else {
                    match &repo.head_branch {
                        Some(branch) => {
                            git_str(&dest, &["checkout", "--quiet", "-B", branch, head])?
                        }
                        None => git_str(&dest, &["checkout", "--quiet", "--detach", head])?,
                    };
                }
            }
            None => {
                run(
                    root,
                    &[OsStr::new("init"), OsStr::new("--quiet"), dest.as_os_str()],
                    &[],
                    None,
                )?;
                if let Some(branch) = &repo.head_branch {
                    git_str(
                        &dest,
                        &["symbolic-ref", "HEAD", &format!("refs/heads/{branch}")],
                    )?;
                }
            }
        }
        if let Some(branch) = &plan.branch {
            match &plan.from {
                Some(_) => git_str(
                    &dest,
                    &[
                        "checkout",
                        "--quiet",
                        "-b",
                        branch,
                        base.as_deref().unwrap_or("HEAD"),
                    ],
                )?,
                None => git_str(&dest, &["checkout", "--quiet", "-b", branch])?,
            };
        }
        if plan.from.is_none() {
            // The working tree's files go over the checkout of HEAD; a
            // branch started elsewhere (--from) gets no local changes.
            // Files git finds unchanged now and modified before now are
            // as the index has them (see `HostFiles::clean_before`).
            clean_before = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|now| now.as_secs() as i64);
            let changes = repo.changes()?;
            read_changes(
                &tree,
                &changes,
                &mut unreadable,
                |candidate: &[u8], change: Change| {
                    let path = bytes_path(candidate);
                    let list = match change {
                        Change::Gone => {
                            remove(&dest, path).map_err(io(&dest.join(path)))?;
                            summary.deleted += 1;
                            &mut removed
                        }
                        Change::Skipped(skipped) => {
                            summary.skipped.push(skipped);
                            return Ok(());
                        }
                        Change::Present(entry) => {
                            write_entry(&dest, path, entry, &mut summary).map_err(read_error)?;
                            &mut written
                        }
                    };
                    list.extend_from_slice(candidate);
                    list.push(0);
                    Ok(())
                },
            )?;
        }
    }
    if !unreadable.is_empty() {
        return Err(PrepareError::Unreadable {
            shown: unreadable.iter().take(UNREADABLE_SHOWN).cloned().collect(),
            more: unreadable.len().saturating_sub(UNREADABLE_SHOWN),
        });
    }

    let (name, email) = repo.identity();
    if let Some(name) = name {
        git_str(&dest, &["config", "user.name", &name])?;
    }
    if let Some(email) = email {
        git_str(&dest, &["config", "user.email", &email])?;
    }
    let copied_in = copied_in_commit(&dest, plan.full_copy, &written, &removed)?;
    let mut host_files = tracked
        .map(|tracked| host_files(repo, &dest, tracked, &written, &removed, clean_before))
        .transpose()?;
    if let Some(objects) = shared_objects {
        // Nothing runs git in the staged repository after this: its
        // objects are the repository's from here on.
        let alternates = dest.join(".git/objects/info/alternates");
        fs::remove_file(&alternates).map_err(io(&alternates))?;
        let paths = object_files(&objects)?;
        host_files
            .get_or_insert_with(HostFiles::default)
            .sections
            .push(Section {
                root: objects,
                into: Path::new(REPO_DIR).join(".git/objects"),
                paths,
                clean_before: None,
            });
    }
    Ok(Staged {
        summary,
        copied_in,
        host_files,
    })
}

/// The files of an object directory (relative), without its alternates
/// and what git is still writing (`tmp_*`, `incoming-*`, `*.lock`).
fn object_files(objects: &Path) -> Result<Vec<std::path::PathBuf>, PrepareError> {
    let mut files = Vec::new();
    let mut dirs = vec![std::path::PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let dir = objects.join(&rel);
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name();
            let name_bytes = name.as_encoded_bytes();
            if name_bytes.starts_with(b"tmp")
                || name_bytes.starts_with(b"incoming-")
                || name_bytes.ends_with(b".lock")
            {
                continue;
            }
            let path = rel.join(&name);
            let kind = entry.file_type().map_err(io(&entry.path()))?;
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() && path != Path::new("info/alternates") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A path of HEAD's tree, and whether it is a submodule (a gitlink).
#[derive(Debug)]
struct Tracked {
    path: Vec<u8>,
    gitlink: bool,
}

/// HEAD's paths, from the staged index (`git ls-files -s`).
fn tracked_files(dest: &Path) -> Result<Vec<Tracked>, PrepareError> {
    let listing = run_bytes(dest, &["ls-files", "-z", "-s"])?;
    Ok(listing
        .split(|&byte| byte == 0)
        .filter(|record| !record.is_empty())
        .filter_map(|record| {
            // "MODE SHA STAGE\tPATH"
            let tab = record.iter().position(|&byte| byte == b'\t')?;
            Some(Tracked {
                path: record[tab + 1..].to_vec(),
                gitlink: record.starts_with(b"160000 "),
            })
        })
        .collect())
}

/// The files of HEAD the working tree still has unchanged, for the daemon
/// to take from the checkout; a submodule is an empty directory here, as
/// a checkout leaves it.
fn host_files(
    repo: &Repo,
    dest: &Path,
    tracked: Vec<Tracked>,
    written: &[u8],
    removed: &[u8],
    clean_before: Option<i64>,
) -> Result<HostFiles, PrepareError> {
    let listed = |list: &[u8]| -> std::collections::HashSet<Vec<u8>> {
        list.split(|&byte| byte == 0)
            .filter(|path| !path.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    };
    let (written, removed) = (listed(written), listed(removed));
    let mut paths = Vec::with_capacity(tracked.len());
    // HEAD's files the working tree does not have and git does not call
    // deleted (outside a sparse checkout): written here from HEAD, as a
    // checkout would.
    let mut from_head: Vec<u8> = Vec::new();
    for entry in tracked {
        if written.contains(&entry.path) || removed.contains(&entry.path) {
            continue;
        }
        let path = bytes_path(&entry.path);
        if entry.gitlink {
            real_parents(dest, path).map_err(io(&dest.join(path)))?;
            match fs::create_dir(dest.join(path)) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(io(&dest.join(path))(err)),
            }
            continue;
        }
        match fs::symlink_metadata(repo.top.join(path)) {
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                from_head.extend_from_slice(&entry.path);
                from_head.push(0);
            }
            _ => paths.push(path.to_owned()),
        }
    }
    if !from_head.is_empty() {
        run(
            dest,
            &["checkout-index", "-z", "--stdin"],
            &[],
            Some(&from_head),
        )?;
    }
    Ok(HostFiles {
        sections: vec![Section {
            root: repo.top.clone(),
            into: REPO_DIR.into(),
            paths,
            clean_before,
        }],
    })
}

/// Records the workspace as copied in as a commit (`refs/banger/copied-in`;
/// HEAD, branch and index stay as they are): `vm workspace export` diffs
/// against it by default, so its patch applies to the host checkout the
/// workspace came from. Only the paths written over the checkout are hashed
/// (all of them for a full copy).
fn copied_in_commit(
    dest: &Path,
    full_copy: bool,
    written: &[u8],
    removed: &[u8],
) -> Result<String, PrepareError> {
    let git_dir = dest.join(".git");
    let index = git_dir.join("banger-copied-in.index");
    let env = [("GIT_INDEX_FILE", index.as_os_str())];
    let has_head = git_str(dest, &["rev-parse", "-q", "--verify", "HEAD^{commit}"]).ok();
    let result = (|| {
        if full_copy {
            if git_dir.join("index").exists() {
                fs::copy(git_dir.join("index"), &index).map_err(io(&index))?;
            }
            run(dest, &["add", "-A"], &env, None)?;
        } else {
            if has_head.is_some() {
                run(dest, &["read-tree", "HEAD"], &env, None)?;
            }
            // Removals first; then a path that changed kind (a directory
            // now a symlink) replaces the entries beneath it.
            for (flags, paths) in [
                (&["--force-remove"][..], removed),
                (&["--add", "--replace"][..], written),
            ] {
                if !paths.is_empty() {
                    let mut args = vec!["update-index", "-z"];
                    args.extend(flags);
                    args.push("--stdin");
                    run(dest, &args, &env, Some(paths))?;
                }
            }
        }
        let tree = run(dest, &["write-tree"], &env, None)?;
        let mut args = vec!["commit-tree", tree.trim()];
        if let Some(parent) = has_head.as_deref().map(str::trim) {
            args.extend(["-p", parent]);
        }
        args.extend(["-m", "banger: the workspace as copied in"]);
        let author = [
            ("GIT_AUTHOR_NAME", OsStr::new("banger")),
            ("GIT_AUTHOR_EMAIL", OsStr::new("banger@localhost")),
            ("GIT_COMMITTER_NAME", OsStr::new("banger")),
            ("GIT_COMMITTER_EMAIL", OsStr::new("banger@localhost")),
        ];
        let commit = run(dest, &args, &author, None)?;
        let commit = commit.trim().to_owned();
        git_str(dest, &["update-ref", "refs/banger/copied-in", &commit])?;
        Ok(commit)
    })();
    let _ = fs::remove_file(&index);
    result
}

/// Removes a path the working tree no longer has, and the directories it
/// leaves empty, as `git checkout` would. A path beneath something that is
/// not a directory in the staged tree (a symlink the working tree put in a
/// directory's place) is not there: nothing is followed, nothing removed.
fn remove(dest: &Path, path: &Path) -> io::Result<()> {
    let mut dir = dest.to_owned();
    for component in path.parent().into_iter().flat_map(Path::components) {
        dir.push(component);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        }
    }
    let target = dest.join(path);
    match fs::symlink_metadata(&target) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => fs::remove_file(&target)?,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    }
    let mut parent = path.parent();
    while let Some(dir) = parent.filter(|dir| !dir.as_os_str().is_empty()) {
        if fs::remove_dir(dest.join(dir)).is_err() {
            break;
        }
        parent = dir.parent();
    }
    Ok(())
}

/// Writes one entry of the working tree at `dest/path`, replacing whatever
/// the checkout put there. Every directory on the way is made a real
/// directory first, so nothing is written through a symlink the checkout
/// made.
fn write_entry(
    dest: &Path,
    path: &Path,
    entry: Entry,
    summary: &mut Summary,
) -> Result<(), ReadError> {
    let target = dest.join(path);
    let failed = |source| ReadError::Io {
        path: target.clone(),
        source,
    };
    if !matches!(entry, Entry::Gone | Entry::Special { .. }) {
        real_parents(dest, path).map_err(failed)?;
        match fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() && !matches!(entry, Entry::Dir { .. }) => {
                fs::remove_dir_all(&target).map_err(failed)?
            }
            Ok(meta) if !meta.is_dir() => fs::remove_file(&target).map_err(failed)?,
            _ => {}
        }
    }
    match entry {
        Entry::File { mut file, stat } => {
            let mode = stat.st_mode & 0o7777;
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&target)
                .map_err(failed)?;
            let size = io::copy(&mut file, &mut out).map_err(failed)?;
            // The mode exactly, whatever the umask; the time as on the host.
            out.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(failed)?;
            let mtime = std::time::UNIX_EPOCH
                + std::time::Duration::new(
                    u64::try_from(stat.st_mtime).unwrap_or(0),
                    u32::try_from(stat.st_mtime_nsec).unwrap_or(0),
                );
            out.set_modified(mtime).map_err(failed)?;
            summary.files += 1;
            summary.bytes += size;
        }
        Entry::Symlink { target: link, .. } => {
            std::os::unix::fs::symlink(&link, &target).map_err(failed)?;
            summary.files += 1;
        }
        Entry::Dir { .. } => match fs::create_dir(&target) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(failed(err)),
        },
        Entry::Special { kind } => summary.skipped.push(Skipped {
            path: path.to_owned(),
            reason: format!("{kind}; only files, directories and symlinks are copied"),
        }),
        Entry::Gone => {}
    }
    Ok(())
}

/// Makes every parent of `path` under `dest` a real directory: missing
/// ones are created, a file or symlink in the way is replaced.
fn real_parents(dest: &Path, path: &Path) -> io::Result<()> {
    let mut dir = dest.to_owned();
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    for component in parent.components() {
        let Component::Normal(name) = component else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a plain relative path", path.display()),
            ));
        };
        dir.push(name);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => fs::remove_file(&dir)?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        fs::create_dir(&dir)?;
    }
    Ok(())
}

/// A git config file that trusts the repository at `top` and its `.git`.
fn trust_config(top: &Path) -> Result<tempfile::NamedTempFile, PrepareError> {
    let mut file = tempfile::Builder::new()
        .prefix("banger-git-trust")
        .tempfile()
        .map_err(|source| PrepareError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
    let quoted = |path: &Path| {
        format!(
            "\"{}\"",
            path.to_string_lossy()
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
        )
    };
    let text = format!(
        "[safe]\n\tdirectory = {}\n\tdirectory = {}\n",
        quoted(top),
        quoted(&top.join(".git"))
    );
    io::Write::write_all(&mut file, text.as_bytes()).map_err(io(file.path()))?;
    Ok(file)
}

fn git_str(dir: &Path, args: &[&str]) -> Result<String, PrepareError> {
    run(dir, args, &[], None)
}

/// git's stdout as bytes (paths need not be UTF-8).
fn run_bytes(dir: &Path, args: &[&str]) -> Result<Vec<u8>, PrepareError> {
    let output = exec::git_isolated(dir, args, &[], None).map_err(|err| PrepareError::Git {
        dir: dir.to_owned(),
        message: format!("{}; install git", exec::describe(&err)),
    })?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(PrepareError::Git {
            dir: dir.to_owned(),
            message: format!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}

/// Runs git on the staged repository; its stdout, or an error with its
/// stderr.
fn run<A: AsRef<OsStr>>(
    dir: &Path,
    args: &[A],
    env: &[(&str, &OsStr)],
    stdin: Option<&[u8]>,
) -> Result<String, PrepareError> {
    let output = exec::git_isolated(dir, args, env, stdin).map_err(|err| PrepareError::Git {
        dir: dir.to_owned(),
        message: format!("{}; install git", exec::describe(&err)),
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(PrepareError::Git {
            dir: dir.to_owned(),
            message: format!(
                "git {}: {}",
                args.iter()
                    .map(|arg| arg.as_ref().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}
