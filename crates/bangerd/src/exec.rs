//! The programs the daemon runs itself (`ssh-keygen`, `git`), through
//! [`banger_exec`] (VMMs are started by `banger-firecracker`, host tools by
//! `banger-net` and `banger-disk`).

use std::path::Path;

use banger_exec::Cmd;
pub use banger_exec::ExecError;

/// `ssh-keygen -y -P "" -f PATH`: the public key of a private key that
/// needs no passphrase; `Err(stderr)` when ssh-keygen refuses it.
pub async fn ssh_keygen_public(path: &Path) -> Result<Result<String, String>, ExecError> {
    let output = Cmd::new("ssh-keygen")
        .args(["-y", "-P", ""])
        .arg("-f")
        .arg(path)
        .output_async()
        .await?;
    Ok(if output.success() {
        Ok(output.stdout_text().trim().to_owned())
    } else {
        Err(output.stderr_text().trim().to_owned())
    })
}

/// `ssh-keygen -t ed25519 -N "" -C banger -f PATH -q`
pub async fn ssh_keygen(path: &Path) -> Result<(), ExecError> {
    ssh_keygen_ed25519(path, "banger").await
}

/// `ssh-keygen -t ed25519 -N "" -C COMMENT -f PATH -q`: a key pair without
/// a passphrase at PATH and PATH.pub.
pub async fn ssh_keygen_ed25519(path: &Path, comment: &str) -> Result<(), ExecError> {
    Cmd::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment])
        .arg("-f")
        .arg(path)
        .run_async()
        .await?;
    Ok(())
}

/// `git config --global --get KEY` for the user whose home is `home`: the
/// value, or `None` when git, the file or the key is missing.
pub async fn git_global_get(home: &Path, key: &str) -> Option<String> {
    let output = Cmd::new("git")
        .args(["config", "--global", "--get", key])
        .env("HOME", home)
        .run_async()
        .await
        .ok()?;
    let value = String::from_utf8(output.stdout).ok()?;
    let value = value.trim_end_matches('\n');
    (!value.is_empty()).then(|| value.to_owned())
}

/// `git config --file FILE KEY VALUE`: git's own writer edits the file.
pub async fn git_config_file_set(file: &Path, key: &str, value: &str) -> Result<(), ExecError> {
    Cmd::new("git")
        .args(["config", "--file"])
        .arg(file)
        .args([key, value])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .run_async()
        .await?;
    Ok(())
}
