//! Reading the host repository with the user's git.

use std::path::{Path, PathBuf};

use crate::exec;

/// Why a path cannot become a workspace.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{0} does not exist")]
    Missing(PathBuf),
    #[error(
        "{0} is not inside a git repository; `banger vm run` without a path gives a bare sandbox"
    )]
    NotARepo(PathBuf),
    #[error(
        "git refuses {}: it belongs to another user; if you trust it, `git config --global --add safe.directory {}`",
        .0.display(), .0.display()
    )]
    NotTrusted(PathBuf),
    #[error("{0} is a bare repository; clone it and run banger in the checkout")]
    Bare(PathBuf),
    #[error("{0} has submodules; pass --full-copy to copy the whole directory instead")]
    Submodules(PathBuf),
    #[error("--from {0:?} does not name a commit in the repository")]
    BadFrom(String),
    #[error("--branch {0:?} is not a valid branch name")]
    BadBranch(String),
    #[error(
        "cannot read {}{}; make {} readable (chmod) or add {} to .gitignore",
        shown.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(", "),
        if *more > 0 { format!(" and {more} more") } else { String::new() },
        if shown.len() + more > 1 { "them" } else { "it" },
        if shown.len() + more > 1 { "them" } else { "it" },
    )]
    Unreadable { shown: Vec<PathBuf>, more: usize },
    #[error("{0} changed while the workspace was read; try again")]
    Changed(PathBuf),
    #[error("running git in {dir}: {message}")]
    Git { dir: PathBuf, message: String },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The paths where the working tree may differ from HEAD, as git lists
/// them (relative, raw bytes); the working tree itself says which are
/// files to send and which are gone (see [`super::payload`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Changed against HEAD (staged or not, mode changes included) and
    /// untracked-but-not-ignored, sorted.
    pub candidates: Vec<Vec<u8>>,
    /// Untracked directories git lists whole: repositories of their own.
    pub nested: Vec<Vec<u8>>,
}

/// A repository to copy, as read at the moment of the copy.
#[derive(Debug, Clone)]
pub struct Repo {
    pub top: PathBuf,
    /// HEAD's commit, `None` in a repository without commits.
    pub head: Option<String>,
    /// The branch HEAD is on, `None` when detached.
    pub head_branch: Option<String>,
}

impl Repo {
    /// Finds the repository enclosing `path` and checks it can be copied.
    pub fn open(path: &Path, full_copy: bool) -> Result<Self, PrepareError> {
        if !path.exists() {
            return Err(PrepareError::Missing(path.to_owned()));
        }
        let dir = if path.is_dir() {
            path.to_owned()
        } else {
            path.parent().unwrap_or(path).to_owned()
        };
        let bare = git(&dir, &["rev-parse", "--is-bare-repository"]);
        match bare {
            Ok(text) if text.trim() == "true" => return Err(PrepareError::Bare(dir)),
            Ok(_) => {}
            // git's own guard: a repository another user owns runs none of
            // its config or hooks until the user says they trust it.
            Err(PrepareError::Git { message, .. }) if message.contains("dubious ownership") => {
                return Err(PrepareError::NotTrusted(dir));
            }
            Err(_) => return Err(PrepareError::NotARepo(path.to_owned())),
        }
        let top = PathBuf::from(git(&dir, &["rev-parse", "--show-toplevel"])?.trim());
        if !full_copy && top.join(".gitmodules").exists() {
            return Err(PrepareError::Submodules(top));
        }
        let head = git(&top, &["rev-parse", "--verify", "--quiet", "HEAD^{commit}"])
            .ok()
            .map(|sha| sha.trim().to_owned());
        let head_branch = git(&top, &["symbolic-ref", "--quiet", "--short", "HEAD"])
            .ok()
            .map(|name| name.trim().to_owned());
        Ok(Self {
            top,
            head,
            head_branch,
        })
    }

    /// The repository's object directory, absolute (a worktree's is its
    /// main repository's).
    pub fn objects_dir(&self) -> Result<PathBuf, PrepareError> {
        let path = git(
            &self.top,
            &[
                "rev-parse",
                "--path-format=absolute",
                "--git-path",
                "objects",
            ],
        )?;
        Ok(PathBuf::from(path.trim_end_matches('\n')))
    }

    /// The commit `reference` names, checked to be reachable by the bundle.
    pub fn resolve_from(&self, reference: &str) -> Result<String, PrepareError> {
        let sha = git(
            &self.top,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{reference}^{{commit}}"),
            ],
        )
        .map_err(|_| PrepareError::BadFrom(reference.to_owned()))?;
        Ok(sha.trim().to_owned())
    }

    /// The commit the guest's checkout starts from: `from` when given
    /// (checked), else HEAD (`None` in a repository without commits).
    pub fn base(&self, from: Option<&str>) -> Result<Option<String>, PrepareError> {
        match from {
            Some(from) => self.resolve_from(from).map(Some),
            None => Ok(self.head.clone()),
        }
    }

    pub fn check_branch_name(&self, branch: &str) -> Result<(), PrepareError> {
        git(&self.top, &["check-ref-format", "--branch", branch])
            .map(drop)
            .map_err(|_| PrepareError::BadBranch(branch.to_owned()))
    }

    /// Where the working tree may differ from HEAD: files changed against
    /// HEAD (staged or not, mode changes included) and untracked files that
    /// are not ignored. Files HEAD already has unchanged travel in the
    /// bundle only.
    pub fn changes(&self) -> Result<Changes, PrepareError> {
        let mut candidates = match &self.head {
            Some(head) => split_nul(&git_bytes(
                &self.top,
                &[
                    "diff",
                    "--name-only",
                    "-z",
                    "--no-renames",
                    "--no-ext-diff",
                    head,
                    "--",
                ],
            )?),
            // No commits: everything in the index is new.
            None => split_nul(&git_bytes(&self.top, &["ls-files", "-z", "--cached"])?),
        };
        let mut nested = Vec::new();
        for mut path in split_nul(&git_bytes(
            &self.top,
            &["ls-files", "-z", "--others", "--exclude-standard"],
        )?) {
            // git lists an untracked repository as its directory, `dir/`.
            if path.last() == Some(&b'/') {
                path.pop();
                nested.push(path.clone());
            }
            candidates.push(path);
        }
        candidates.sort();
        candidates.dedup();
        Ok(Changes { candidates, nested })
    }

    /// `user.name`/`user.email` as the repository sees them.
    pub fn identity(&self) -> (Option<String>, Option<String>) {
        (
            config(&self.top, &["config", "user.name"]),
            config(&self.top, &["config", "user.email"]),
        )
    }

    /// The user's global identity.
    pub fn global_identity(&self) -> (Option<String>, Option<String>) {
        (
            config(&self.top, &["config", "--global", "user.name"]),
            config(&self.top, &["config", "--global", "user.email"]),
        )
    }
}

fn config(dir: &Path, args: &[&str]) -> Option<String> {
    git(dir, args)
        .ok()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

pub(crate) fn bytes_path(bytes: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(bytes))
}

fn split_nul(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Runs git; its stdout as text, or an error with its stderr.
fn git(dir: &Path, args: &[&str]) -> Result<String, PrepareError> {
    git_bytes(dir, args).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

fn git_bytes(dir: &Path, args: &[&str]) -> Result<Vec<u8>, PrepareError> {
    let output = exec::git(dir, args).map_err(|err| PrepareError::Git {
        dir: dir.to_owned(),
        message: format!("{}; install git", exec::describe(&err)),
    })?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(PrepareError::Git {
            dir: dir.to_owned(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
