//! Where banger keeps things, following the XDG base directory spec.
//!
//! | what | where |
//! | --- | --- |
//! | config | `$XDG_CONFIG_HOME/banger/config.toml` |
//! | database, VMs, images, kernels, logs, SSH key | `$XDG_STATE_HOME/banger/` |
//! | downloads (OCI layers, catalog artifacts) | `$XDG_CACHE_HOME/banger/` |
//! | daemon socket and lock | `$XDG_RUNTIME_DIR/banger/` (else `<state>/run/`) |

use std::path::{Path, PathBuf};

use crate::Id;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub home: PathBuf,
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub runtime_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("HOME is not set; banger needs a home directory to find its config and state")]
    NoHome,
    #[error("{var} is set to a relative path ({value}); XDG directories must be absolute")]
    Relative { var: &'static str, value: String },
}

impl Layout {
    /// Reads `HOME` and the `XDG_*` variables.
    pub fn from_env() -> Result<Self, LayoutError> {
        Self::from_lookup(|key| {
            std::env::var_os(key).map(|value| value.to_string_lossy().into_owned())
        })
    }

    /// Builds a layout from any variable source (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, LayoutError> {
        let home = lookup("HOME")
            .filter(|home| !home.is_empty())
            .ok_or(LayoutError::NoHome)?;
        let home = PathBuf::from(home);
        let xdg = |var: &'static str, fallback: &str| -> Result<PathBuf, LayoutError> {
            match lookup(var).filter(|value| !value.is_empty()) {
                Some(value) if Path::new(&value).is_absolute() => Ok(PathBuf::from(value)),
                Some(value) => Err(LayoutError::Relative { var, value }),
                None => Ok(home.join(fallback)),
            }
        };
        let config_dir = xdg("XDG_CONFIG_HOME", ".config")?.join("banger");
        let state_dir = xdg("XDG_STATE_HOME", ".local/state")?.join("banger");
        let cache_dir = xdg("XDG_CACHE_HOME", ".cache")?.join("banger");
        let runtime_dir = match lookup("XDG_RUNTIME_DIR").filter(|value| !value.is_empty()) {
            Some(value) if Path::new(&value).is_absolute() => PathBuf::from(value).join("banger"),
            Some(value) => {
                return Err(LayoutError::Relative {
                    var: "XDG_RUNTIME_DIR",
                    value,
                });
            }
            None => state_dir.join("run"),
        };
        Ok(Self {
            home,
            config_dir,
            state_dir,
            cache_dir,
            runtime_dir,
        })
    }

    /// banger's own directories (state, config, cache, runtime), none
    /// inside another: everything banger writes for this user is under them.
    pub fn own_dirs(&self) -> Vec<PathBuf> {
        let all = [
            &self.state_dir,
            &self.config_dir,
            &self.cache_dir,
            &self.runtime_dir,
        ];
        all.iter()
            .filter(|dir| {
                !all.iter()
                    .any(|other| other != *dir && dir.starts_with(other))
            })
            .map(|dir| (*dir).clone())
            .collect()
    }

    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.runtime_dir.join("bangerd.sock")
    }

    /// Held by the running daemon for its whole life.
    pub fn daemon_lock(&self) -> PathBuf {
        self.runtime_dir.join("bangerd.lock")
    }

    /// Held by a CLI while it starts a daemon, so two CLIs never race.
    pub fn spawn_lock(&self) -> PathBuf {
        self.runtime_dir.join("spawn.lock")
    }

    pub fn database(&self) -> PathBuf {
        self.state_dir.join("banger.db")
    }

    pub fn daemon_log(&self) -> PathBuf {
        self.state_dir.join("bangerd.log")
    }

    pub fn vms_dir(&self) -> PathBuf {
        self.state_dir.join("vms")
    }

    pub fn vm_dir(&self, id: &Id) -> PathBuf {
        self.vms_dir().join(id.as_str())
    }

    pub fn images_dir(&self) -> PathBuf {
        self.state_dir.join("images")
    }

    pub fn image_dir(&self, id: &Id) -> PathBuf {
        self.images_dir().join(id.as_str())
    }

    pub fn kernels_dir(&self) -> PathBuf {
        self.state_dir.join("kernels")
    }

    pub fn kernel_dir(&self, id: &Id) -> PathBuf {
        self.kernels_dir().join(id.as_str())
    }

    /// Scratch space for builds that are published atomically.
    pub fn staging_dir(&self) -> PathBuf {
        self.state_dir.join("staging")
    }

    pub fn ssh_dir(&self) -> PathBuf {
        self.state_dir.join("ssh")
    }

    pub fn default_ssh_key(&self) -> PathBuf {
        self.ssh_dir().join("id_ed25519")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.ssh_dir().join("known_hosts")
    }

    /// banger's own ssh_config, `Include`d from `~/.ssh/config` on request.
    pub fn ssh_config(&self) -> PathBuf {
        self.config_dir.join("ssh_config")
    }

    pub fn oci_cache(&self) -> PathBuf {
        self.cache_dir.join("oci")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn layout(vars: &[(&str, &str)]) -> Result<Layout, LayoutError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Layout::from_lookup(|key| map.get(key).cloned())
    }

    #[test]
    fn xdg_variables_win() {
        let layout = layout(&[
            ("HOME", "/home/me"),
            ("XDG_CONFIG_HOME", "/c"),
            ("XDG_STATE_HOME", "/s"),
            ("XDG_CACHE_HOME", "/k"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ])
        .unwrap();
        assert_eq!(layout.config_file(), Path::new("/c/banger/config.toml"));
        assert_eq!(layout.database(), Path::new("/s/banger/banger.db"));
        assert_eq!(
            layout.socket(),
            Path::new("/run/user/1000/banger/bangerd.sock")
        );
        assert_eq!(layout.oci_cache(), Path::new("/k/banger/oci"));
    }

    #[test]
    fn falls_back_to_home() {
        let layout = layout(&[("HOME", "/home/me")]).unwrap();
        assert_eq!(layout.config_dir, Path::new("/home/me/.config/banger"));
        assert_eq!(layout.state_dir, Path::new("/home/me/.local/state/banger"));
        assert_eq!(
            layout.socket(),
            Path::new("/home/me/.local/state/banger/run/bangerd.sock")
        );
        assert_eq!(
            layout.default_ssh_key(),
            Path::new("/home/me/.local/state/banger/ssh/id_ed25519")
        );
        // The runtime dir is inside the state dir here: listed once.
        assert_eq!(
            layout.own_dirs(),
            [
                Path::new("/home/me/.local/state/banger"),
                Path::new("/home/me/.config/banger"),
                Path::new("/home/me/.cache/banger"),
            ]
        );
    }

    #[test]
    fn refuses_missing_home_and_relative_dirs() {
        assert_eq!(layout(&[]), Err(LayoutError::NoHome));
        assert!(matches!(
            layout(&[("HOME", "/h"), ("XDG_STATE_HOME", "rel")]),
            Err(LayoutError::Relative {
                var: "XDG_STATE_HOME",
                ..
            })
        ));
    }
}
