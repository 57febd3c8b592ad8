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
    #[error(
        "the SSH key {path} can be read by other users (mode {mode:o}); ssh refuses such a key"
    )]
    Unprotected { path: PathBuf, mode: u32 },
    #[error("{path} is not an SSH private key ({detail})")]
    NotAKey { path: PathBuf, detail: String },
    #[error("the SSH key {path} has a passphrase; banger runs ssh without prompting")]
    Passphrase { path: PathBuf },
    #[error("{public} is not the public half of {path}")]
    Mismatch { path: PathBuf, public: PathBuf },
    #[error("checking the SSH key {path}")]
    Check {
        path: PathBuf,
        #[source]
        source: crate::exec::ExecError,
    },
}

impl EnsureKeyError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        let own_key = "or drop ssh_key_path from the config to use banger's managed key";
        match self {
            Self::MissingConfigured { path } => Some(format!(
                "create it (`ssh-keygen -t ed25519 -N '' -f {}`), {own_key}",
                path.display()
            )),
            Self::Unprotected { path, .. } => Some(format!("chmod 600 {}", path.display())),
            Self::NotAKey { .. } | Self::Mismatch { .. } => Some(format!(
                "point ssh_key_path at a private key whose .pub sits beside it, {own_key}"
            )),
            Self::Passphrase { path } => Some(format!(
                "make a key without one for banger (`ssh-keygen -t ed25519 -N '' -f {}.banger`) \
                 and set ssh_key_path to it, {own_key}",
                path.display()
            )),
            Self::Check { .. } => Some("install openssh-client (ssh-keygen)".into()),
            Self::Dir { .. } | Self::Generate { .. } | Self::Read { .. } => None,
        }
    }
}

/// Where the key is, and a lock so that only one request generates (or
/// checks) it.
#[derive(Debug)]
pub struct KeyStore {
    private: PathBuf,
    managed: bool,
    generate: Mutex<()>,
    /// The key pair last found good, by the files' inode change times
    /// (which a chmod, a write or a replacement all move).
    checked: std::sync::Mutex<Option<[(i64, i64); 2]>>,
}

impl KeyStore {
    pub fn new(layout: &Layout, config: &Config) -> Self {
        match config.ssh_key_path(&layout.home) {
            Some(private) => Self {
                private,
                managed: false,
                generate: Mutex::new(()),
                checked: std::sync::Mutex::default(),
            },
            None => Self {
                private: layout.default_ssh_key(),
                managed: true,
                generate: Mutex::new(()),
                checked: std::sync::Mutex::default(),
            },
        }
    }

    pub fn private_path(&self) -> &Path {
        &self.private
    }

    /// The key, generated first if it is banger's own and missing.
    pub async fn ensure(&self) -> Result<SshKey, EnsureKeyError> {
        let public_path = public_path_of(&self.private);
        if !self.private.is_file() || !public_path.is_file() {
            if !self.managed {
                return Err(EnsureKeyError::MissingConfigured {
                    path: self.private.clone(),
                });
            }
            let _generating = self.generate.lock().await;
            if !self.private.is_file() {
                self.generate_pair(&public_path).await?;
                tracing::info!(path = %self.private.display(), "generated the managed SSH key");
            }
        }
        let public =
            fs_err::read_to_string(&public_path).map_err(|source| EnsureKeyError::Read {
                path: public_path.clone(),
                source,
            })?;
        self.check(&public_path, &public).await?;
        Ok(SshKey {
            private: self.private.clone(),
            public: public.trim().to_owned(),
        })
    }
}

