//! The host user's git identity (`user.name`, `user.email` from their
//! global git config) in the guest's `/root/.gitconfig`, written into the
//! work disk at every VM start: commits made in any VM carry the user's
//! name, with or without a workspace. Other settings in the guest's file
//! are kept (git's own writer sets the two keys).

use std::path::Path;

use crate::exec;

/// The identity git would use on the host, each part when set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitIdentity {
    pub name: Option<String>,
    pub email: Option<String>,
}

impl GitIdentity {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.email.is_none()
    }
}

/// `git config --global user.name/user.email` for the user whose home is
/// `home` (empty when git or the settings are missing).
pub async fn host(home: &Path) -> GitIdentity {
    let (name, email) = tokio::join!(
        exec::git_global_get(home, "user.name"),
        exec::git_global_get(home, "user.email")
    );
    GitIdentity { name, email }
}

#[derive(Debug, thiserror::Error)]
pub enum MergeGitconfigError {
    #[error("staging the guest's .gitconfig")]
    Stage(#[source] std::io::Error),
    #[error(transparent)]
    Git(#[from] exec::ExecError),
}

/// The guest's `.gitconfig` (`existing`, when it has one) with `identity`
/// set in it.
pub async fn merge(
    existing: Option<&[u8]>,
    identity: &GitIdentity,
) -> Result<Vec<u8>, MergeGitconfigError> {
    let dir = tempfile::Builder::new()
        .prefix("banger-gitconfig-")
        .tempdir()
        .map_err(MergeGitconfigError::Stage)?;
    let file = dir.path().join("gitconfig");
    fs_err::write(&file, existing.unwrap_or_default()).map_err(MergeGitconfigError::Stage)?;
    for (key, value) in [
        ("user.name", &identity.name),
        ("user.email", &identity.email),
    ] {
        if let Some(value) = value {
            exec::git_config_file_set(&file, key, value).await?;
        }
    }
    fs_err::read(&file).map_err(MergeGitconfigError::Stage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_git() -> bool {
        std::process::Command::new("git")
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    }

    #[tokio::test]
    async fn reads_the_global_identity_and_merges_it_keeping_other_settings() {
        if !have_git() {
            eprintln!("skipped: git is not installed");
            return;
        }
        let home = tempfile::tempdir().unwrap();
        assert!(host(home.path()).await.is_empty());
        fs_err::write(
            home.path().join(".gitconfig"),
            "[user]\n\tname = Ada \\\"The\\\" Lovelace\n\temail = ada@example.com\n",
        )
        .unwrap();
        let identity = host(home.path()).await;
        assert_eq!(identity.name.as_deref(), Some("Ada \"The\" Lovelace"));
        assert_eq!(identity.email.as_deref(), Some("ada@example.com"));

        let existing = b"[alias]\n\tco = checkout\n[user]\n\tname = Old Name\n";
        let merged = merge(Some(existing), &identity).await.unwrap();
        let text = String::from_utf8(merged).unwrap();
        assert!(text.contains("co = checkout"), "{text}");
        assert!(!text.contains("Old Name"), "{text}");
        // What git reads back from the merged file.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        fs_err::write(&file, &text).unwrap();
        let out = std::process::Command::new("git")
            .args(["config", "--file"])
            .arg(&file)
            .args(["--get", "user.name"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "Ada \"The\" Lovelace\n"
        );

        let fresh = merge(None, &identity).await.unwrap();
        assert!(
            String::from_utf8(fresh)
                .unwrap()
                .contains("ada@example.com")
        );
    }
}
