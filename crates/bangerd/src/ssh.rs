//! The SSH key banger seeds into guests, and banger's own `ssh_config`.
//!
//! The managed key lives at `<state>/ssh/id_ed25519` and is generated on
//! first use; `ssh_key_path` in config points at a key of the user's own,
//! which banger never generates, moves or deletes. Guest host keys are
//! pinned per VM name in `<state>/ssh/known_hosts.d/<name>.vm`: each VM's
//! ed25519 host key is made on the host at create and written there and
//! into its root disk, so the first connection already checks it. `vm
//! delete` removes the file, so a new VM reusing a name is never a host-key
//! mismatch and nothing ever prompts.

use std::path::{Path, PathBuf};

use banger_model::config::Config;
use banger_model::layout::Layout;
use tokio::sync::Mutex;

#[derive(Debug, Clone)]
pub struct SshKey {
    pub private: PathBuf,
    /// The `.pub` line, as written into `authorized_keys`.
    pub public: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EnsureKeyError {
    #[error("ssh_key_path {path} does not exist (or its .pub is missing)")]
    MissingConfigured { path: PathBuf },
    #[error("creating {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("generating the SSH key {path}")]
    Generate {
        path: PathBuf,
        #[source]
        source: crate::exec::ExecError,
    },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the key is, and a lock so that only one request generates it.
#[derive(Debug)]
pub struct KeyStore {
    private: PathBuf,
    managed: bool,
    generate: Mutex<()>,
}

impl KeyStore {
    pub fn new(layout: &Layout, config: &Config) -> Self {
        match config.ssh_key_path(&layout.home) {
            Some(private) => Self {
                private,
                managed: false,
                generate: Mutex::new(()),
            },
            None => Self {
                private: layout.default_ssh_key(),
                managed: true,
                generate: Mutex::new(()),
            },
        }
    }

    pub fn private_path(&self) -> &Path {
        &self.private
    }

    /// The key, generated first if it is banger's own and missing.
    pub async fn ensure(&self) -> Result<SshKey, EnsureKeyError> {
        let public_path = public_path(&self.private);
        if !self.private.is_file() || !public_path.is_file() {
            if !self.managed {
                return Err(EnsureKeyError::MissingConfigured {
                    path: self.private.clone(),
                });
            }
            let _generating = self.generate.lock().await;
            if !self.private.is_file() {
                let dir = self.private.parent().expect("key path has a parent");
                create_private_dir(dir)?;
                // A half-written pair (crash between the two files) is replaced.
                let _ = fs_err::remove_file(&public_path);
                crate::exec::ssh_keygen(&self.private)
                    .await
                    .map_err(|source| EnsureKeyError::Generate {
                        path: self.private.clone(),
                        source,
                    })?;
                tracing::info!(path = %self.private.display(), "generated the managed SSH key");
            }
        }
        let public =
            fs_err::read_to_string(&public_path).map_err(|source| EnsureKeyError::Read {
                path: public_path.clone(),
                source,
            })?;
        Ok(SshKey {
            private: self.private.clone(),
            public: public.trim().to_owned(),
        })
    }
}

fn public_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

fn create_private_dir(dir: &Path) -> Result<(), EnsureKeyError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| EnsureKeyError::Dir {
            path: dir.to_owned(),
            source,
        })
}

/// Directory of per-VM known_hosts files.
pub fn known_hosts_dir(layout: &Layout) -> PathBuf {
    layout.ssh_dir().join("known_hosts.d")
}

/// The known_hosts file for one VM.
pub fn known_hosts_file(layout: &Layout, vm_name: &str) -> PathBuf {
    known_hosts_dir(layout).join(format!("{vm_name}.vm"))
}

/// Writes the known_hosts file `path` with one line: `host` has `public`
/// (an `ssh-ed25519 AAAA… comment` line), replacing what was there.
pub fn pin_host_key(path: &Path, host: &str, public: &str) -> std::io::Result<()> {
    let mut words = public.split_whitespace();
    let (Some(kind), Some(key)) = (words.next(), words.next()) else {
        return Err(std::io::Error::other(format!(
            "not an OpenSSH public key line: {public:?}"
        )));
    };
    if let Some(dir) = path.parent() {
        fs_err::create_dir_all(dir)?;
    }
    let temp = path.with_extension("tmp");
    fs_err::write(&temp, format!("{host} {kind} {key}\n"))?;
    fs_err::rename(&temp, path)
}

