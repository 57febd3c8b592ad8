//! Every process the daemon starts itself (VMMs are started by
//! `banger-firecracker`, host tools by `banger-net` and `banger-disk`).

use std::path::Path;
use std::process::Stdio;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
}

/// `ssh-keygen -y -P "" -f PATH`: the public key of a private key that
/// needs no passphrase; `Err(stderr)` when ssh-keygen refuses it.
pub async fn ssh_keygen_public(path: &Path) -> Result<Result<String, String>, ExecError> {
    let output = tokio::process::Command::new("ssh-keygen")
        .args(["-y", "-P", ""])
        .arg("-f")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| ExecError::Spawn {
            program: "ssh-keygen".into(),
            source,
        })?;
    Ok(if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    })
}

/// `ssh-keygen -t ed25519 -N "" -C banger -f PATH -q`
pub async fn ssh_keygen(path: &Path) -> Result<(), ExecError> {
    ssh_keygen_ed25519(path, "banger").await
}

/// `ssh-keygen -t ed25519 -N "" -C COMMENT -f PATH -q`: a key pair without
/// a passphrase at PATH and PATH.pub.
pub async fn ssh_keygen_ed25519(path: &Path, comment: &str) -> Result<(), ExecError> {
    let output = tokio::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment])
        .arg("-f")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| ExecError::Spawn {
            program: "ssh-keygen".into(),
            source,
        })?;
    if !output.status.success() {
        return Err(ExecError::Failed {
            program: "ssh-keygen".into(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// `git config --global --get KEY` for the user whose home is `home`: the
/// value, or `None` when git, the file or the key is missing.
pub async fn git_global_get(home: &Path, key: &str) -> Option<String> {
    let output = tokio::process::Command::new("git")
        .args(["config", "--global", "--get", key])
        .env("HOME", home)
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let value = String::from_utf8(output.stdout).ok()?;
    let value = value.trim_end_matches('\n');
    (!value.is_empty()).then(|| value.to_owned())
}

/// `git config --file FILE KEY VALUE`: git's own writer edits the file.
pub async fn git_config_file_set(file: &Path, key: &str, value: &str) -> Result<(), ExecError> {
    let output = tokio::process::Command::new("git")
        .args(["config", "--file"])
        .arg(file)
        .args([key, value])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| ExecError::Spawn {
            program: "git".into(),
            source,
        })?;
    if !output.status.success() {
        return Err(ExecError::Failed {
            program: "git config".into(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}
