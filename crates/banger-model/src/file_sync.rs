//! `[[file_sync]]`: host files and directories copied into the guest's
//! `/root` when a VM starts.
//!
//! Rules: the host path is absolute or `~/…`; the guest path is under `~/`
//! or `/root/`; no `..` anywhere; no `~user`; `mode` is octal (files only,
//! default 0600). Errors name the entry by its index.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default mode for synced files.
pub const DEFAULT_FILE_MODE: u32 = 0o600;

/// One entry as written in `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileSync {
    pub host: String,
    pub guest: String,
    #[serde(default)]
    pub mode: Option<String>,
}

/// Where a host path lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostPath {
    Absolute(PathBuf),
    /// Relative to the host user's home directory.
    Home(PathBuf),
}

impl HostPath {
    /// Resolves against `home`.
    pub fn resolve(&self, home: &Path) -> PathBuf {
        match self {
            Self::Absolute(path) => path.clone(),
            Self::Home(rel) => home.join(rel),
        }
    }
}

/// A validated entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSync {
    pub host: HostPath,
    /// Path relative to the guest's `/root`.
    pub guest: PathBuf,
    /// Mode for a file entry; directories keep their source modes.
    pub mode: Option<u32>,
}

impl FileSync {
    /// The guest path as an absolute path: `/root/<guest>`.
    pub fn guest_absolute(&self) -> PathBuf {
        Path::new("/root").join(&self.guest)
    }

    pub fn file_mode(&self) -> u32 {
        self.mode.unwrap_or(DEFAULT_FILE_MODE)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("file_sync[{index}]: {problem}")]
pub struct FileSyncError {
    pub index: usize,
    pub problem: String,
}

/// Validates every entry; the first bad one is reported by index.
pub fn validate_all(raw: &[RawFileSync]) -> Result<Vec<FileSync>, FileSyncError> {
    raw.iter()
        .enumerate()
        .map(|(index, entry)| validate(entry).map_err(|problem| FileSyncError { index, problem }))
        .collect()
}

fn validate(entry: &RawFileSync) -> Result<FileSync, String> {
    let host = parse_host(&entry.host)?;
    let guest = parse_guest(&entry.guest)?;
    let mode = entry.mode.as_deref().map(parse_mode).transpose()?;
    Ok(FileSync { host, guest, mode })
}

fn parse_host(raw: &str) -> Result<HostPath, String> {
    if raw.is_empty() {
        return Err("host path is empty".into());
    }
    if let Some(rest) = raw.strip_prefix("~/") {
        let rel = checked_relative(rest, "host")?;
        return Ok(HostPath::Home(rel));
    }
    if raw.starts_with('~') {
        return Err(format!(
            "host path {raw:?} uses ~user; only ~/ (your own home) is supported"
        ));
    }
    if !raw.starts_with('/') {
        return Err(format!(
            "host path {raw:?} must be absolute or start with ~/"
        ));
    }
    reject_parent(raw, "host")?;
    Ok(HostPath::Absolute(PathBuf::from(raw)))
}

fn parse_guest(raw: &str) -> Result<PathBuf, String> {
    if raw.is_empty() {
        return Err("guest path is empty".into());
    }
    let rest = if let Some(rest) = raw.strip_prefix("~/") {
        rest
    } else if let Some(rest) = raw.strip_prefix("/root/") {
        rest
    } else if raw.starts_with('~') && raw != "~" {
        return Err(format!("guest path {raw:?} uses ~user; use ~/ or /root/"));
    } else {
        return Err(format!(
            "guest path {raw:?} must be under ~/ or /root/ (the guest's work disk)"
        ));
    };
    checked_relative(rest, "guest")
}

fn checked_relative(rest: &str, which: &str) -> Result<PathBuf, String> {
    reject_parent(rest, which)?;
    let path: PathBuf = Path::new(rest)
        .components()
        .filter(|component| matches!(component, Component::Normal(_)))
        .collect();
    if path.as_os_str().is_empty() {
        return Err(format!(
            "{which} path names the home directory itself; name a file or directory in it"
        ));
    }
    Ok(path)
}

fn reject_parent(raw: &str, which: &str) -> Result<(), String> {
    if Path::new(raw)
        .components()
        .any(|component| component == Component::ParentDir)
    {
        return Err(format!("{which} path {raw:?} must not contain '..'"));
    }
    Ok(())
}

fn parse_mode(raw: &str) -> Result<u32, String> {
    let digits = raw.strip_prefix("0o").unwrap_or(raw);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(format!(
            "mode {raw:?} is not an octal file mode such as \"0600\""
        ));
    }
    u32::from_str_radix(digits, 8).map_err(|_| format!("mode {raw:?} is not octal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(host: &str, guest: &str, mode: Option<&str>) -> RawFileSync {
        RawFileSync {
            host: host.into(),
            guest: guest.into(),
            mode: mode.map(Into::into),
        }
    }

    #[test]
    fn accepts_good_entries() {
        let entries = validate_all(&[
            raw("~/.aws", "~/.aws", None),
            raw("/etc/hosts", "/root/etc/hosts", Some("0644")),
            raw("~/bin/tool", "~/bin/tool", Some("755")),
        ])
        .unwrap();
        assert_eq!(entries[0].host, HostPath::Home(".aws".into()));
        assert_eq!(entries[0].guest_absolute(), Path::new("/root/.aws"));
        assert_eq!(entries[0].file_mode(), 0o600);
        assert_eq!(entries[1].host, HostPath::Absolute("/etc/hosts".into()));
        assert_eq!(entries[1].guest, Path::new("etc/hosts"));
        assert_eq!(entries[1].mode, Some(0o644));
        assert_eq!(entries[2].mode, Some(0o755));
        assert_eq!(
            entries[0].host.resolve(Path::new("/home/me")),
            Path::new("/home/me/.aws")
        );
    }

    #[test]
    fn one_error_per_bad_shape_naming_the_index() {
        let cases: &[(RawFileSync, &str)] = &[
            (raw("", "~/x", None), "host path is empty"),
            (raw("~/x", "", None), "guest path is empty"),
            (raw("relative/file", "~/x", None), "must be absolute"),
            (raw("~bob/x", "~/x", None), "~user"),
            (raw("~/x", "~bob/x", None), "~user"),
            (raw("/etc/x", "/etc/x", None), "must be under ~/ or /root/"),
            (
                raw("/etc/x", "relative", None),
                "must be under ~/ or /root/",
            ),
            (raw("/etc/../x", "~/x", None), "'..'"),
            (raw("~/../x", "~/x", None), "'..'"),
            (raw("~/x", "~/a/../../x", None), "'..'"),
            (raw("~/x", "/root/../etc/x", None), "'..'"),
            (raw("~/x", "~/", None), "home directory itself"),
            (raw("~/x", "~/x", Some("rw")), "octal"),
            (raw("~/x", "~/x", Some("0800")), "octal"),
            (raw("~/x", "~/x", Some("")), "octal"),
            (raw("~/x", "~/x", Some("77777")), "octal"),
        ];
        for (entry, expected) in cases {
            let good = raw("~/ok", "~/ok", None);
            let err = validate_all(&[good, entry.clone()]).unwrap_err();
            assert_eq!(err.index, 1, "{entry:?}");
            let message = err.to_string();
            assert!(message.starts_with("file_sync[1]: "), "{message}");
            assert!(message.contains(expected), "{entry:?}: {message}");
        }
    }
}
