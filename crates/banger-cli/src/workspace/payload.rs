//! The stream the guest receives: one tar holding the git bundle, the
//! working-tree files, the deletions, identities, and the constant script
//! that applies them. The remote command is a fixed string; every variable
//! travels as file content.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::repo::{Changes, PrepareError, Repo, bytes_path};
use super::tree::{Entry, ReadError, Tree};
use crate::exec;

/// The script run in the guest (`sh apply.sh DIR`).
pub const APPLY_SCRIPT: &str = include_str!("apply.sh");

/// The remote command: unpack stdin into a fresh directory and apply it.
/// The directory is on the work disk (`/root`, sized by `--disk-size`),
/// not on the root filesystem, which a large payload could fill.
pub const REMOTE_COMMAND: &str = "set -e; d=$(mktemp -d /root/.banger-workspace.XXXXXX); \
    tar -x -C \"$d\"; sh \"$d/apply.sh\" \"$d\"";

/// What to put in the guest.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// A guest-only branch to create.
    pub branch: Option<String>,
    /// Start `branch` from this commit instead of HEAD.
    pub from: Option<String>,
    /// Copy the whole directory (submodules and all) instead of a bundle
    /// plus the working tree.
    pub full_copy: bool,
}

/// What was sent, for the user and for export.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub files: usize,
    pub deleted: usize,
    pub bytes: u64,
    /// The commit export diffs against by default.
    pub base: Option<String>,
    /// Paths of the working tree left out, each with the reason.
    pub skipped: Vec<Skipped>,
}

/// A path of the working tree that is not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// How many unreadable paths an error names before "and N more".
pub(super) const UNREADABLE_SHOWN: usize = 10;