impl KeyStore {
    /// Generates the pair beside its place and renames it in, `.pub`
    /// first: a request that finds the private key (without the lock)
    /// then always finds its whole public half. A `.pub` alone (a crash
    /// between the renames) is replaced.
    async fn generate_pair(&self, public_path: &Path) -> Result<(), EnsureKeyError> {
        let dir = self.private.parent().expect("key path has a parent");
        create_private_dir(dir)?;
        sweep_unfinished(dir);
        let fresh = tempfile::Builder::new()
            .prefix(".keygen-")
            .tempdir_in(dir)
            .map_err(|source| EnsureKeyError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        let fresh_private = fresh.path().join("key");
        crate::exec::ssh_keygen(&fresh_private)
            .await
            .map_err(|source| EnsureKeyError::Generate {
                path: self.private.clone(),
                source,
            })?;
        let rename = |from: PathBuf, to: &Path| {
            fs_err::rename(from, to).map_err(|source| EnsureKeyError::Dir {
                path: dir.to_owned(),
                source,
            })
        };
        rename(public_path_of(&fresh_private), public_path)?;
        rename(fresh_private, &self.private)
    }

    /// Refuses a key ssh would refuse: readable by others, not a key, one
    /// with a passphrase (ssh runs without a prompt), or a `.pub` of
    /// another key. Checked again only when the files change.
    async fn check(&self, public_path: &Path, public: &str) -> Result<(), EnsureKeyError> {
        use std::os::unix::fs::MetadataExt;
        let read = |path: &Path| {
            fs_err::metadata(path).map_err(|source| EnsureKeyError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let private_meta = read(&self.private)?;
        let public_meta = read(public_path)?;
        let stamp = [
            (private_meta.ctime(), private_meta.ctime_nsec()),
            (public_meta.ctime(), public_meta.ctime_nsec()),
        ];
        if *self.lock_checked() == Some(stamp) {
            return Ok(());
        }
        let mode = private_meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(EnsureKeyError::Unprotected {
                path: self.private.clone(),
                mode,
            });
        }
        let derived = crate::exec::ssh_keygen_public(&self.private)
            .await
            .map_err(|source| EnsureKeyError::Check {
                path: self.private.clone(),
                source,
            })?;
        let derived = match derived {
            Ok(derived) => derived,
            Err(stderr) if stderr.contains("passphrase") => {
                return Err(EnsureKeyError::Passphrase {
                    path: self.private.clone(),
                });
            }
            Err(stderr) => {
                let detail = stderr.rsplit(": ").next().unwrap_or(&stderr).to_owned();
                return Err(EnsureKeyError::NotAKey {
                    path: self.private.clone(),
                    detail: if detail.is_empty() {
                        "ssh-keygen cannot read it".into()
                    } else {
                        detail
                    },
                });
            }
        };
        if key_fields(&derived) != key_fields(public) {
            return Err(EnsureKeyError::Mismatch {
                path: self.private.clone(),
                public: public_path.to_owned(),
            });
        }
        *self.lock_checked() = Some(stamp);
        Ok(())
    }

    fn lock_checked(&self) -> std::sync::MutexGuard<'_, Option<[(i64, i64); 2]>> {
        self.checked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Removes what a daemon killed while generating left (`.keygen-*`).
fn sweep_unfinished(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".keygen-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `type base64` of a public key line (its comment may differ).
fn key_fields(line: &str) -> Vec<&str> {
    line.split_whitespace().take(2).collect()
}

fn public_path_of(private: &Path) -> PathBuf {
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
         \x20   KexAlgorithms {kex}\n\
         \x20   LogLevel ERROR\n",
        key = key.display(),
        kex = banger_model::contract::SSH_KEX_FIRST,
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

    /// Ten `vm create`s at once on a fresh state dir: each one that does
    /// not generate the key must still find a whole pair (CI once saw a
    /// request read the `.pub` while ssh-keygen was writing it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn requests_racing_the_first_key_all_get_it() {
        for _round in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let home = dir.path().to_string_lossy().into_owned();
            let layout = Layout::from_lookup(|key| (key == "HOME").then(|| home.clone())).unwrap();
            // What a daemon killed during ssh-keygen left is swept.
            std::fs::create_dir_all(layout.ssh_dir().join(".keygen-killed")).unwrap();
            let keys = std::sync::Arc::new(KeyStore::new(&layout, &Config::default()));
            let requests = (0..16).map(|_| {
                let keys = keys.clone();
                tokio::spawn(async move { keys.ensure().await })
            });
            let keys: Vec<SshKey> = futures::future::join_all(requests)
                .await
                .into_iter()
                .map(|joined| joined.unwrap().unwrap())
                .collect();
            assert!(keys.iter().all(|key| key.public == keys[0].public));
            let mut left: Vec<_> = std::fs::read_dir(layout.ssh_dir())
                .unwrap()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .collect();
            left.sort();
            assert_eq!(left, ["id_ed25519", "id_ed25519.pub"]);
        }
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

    /// A user's key in `home/.ssh/k`, made by ssh-keygen with `passphrase`.
    async fn user_key(home: &Path, passphrase: &str) -> (KeyStore, PathBuf) {
        let dir = home.join(".ssh");
        std::fs::create_dir_all(&dir).unwrap();
        let private = dir.join("k");
        let out = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", passphrase, "-f"])
            .arg(&private)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let home = home.to_string_lossy().into_owned();
        let layout = Layout::from_lookup(|key| (key == "HOME").then(|| home.clone())).unwrap();
        let config = Config {
            ssh_key_path: Some("~/.ssh/k".into()),
            ..Config::default()
        };
        (KeyStore::new(&layout, &config), private)
    }

    #[tokio::test]
    async fn keys_ssh_would_refuse_are_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (keys, private) = user_key(dir.path(), "").await;
        keys.ensure().await.expect("a good key is accepted");

        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = keys.ensure().await.unwrap_err();
        assert!(
            matches!(err, EnsureKeyError::Unprotected { mode: 0o644, .. }),
            "{err}"
        );
        assert_eq!(
            err.hint().unwrap(),
            format!("chmod 600 {}", private.display())
        );
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();

        let public = public_path_of(&private);
        let original = std::fs::read_to_string(&public).unwrap();
        let other = tempfile::tempdir().unwrap();
        let (_, other_key) = user_key(other.path(), "").await;
        std::fs::copy(public_path_of(&other_key), &public).unwrap();
        let err = keys.ensure().await.unwrap_err();
        assert!(matches!(err, EnsureKeyError::Mismatch { .. }), "{err}");
        std::fs::write(&public, original).unwrap();

        for (content, what) in [("", "empty"), ("hello, not a key\n", "text")] {
            std::fs::write(&private, content).unwrap();
            let err = keys.ensure().await.unwrap_err();
            assert!(
                matches!(err, EnsureKeyError::NotAKey { .. }),
                "{what}: {err}"
            );
            let rpc = crate::errors::ServiceError::from(err).to_wire();
            assert_eq!(rpc.code, banger_rpc::ErrorCode::FailedPrecondition);
            assert!(rpc.hint.is_some());
        }

        let locked = tempfile::tempdir().unwrap();
        let (keys, _) = user_key(locked.path(), "secret words").await;
        let err = keys.ensure().await.unwrap_err();
        assert!(matches!(err, EnsureKeyError::Passphrase { .. }), "{err}");
        assert!(err.hint().unwrap().contains("ssh-keygen -t ed25519 -N ''"));
    }
}