/// banger's `ssh_config` text: `ssh NAME.vm` with the managed key, as root.
pub fn ssh_config_text(layout: &Layout, key: &Path) -> String {
    format!(
        "# Written by bangerd; changes are overwritten.\n\
         # Use it from ~/.ssh/config with `banger ssh-config --install`.\n\
         Host *.vm\n\
         \x20   User root\n\
         \x20   IdentityFile {key}\n\
         \x20   IdentitiesOnly yes\n\
         \x20   UserKnownHostsFile {known}/%h\n\
         \x20   StrictHostKeyChecking accept-new\n\
         \x20   LogLevel ERROR\n",
        key = key.display(),
        known = known_hosts_dir(layout).display(),
    )
}

/// Writes banger's `ssh_config` (only banger's own file; `~/.ssh/config` is
/// touched only by `banger ssh-config --install`).
pub fn write_ssh_config(layout: &Layout, key: &Path) -> std::io::Result<()> {
    let path = layout.ssh_config();
    if let Some(dir) = path.parent() {
        fs_err::create_dir_all(dir)?;
    }
    let text = ssh_config_text(layout, key);
    if fs_err::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    let temp = path.with_extension("tmp");
    fs_err::write(&temp, text)?;
    fs_err::rename(&temp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_host_key_is_one_known_hosts_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts.d/box.vm");
        pin_host_key(&file, "box.vm", "ssh-ed25519 AAAAC3Nza root@box").unwrap();
        assert_eq!(
            fs_err::read_to_string(&file).unwrap(),
            "box.vm ssh-ed25519 AAAAC3Nza\n"
        );
        pin_host_key(&file, "box.vm", "ssh-ed25519 BBBB root@box").unwrap();
        assert_eq!(
            fs_err::read_to_string(&file).unwrap(),
            "box.vm ssh-ed25519 BBBB\n"
        );
        assert!(pin_host_key(&file, "box.vm", "garbage").is_err());
    }

    #[test]
    fn ssh_config_points_at_key_and_known_hosts() {
        let layout =
            Layout::from_lookup(|key| (key == "HOME").then(|| "/home/me".to_owned())).unwrap();
        let text = ssh_config_text(
            &layout,
            Path::new("/home/me/.local/state/banger/ssh/id_ed25519"),
        );
        assert!(text.contains("Host *.vm\n"));
        assert!(text.contains("IdentityFile /home/me/.local/state/banger/ssh/id_ed25519\n"));
        assert!(
            text.contains("UserKnownHostsFile /home/me/.local/state/banger/ssh/known_hosts.d/%h\n")
        );
        assert!(text.contains("StrictHostKeyChecking accept-new"));
    }

    #[tokio::test]
    async fn managed_key_is_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_string_lossy().into_owned();
        let layout = Layout::from_lookup(|key| (key == "HOME").then(|| home.clone())).unwrap();
        let keys = KeyStore::new(&layout, &Config::default());
        let first = keys.ensure().await.unwrap();
        assert!(first.public.starts_with("ssh-ed25519 "), "{}", first.public);
        let second = keys.ensure().await.unwrap();
        assert_eq!(first.public, second.public);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(layout.ssh_dir())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[tokio::test]
    async fn a_configured_key_is_never_generated() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_string_lossy().into_owned();
        let layout = Layout::from_lookup(|key| (key == "HOME").then(|| home.clone())).unwrap();
        let config = Config {
            ssh_key_path: Some("~/.ssh/mine".into()),
            ..Config::default()
        };
        let keys = KeyStore::new(&layout, &config);
        let err = keys.ensure().await.unwrap_err();
        assert!(
            matches!(err, EnsureKeyError::MissingConfigured { .. }),
            "{err}"
        );
        assert!(!dir.path().join(".ssh/mine").exists());
    }
}
