//! Files in banger's own directories that belong to another user: what a
//! root daemon (`sudo -E banger …`) leaves in a user's XDG dirs, which a
//! daemon running as that user can then neither read nor replace.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How many offending paths a report keeps (the count covers them all).
const KEEP: usize = 5;

/// What [`foreign_owned`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForeignFiles {
    /// How many entries belong to another uid.
    pub count: usize,
    /// The first few of them, with their owner's uid.
    pub first: Vec<(PathBuf, u32)>,
    /// Entries that could not be looked at (unreadable directories).
    pub unreadable: Vec<PathBuf>,
}

impl ForeignFiles {
    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.unreadable.is_empty()
    }

    /// `3 files …, e.g. PATH (uid 0)` for messages.
    pub fn summary(&self) -> String {
        let mut text = match self.count {
            0 => String::new(),
            1 => "1 file belongs to another user".to_owned(),
            count => format!("{count} files belong to another user"),
        };
        if let Some((path, uid)) = self.first.first() {
            text.push_str(&format!(", e.g. {} (uid {uid})", path.display()));
        }
        if let Some(path) = self.unreadable.first() {
            if !text.is_empty() {
                text.push_str("; ");
            }
            text.push_str(&format!("{} cannot be read", path.display()));
        }
        text
    }
}

/// Walks `dirs` (those that exist) without following symlinks or leaving
/// the filesystem each one is on, and reports every entry whose owner is
/// not `uid`.
pub fn foreign_owned(dirs: &[PathBuf], uid: u32) -> ForeignFiles {
    let mut found = ForeignFiles::default();
    for dir in dirs {
        let Ok(meta) = fs::symlink_metadata(dir) else {
            continue;
        };
        walk(dir, &meta, meta.dev(), uid, &mut found);
    }
    found
}

fn walk(path: &Path, meta: &fs::Metadata, dev: u64, uid: u32, found: &mut ForeignFiles) {
    if meta.uid() != uid {
        found.count += 1;
        if found.first.len() < KEEP {
            found.first.push((path.to_owned(), meta.uid()));
        }
    }
    if !meta.is_dir() || meta.dev() != dev {
        return;
    }
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(_) => {
            if found.unreadable.len() < KEEP {
                found.unreadable.push(path.to_owned());
            }
            return;
        }
    };
    for entry in entries.flatten() {
        let child = entry.path();
        if let Ok(meta) = fs::symlink_metadata(&child) {
            walk(&child, &meta, dev, uid, found);
        }
    }
}

/// The one command that gives `dirs` back to the user: `sudo chown -R
/// NAME: DIR…` (owner and login group; the bare uid when it has no name).
pub fn fix_command(dirs: &[PathBuf], uid: u32) -> String {
    let owner = nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |user| format!("{}:", user.name));
    let mut command = format!("sudo chown -R {owner}");
    for dir in dirs.iter().filter(|dir| dir.exists()) {
        command.push(' ');
        command.push_str(&banger_model::shell::quote(&dir.display().to_string()));
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn finds_what_another_uid_owns_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        fs::create_dir_all(root.join("vms/a")).unwrap();
        fs::write(root.join("vms/a/disk"), b"x").unwrap();
        fs::write(root.join("mine"), b"x").unwrap();
        symlink("/etc", root.join("link")).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(
            foreign_owned(std::slice::from_ref(&root), me),
            ForeignFiles::default()
        );

        // As another uid, every entry is foreign; the symlink is counted,
        // never followed into /etc.
        let other = me + 1;
        let found = foreign_owned(&[root.clone(), dir.path().join("absent")], other);
        assert_eq!(found.count, 6, "{found:?}");
        assert_eq!(found.first.len(), KEEP);
        assert_eq!(found.first[0], (root.clone(), me));
        assert!(
            found
                .summary()
                .starts_with("6 files belong to another user, e.g. ")
        );
    }

    #[test]
    fn root_chowns_a_real_tree_and_the_walk_sees_it() {
        if !banger_testkit::root_or_skip(
            "root_chowns_a_real_tree_and_the_walk_sees_it",
            "chown to another uid",
        ) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("ssh")).unwrap();
        fs::write(dir.path().join("ssh/id_ed25519"), b"key").unwrap();
        nix::unistd::chown(
            &dir.path().join("ssh/id_ed25519"),
            Some(4242.into()),
            Some(4242.into()),
        )
        .unwrap();
        let found = foreign_owned(&[dir.path().to_owned()], 0);
        assert_eq!(found.count, 1);
        assert_eq!(found.first, vec![(dir.path().join("ssh/id_ed25519"), 4242)]);
    }

    #[test]
    fn the_fix_names_the_user_and_quotes_odd_paths() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("my state");
        fs::create_dir(&odd).unwrap();
        let command = fix_command(&[odd.clone(), dir.path().join("absent")], 0);
        assert_eq!(command, format!("sudo chown -R root: '{}'", odd.display()));
        let command = fix_command(&[dir.path().to_owned()], 4_000_000);
        assert_eq!(
            command,
            format!("sudo chown -R 4000000 {}", dir.path().display())
        );
    }
}
