//! The stream the guest receives: one tar holding the git bundle, the
//! working-tree files, the deletions, identities, and the constant script
//! that applies them. The remote command is a fixed string; every variable
//! travels as file content.

use std::fs::File;
use std::path::Path;

use super::repo::{PrepareError, Repo, bytes_path};
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
#[derive(Debug, Clone)]
pub struct Summary {
    pub files: usize,
    pub deleted: usize,
    pub bytes: u64,
    /// The commit export diffs against by default.
    pub base: Option<String>,
}

/// Writes the payload tar to `out`.
pub fn build(
    repo: &Repo,
    plan: &Plan,
    scratch: &Path,
    out: &Path,
) -> Result<Summary, PrepareError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PrepareError::Io { path, source }
    };
    let file = File::create(out).map_err(io(out))?;
    let mut tar = tar::Builder::new(file);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);

    let add_text = |tar: &mut tar::Builder<File>, name: &str, text: &str, mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        tar.append_data(&mut header, name, text.as_bytes())
            .map_err(io(out))
    };
    add_text(&mut tar, "apply.sh", APPLY_SCRIPT, 0o755)?;

    let base = match (&plan.from, &repo.head) {
        (Some(from), _) => Some(repo.resolve_from(from)?),
        (None, head) => head.clone(),
    };
    let mut summary = Summary {
        files: 0,
        deleted: 0,
        bytes: 0,
        base: base.clone(),
    };

    if let Some(head) = &repo.head
        && !plan.full_copy
    {
        let bundle = scratch.join("repo.bundle");
        let mut refs = vec!["HEAD"];
        if let Some(from) = &base {
            refs.push(from);
        }
        let output = exec::git_bundle(&repo.top, &bundle, &refs).map_err(io(&bundle))?;
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
        add_text(&mut tar, "head", head, 0o644)?;
        add_text(
            &mut tar,
            "head_branch",
            repo.head_branch.as_deref().unwrap_or(""),
            0o644,
        )?;
    } else if !plan.full_copy {
        add_text(
            &mut tar,
            "head_branch",
            repo.head_branch.as_deref().unwrap_or(""),
            0o644,
        )?;
    }
    add_text(
        &mut tar,
        "branch",
        plan.branch.as_deref().unwrap_or(""),
        0o644,
    )?;
    add_text(
        &mut tar,
        "from",
        if plan.from.is_some() {
            base.as_deref().unwrap_or("")
        } else {
            ""
        },
        0o644,
    )?;

    if plan.full_copy {
        // Everything, .git and submodules included.
        tar.append_dir_all("tree", &repo.top)
            .map_err(io(&repo.top))?;
        summary.files = count_files(&repo.top);
    } else if plan.from.is_none() {
        // The working tree's files go over the checkout of HEAD; a branch
        // started elsewhere (--from) gets no local changes.
        let changes = repo.changes()?;
        for relative in &changes.send {
            let path = bytes_path(relative);
            let full = repo.top.join(path);
            tar.append_path_with_name(&full, Path::new("tree").join(path))
                .map_err(io(&full))?;
            summary.bytes += std::fs::symlink_metadata(&full)
                .map(|meta| meta.len())
                .unwrap_or(0);
        }
        let mut list = Vec::new();
        for path in &changes.delete {
            list.extend_from_slice(path);
            list.push(0);
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(list.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "deleted", list.as_slice())
            .map_err(io(out))?;
        summary.files = changes.send.len();
        summary.deleted = changes.delete.len();
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
            add_text(&mut tar, file, &value, 0o644)?;
        }
    }
    tar.into_inner()
        .and_then(|file| file.sync_all())
        .map_err(io(out))?;
    Ok(summary)
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => count_files(&entry.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_script_is_posix_sh_and_takes_nothing_from_the_command_line_but_its_dir() {
        assert!(APPLY_SCRIPT.starts_with("#!/bin/sh"));
        assert!(!APPLY_SCRIPT.contains("$2"));
        assert!(REMOTE_COMMAND.contains("apply.sh"));
    }
}
