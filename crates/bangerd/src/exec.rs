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
    let output = tokio::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "banger"])
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