/// Writes the payload tar to `out`. Every file of the working tree is read
/// beneath the repository's top directory without following symlinks
/// ([`Tree`]); unreadable files fail the build, naming them, so it is run
/// before the VM exists.
pub fn build(
    repo: &Repo,
    plan: &Plan,
    scratch: &Path,
    out: &Path,
) -> Result<Summary, PrepareError> {
    let file = File::create(out).map_err(io(out))?;
    let mut tar = tar::Builder::new(file);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);

    add_text(&mut tar, out, "apply.sh", APPLY_SCRIPT, 0o755)?;

    let base = repo.base(plan.from.as_deref())?;
    let mut summary = Summary {
        base: base.clone(),
        ..Summary::default()
    };

    if let Some(head) = &repo.head
        && !plan.full_copy
    {
        let bundle = scratch.join("repo.bundle");
        let mut refs = vec!["HEAD"];
        if let Some(from) = &base {
            refs.push(from);
        }
        let output =
            exec::git_bundle(&repo.top, &bundle, &refs).map_err(|err| PrepareError::Git {
                dir: repo.top.clone(),
                message: format!("{}; install git", exec::describe(&err)),
            })?;
        if !output.status.success() {
            return Err(PrepareError::Git {
                dir: repo.top.clone(),
                message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        tar.append_path_with_name(&bundle, "repo.bundle")
            .map_err(io(&bundle))?;
        summary.bytes += std::fs::metadata(&bundle)
            .map(|meta| meta.len())
            .unwrap_or(0);
        add_text(&mut tar, out, "head", head, 0o644)?;
    }
    if !plan.full_copy {
        add_text(
            &mut tar,
            out,
            "head_branch",
            repo.head_branch.as_deref().unwrap_or(""),
            0o644,
        )?;
    }
    add_text(
        &mut tar,
        out,
        "branch",
        plan.branch.as_deref().unwrap_or(""),
        0o644,
    )?;
    let from = if plan.from.is_some() {
        base.as_deref().unwrap_or("")
    } else {
        ""
    };
    add_text(&mut tar, out, "from", from, 0o644)?;

    let tree = Tree::open(&repo.top).map_err(read_error)?;
    let mut unreadable = Vec::new();
    if plan.full_copy {
        // Everything, .git and submodules included.
        tree.walk(&mut |path, entry| {
            let name = Path::new("tree").join(path);
            match append_entry(&mut tar, out, &name, entry, &mut summary) {
                Err(ReadError::Unreadable(path)) => unreadable.push(path),
                other => other?,
            }
            Ok(())
        })
        .map_err(read_error)?;
    } else if plan.from.is_none() {
        // The working tree's files go over the checkout of HEAD; a branch
        // started elsewhere (--from) gets no local changes.
        let changes = repo.changes()?;
        let mut deleted = Vec::new();
        read_changes(
            &tree,
            &changes,
            &mut unreadable,
            |candidate: &[u8], change: Change| {
                match change {
                    Change::Gone => {
                        deleted.extend_from_slice(candidate);
                        deleted.push(0);
                        summary.deleted += 1;
                    }
                    Change::Skipped(skipped) => summary.skipped.push(skipped),
                    Change::Present(entry) => {
                        let name = Path::new("tree").join(bytes_path(candidate));
                        append_entry(&mut tar, out, &name, entry, &mut summary)
                            .map_err(read_error)?
                    }
                }
                Ok(())
            },
        )?;
        let mut header = tar::Header::new_gnu();
        header.set_size(deleted.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "deleted", deleted.as_slice())
            .map_err(io(out))?;
    }
    if !unreadable.is_empty() {
        return Err(PrepareError::Unreadable {
            shown: unreadable.iter().take(UNREADABLE_SHOWN).cloned().collect(),
            more: unreadable.len().saturating_sub(UNREADABLE_SHOWN),
        });
    }

    let (name, email) = repo.identity();
    let (global_name, global_email) = repo.global_identity();
    for (file, value) in [
        ("user.name", name),
        ("user.email", email),
        ("global.name", global_name),
        ("global.email", global_email),
    ] {
        if let Some(value) = value {
            add_text(&mut tar, out, file, &value, 0o644)?;
        }
    }
    tar.into_inner()
        .and_then(|file| file.sync_all())
        .map_err(io(out))?;
    Ok(summary)
}

/// One path where the working tree may differ from HEAD, as read beneath
/// its top directory.
pub(super) enum Change {
    /// Not in the working tree any more.
    Gone,
    /// A directory git lists whole (a repository of its own, a submodule):
    /// left out, with the reason.
    Skipped(Skipped),
    /// A file or symlink to carry (or a special file, reported when carried).
    Present(Entry),
}

/// Reads each of `changes`' paths in `tree` and hands it to `visit`; paths
/// that cannot be read are collected in `unreadable` for one error.
pub(super) fn read_changes(
    tree: &Tree,
    changes: &Changes,
    unreadable: &mut Vec<PathBuf>,
    mut visit: impl FnMut(&[u8], Change) -> Result<(), PrepareError>,
) -> Result<(), PrepareError> {
    for candidate in &changes.candidates {
        let path = bytes_path(candidate);
        let entry = match tree.entry(path) {
            Ok(entry) => entry,
            Err(ReadError::Unreadable(path)) => {
                unreadable.push(path);
                continue;
            }
            Err(err) => return Err(read_error(err)),
        };
        let change = match entry {
            Entry::Gone => Change::Gone,
            Entry::Dir { .. } => Change::Skipped(Skipped {
                path: path.to_owned(),
                reason: if changes.nested.contains(candidate) {
                    "a git repository of its own (git does not track its files); pass --full-copy to copy everything".into()
                } else {
                    "a submodule; pass --full-copy to copy everything".into()
                },
            }),
            entry => Change::Present(entry),
        };
        visit(candidate, change)?;
    }
    Ok(())
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PrepareError + use<> {
    let path = path.to_owned();
    move |source| PrepareError::Io { path, source }
}

pub(super) fn read_error(err: ReadError) -> PrepareError {
    match err {
        ReadError::Unreadable(path) => PrepareError::Unreadable {
            shown: vec![path],
            more: 0,
        },
        ReadError::Changed { path } => PrepareError::Changed(path),
        ReadError::Io { path, source } => PrepareError::Io { path, source },
    }
}

fn add_text(
    tar: &mut tar::Builder<File>,
    out: &Path,
    name: &str,
    text: &str,
    mode: u32,
) -> Result<(), PrepareError> {
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(mode);
    header.set_cksum();
    tar.append_data(&mut header, name, text.as_bytes())
        .map_err(io(out))
}

/// Appends one entry of the working tree at `name`: files with their
/// content, symlinks as symlinks, directories as directories; device
/// nodes, FIFOs and sockets are skipped and reported.
fn append_entry(
    tar: &mut tar::Builder<File>,
    out: &Path,
    name: &Path,
    entry: Entry,
    summary: &mut Summary,
) -> Result<(), ReadError> {
    let failed = |source| ReadError::Io {
        path: out.to_owned(),
        source,
    };
    match entry {
        Entry::File { file, stat } => {
            let size = u64::try_from(stat.st_size).unwrap_or(0);
            let mut header = header_for(&stat, tar::EntryType::Regular);
            header.set_size(size);
            tar.append_data(&mut header, name, std::io::Read::take(file, size))
                .map_err(failed)?;
            summary.files += 1;
            summary.bytes += size;
        }
        Entry::Symlink { target, stat } => {
            let mut header = header_for(&stat, tar::EntryType::Symlink);
            header.set_size(0);
            tar.append_link(&mut header, name, Path::new(&target))
                .map_err(failed)?;
            summary.files += 1;
        }
        Entry::Dir { stat } => {
            let mut header = header_for(&stat, tar::EntryType::Directory);
            header.set_size(0);
            tar.append_data(&mut header, name, std::io::empty())
                .map_err(failed)?;
        }
        Entry::Special { kind } => summary.skipped.push(Skipped {
            path: name.strip_prefix("tree").unwrap_or(name).to_owned(),
            reason: format!("{kind}; only files, directories and symlinks are copied"),
        }),
        Entry::Gone => {}
    }
    Ok(())
}

/// A tar header with the entry's mode, owner and modification time.
fn header_for(stat: &nix::sys::stat::FileStat, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(stat.st_mode & 0o7777);
    header.set_uid(u64::from(stat.st_uid));
    header.set_gid(u64::from(stat.st_gid));
    header.set_mtime(u64::try_from(stat.st_mtime).unwrap_or(0));
    header
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::process::Command;

    use super::*;

    #[test]
    fn apply_script_is_posix_sh_and_takes_nothing_from_the_command_line_but_its_dir() {
        assert!(APPLY_SCRIPT.starts_with("#!/bin/sh"));
        assert!(!APPLY_SCRIPT.contains("$2"));
        assert!(REMOTE_COMMAND.contains("apply.sh"));
    }

    fn git(dir: &Path, args: &[&str]) {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }

    /// A repository with `conf/app.txt` and `lib/mod.txt` committed.
    fn repo(root: &Path) -> PathBuf {
        let top = root.join("repo");
        fs_err::create_dir_all(top.join("conf")).unwrap();
        fs_err::create_dir_all(top.join("lib")).unwrap();
        fs_err::write(top.join("conf/app.txt"), "tracked config\n").unwrap();
        fs_err::write(top.join("lib/mod.txt"), "tracked lib\n").unwrap();
        git(&top, &["init", "-q", "-b", "main"]);
        git(&top, &["add", "-A"]);
        git(&top, &["commit", "-qm", "init"]);
        top
    }

    /// Every entry of a payload: path, kind, link target, content.
    fn entries(payload: &Path) -> Vec<(String, tar::EntryType, String, Vec<u8>)> {
        let mut archive = tar::Archive::new(fs_err::File::open(payload).unwrap());
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let path = entry.path().unwrap().display().to_string();
                let kind = entry.header().entry_type();
                let target = entry
                    .link_name()
                    .unwrap()
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                (path, kind, target, data)
            })
            .collect()
    }

    fn build_in(top: &Path, plan: &Plan) -> Result<(Summary, PathBuf), PrepareError> {
        let scratch = top.parent().unwrap().join("scratch");
        fs_err::create_dir_all(&scratch).unwrap();
        let out = scratch.join("payload.tar");
        let repo = Repo::open(top, plan.full_copy)?;
        build(&repo, plan, &scratch, &out).map(|summary| (summary, out))
    }

    #[test]
    fn directories_swapped_for_symlinks_are_shipped_as_symlinks_and_never_read_through() {
        let dir = tempfile::tempdir().unwrap();
        let top = repo(dir.path());
        // Outside the repository, files with the same names as tracked ones.
        let outside = dir.path().join("outside");
        fs_err::create_dir_all(&outside).unwrap();
        let secret = b"SECRET outside the repository\n";
        fs_err::write(outside.join("app.txt"), secret).unwrap();
        fs_err::write(dir.path().join("mod.txt"), secret).unwrap();
        // conf -> /abs/outside, lib -> ../.. (the temp dir holding mod.txt).
        fs_err::remove_dir_all(top.join("conf")).unwrap();
        symlink(&outside, top.join("conf")).unwrap();
        fs_err::remove_dir_all(top.join("lib")).unwrap();
        symlink("..", top.join("lib")).unwrap();

        for full_copy in [false, true] {
            let plan = Plan {
                full_copy,
                ..Plan::default()
            };
            let (summary, payload) = build_in(&top, &plan).unwrap();
            let entries = entries(&payload);
            let leaked: usize = entries
                .iter()
                .map(|(_, _, _, data)| {
                    data.windows(secret.len())
                        .filter(|window| *window == secret)
                        .count()
                        * secret.len()
                })
                .sum();
            println!("full_copy={full_copy}: bytes read outside the repository: {leaked}");
            assert_eq!(leaked, 0, "{entries:?}");
            let link = |name: &str| {
                entries
                    .iter()
                    .find(|(path, ..)| path == name)
                    .map(|(_, kind, target, _)| (*kind, target.clone()))
            };
            assert_eq!(
                link("tree/conf"),
                Some((tar::EntryType::Symlink, outside.display().to_string()))
            );
            assert_eq!(
                link("tree/lib"),
                Some((tar::EntryType::Symlink, "..".into()))
            );
            assert!(
                !entries
                    .iter()
                    .any(|(path, ..)| path.starts_with("tree/conf/")
                        || path.starts_with("tree/lib/")),
                "{entries:?}"
            );
            if !full_copy {
                let deleted = &entries
                    .iter()
                    .find(|(path, ..)| path == "deleted")
                    .unwrap()
                    .3;
                assert_eq!(deleted.as_slice(), b"conf/app.txt\0lib/mod.txt\0");
                assert_eq!((summary.files, summary.deleted), (2, 2));
            }
        }
    }

    #[test]
    fn nested_repositories_and_fifos_are_reported_not_silently_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let top = repo(dir.path());
        let nested = top.join("vendor/other");
        fs_err::create_dir_all(&nested).unwrap();
        git(&nested, &["init", "-q"]);
        fs_err::write(nested.join("file"), "x").unwrap();
        // git does not list FIFOs; a full copy meets them.
        nix::unistd::mkfifo(
            &top.join("pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let skipped = |summary: &Summary| -> Vec<String> {
            summary
                .skipped
                .iter()
                .map(|s| format!("{}: {}", s.path.display(), s.reason))
                .collect()
        };
        let (summary, payload) = build_in(&top, &Plan::default()).unwrap();
        let skipped_now = skipped(&summary);
        assert_eq!(skipped_now.len(), 1, "{skipped_now:?}");
        assert!(
            skipped_now[0].starts_with("vendor/other: a git repository of its own"),
            "{skipped_now:?}"
        );
        assert!(
            !entries(&payload)
                .iter()
                .any(|(path, ..)| path.contains("vendor"))
        );

        let full = Plan {
            full_copy: true,
            ..Plan::default()
        };
        let (summary, payload) = build_in(&top, &full).unwrap();
        assert_eq!(
            skipped(&summary),
            ["pipe: a FIFO; only files, directories and symlinks are copied"]
        );
        let entries = entries(&payload);
        assert!(
            entries
                .iter()
                .any(|(path, ..)| path == "tree/vendor/other/file")
        );
        assert!(!entries.iter().any(|(path, ..)| path.contains("pipe")));
    }

    #[test]
    fn unreadable_files_fail_the_build_and_are_named() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let top = repo(dir.path());
        let scratch = dir.path().join("scratch");
        fs_err::create_dir_all(&scratch).unwrap();
        fs_err::set_permissions(&scratch, std::fs::Permissions::from_mode(0o777)).unwrap();
        for name in ["a.key", "b.key"] {
            fs_err::write(top.join(name), "private").unwrap();
            fs_err::set_permissions(top.join(name), std::fs::Permissions::from_mode(0o600))
                .unwrap();
            nix::unistd::chown(&top.join(name), Some(nix::unistd::Uid::from_raw(0)), None).ok();
        }
        // Build as another user (filesystem uid and capabilities are per
        // thread; the git it runs inherits them).
        let result = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    if nix::unistd::geteuid().is_root() {
                        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(65534));
                    }
                    build_in(&top, &Plan::default())
                })
                .join()
                .unwrap()
        });
        match result {
            Err(err @ PrepareError::Unreadable { .. }) => {
                let text = err.to_string();
                assert!(text.contains("a.key") && text.contains("b.key"), "{text}");
                assert!(
                    text.ends_with("make them readable (chmod) or add them to .gitignore"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
