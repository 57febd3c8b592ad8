//! Downloading packages with the host's `apt-get` under a private
//! configuration, without installing them and without touching the host's
//! apt state.
//!
//! Everything lives under one directory in banger's cache
//! (`<cache>/apt/<distro>-amd64/`): `apt.conf` (passed as `APT_CONFIG`, so
//! the host's `/etc/apt/apt.conf.d` is never read), `sources.list` naming
//! one mirror and `signed-by` the distribution's archive keyring, the index
//! lists, apt's cache, an empty dpkg status file, and the downloaded `.deb`s.
//!
//! Trust: `apt-get update` accepts the mirror's `InRelease` only when it is
//! signed by a key in the archive keyring (`signed-by`; no other keyring is
//! configured), and takes the `Packages` index only when its hash matches the
//! one in the signed `InRelease`; `apt-get download` keeps a `.deb` only when
//! its SHA256 matches the one in that index. A `.deb` already in the cache is
//! checked the same way and fetched again when it differs.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::distro::{ARCH, Distro};
use crate::exec::{self, ExecError, Invocation};

/// A private apt environment for one distribution release and mirror.
#[derive(Debug, Clone)]
pub struct AptEnv {
    root: PathBuf,
    distro: Distro,
    mirror: String,
}

/// A package as the mirror's index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The `Depends:` field, one entry per comma (alternatives kept as written).
    pub depends: Vec<String>,
    pub sha256: Option<String>,
}

impl PackageInfo {
    /// The file name `apt-get download` gives it (`:` in versions becomes `%3a`).
    pub fn file_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.architecture
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AptError {
    #[error(
        "apt-get is not installed; the kernel bootstrap downloads packages with it (install apt)"
    )]
    NoApt,
    #[error("the {distro} archive keyring {keyring} is missing (install {package})")]
    NoKeyring {
        distro: String,
        keyring: String,
        package: String,
    },
    #[error("preparing the private apt directory {path}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the mirror {mirror}: {detail} (log: {log})")]
    Unreachable {
        mirror: String,
        detail: String,
        log: PathBuf,
    },
    #[error(
        "the mirror {mirror} is not signed by the {distro} archive keyring: {detail} (log: {log})"
    )]
    Signature {
        mirror: String,
        distro: String,
        detail: String,
        log: PathBuf,
    },
    #[error("package {package} is not in {mirror} ({distro})")]
    NoPackage {
        package: String,
        mirror: String,
        distro: String,
    },
    #[error("{package} depends on no versioned kernel package ({depends})")]
    NoKernelDependency { package: String, depends: String },
    #[error("apt-get {what} failed ({status}): {detail} (log: {log})")]
    Failed {
        what: String,
        status: String,
        detail: String,
        log: PathBuf,
    },
    #[error("the download finished but {path} is missing")]
    Missing { path: PathBuf },
    #[error(transparent)]
    Exec(#[from] ExecError),
}

impl AptEnv {
    /// The environment for `distro` from `mirror`, under `cache_dir`.
    pub fn new(cache_dir: &Path, distro: &Distro, mirror: &str) -> Self {
        Self {
            root: cache_dir
                .join("apt")
                .join(format!("{}-{ARCH}", distro.slug())),
            distro: distro.clone(),
            mirror: mirror.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn mirror(&self) -> &str {
        &self.mirror
    }

    /// Where downloaded `.deb`s are kept (and reused).
    pub fn debs_dir(&self) -> PathBuf {
        self.root.join("debs")
    }

    /// apt's output for the current operation.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("apt.log")
    }

    fn config_path(&self) -> PathBuf {
        self.root.join("apt.conf")
    }

    /// Writes the configuration, sources and directories, and starts a new log.
    pub fn prepare(&self) -> Result<(), AptError> {
        if exec::locate("apt-get").is_none() || exec::locate("apt-cache").is_none() {
            return Err(AptError::NoApt);
        }
        if !crate::keyring_present(&self.distro) {
            return Err(AptError::NoKeyring {
                distro: self.distro.to_string(),
                keyring: self.distro.keyring.to_owned(),
                package: self.distro.keyring_package.to_owned(),
            });
        }
        let root = &self.root;
        let prepare = |path: &Path, result: std::io::Result<()>| {
            result.map_err(|source| AptError::Prepare {
                path: path.to_owned(),
                source,
            })
        };
        for dir in [
            root.join("etc/apt.conf.d"),
            root.join("etc/preferences.d"),
            root.join("etc/sources.list.d"),
            root.join("etc/trusted.gpg.d"),
            root.join("lists/partial"),
            root.join("cache/archives/partial"),
            root.join("state"),
            self.debs_dir(),
        ] {
            prepare(&dir, fs_err::create_dir_all(&dir))?;
        }
        let status = root.join("state/status");
        if !status.exists() {
            prepare(&status, fs_err::write(&status, b""))?;
        }
        let sources = root.join("etc/sources.list");
        prepare(
            &sources,
            fs_err::write(
                &sources,
                format!(
                    "deb [signed-by={}] {} {} main\n",
                    self.distro.keyring, self.mirror, self.distro.release
                ),
            ),
        )?;
        let config = self.config_path();
        prepare(&config, fs_err::write(&config, self.config_text()))?;
        let log = self.log_path();
        prepare(&log, fs_err::write(&log, b""))?;
        Ok(())
    }

    /// The private `apt.conf`: every directory apt reads or writes is ours.
    fn config_text(&self) -> String {
        let root = self.root.display();
        format!(
            "// Written by banger: a private apt for downloading {distro} packages.\n\
             Dir::Etc \"{root}/etc\";\n\
             Dir::Etc::main \"{root}/etc/apt.conf.unused\";\n\
             Dir::Etc::parts \"{root}/etc/apt.conf.d\";\n\
             Dir::Etc::sourcelist \"{root}/etc/sources.list\";\n\
             Dir::Etc::sourceparts \"{root}/etc/sources.list.d\";\n\
             Dir::Etc::preferences \"{root}/etc/preferences\";\n\
             Dir::Etc::preferencesparts \"{root}/etc/preferences.d\";\n\
             Dir::Etc::trusted \"{root}/etc/trusted.gpg\";\n\
             Dir::Etc::trustedparts \"{root}/etc/trusted.gpg.d\";\n\
             Dir::State \"{root}/state\";\n\
             Dir::State::lists \"{root}/lists\";\n\
             Dir::State::status \"{root}/state/status\";\n\
             Dir::Cache \"{root}/cache\";\n\
             Dir::Log \"{root}/state\";\n\
             APT::Architecture \"{ARCH}\";\n\
             APT::Architectures {{ \"{ARCH}\"; }};\n\
             APT::Sandbox::User \"root\";\n\
             Acquire::Languages \"none\";\n\
             Acquire::Retries \"2\";\n\
             Acquire::http::Timeout \"30\";\n",
            distro = self.distro,
        )
    }

    fn invocation(&self, program: &str) -> Result<Invocation, AptError> {
        let path = exec::locate(program).ok_or(AptError::NoApt)?;
        Ok(Invocation::new(path)
            .env("APT_CONFIG", self.config_path())
            .env("DEBIAN_FRONTEND", "noninteractive"))
    }

    /// `apt-get update`: fetches and verifies the signed indices.
    pub async fn update(&self, cancel: &CancellationToken) -> Result<(), AptError> {
        let invocation = self
            .invocation("apt-get")?
            .args(["update", "--error-on=any", "-q"]);
        let finished = exec::run(&invocation, Some(&self.log_path()), &mut |_| {}, cancel).await?;
        if !finished.status.success() {
            return Err(self.classify("update", &finished));
        }
        Ok(())
    }

    /// `apt-cache show` of the candidate version of `package`.
    pub async fn show(
        &self,
        package: &str,
        cancel: &CancellationToken,
    ) -> Result<PackageInfo, AptError> {
        let invocation = self
            .invocation("apt-cache")?
            .args(["show", "--no-all-versions", package]);
        let finished = exec::run(&invocation, None, &mut |_| {}, cancel).await?;
        let info = parse_show(&finished.stdout);
        match info {
            Some(info) if finished.status.success() => Ok(info),
            _ => Err(AptError::NoPackage {
                package: package.to_owned(),
                mirror: self.mirror.clone(),
                distro: self.distro.to_string(),
            }),
        }
    }

    /// The versioned kernel package a kernel metapackage depends on.
    pub async fn kernel_package(
        &self,
        metapackage: &str,
        cancel: &CancellationToken,
    ) -> Result<PackageInfo, AptError> {
        let meta = self.show(metapackage, cancel).await?;
        let versioned = meta
            .depends
            .iter()
            .flat_map(|entry| entry.split('|'))
            .map(|alternative| {
                alternative
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .find(|name| name.starts_with("linux-image-") && name != metapackage)
            .ok_or_else(|| AptError::NoKernelDependency {
                package: metapackage.to_owned(),
                depends: meta.depends.join(", "),
            })?;
        self.show(&versioned, cancel).await
    }

    /// `apt-get download` of exactly these versions into [`Self::debs_dir`];
    /// returns their paths. Older versions of the same packages are removed.
    pub async fn download(
        &self,
        packages: &[PackageInfo],
        cancel: &CancellationToken,
    ) -> Result<Vec<PathBuf>, AptError> {
        let dir = self.debs_dir();
        let invocation = self
            .invocation("apt-get")?
            .args(["download", "-q"])
            .args(
                packages
                    .iter()
                    .map(|package| format!("{}={}", package.name, package.version)),
            )
            .cwd(&dir);
        let finished = exec::run(&invocation, Some(&self.log_path()), &mut |_| {}, cancel).await?;
        if !finished.status.success() {
            return Err(self.classify("download", &finished));
        }
        let mut paths = Vec::new();
        for package in packages {
            let path = dir.join(package.file_name());
            if !path.is_file() {
                return Err(AptError::Missing { path });
            }
            self.prune_old_versions(package);
            paths.push(path);
        }
        Ok(paths)
    }

    fn prune_old_versions(&self, package: &PackageInfo) {
        let keep = package.file_name();
        let prefix = format!("{}_", package.name);
        let Ok(entries) = fs_err::read_dir(self.debs_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(".deb") && name != keep {
                let _ = fs_err::remove_file(entry.path());
            }
        }
    }

    fn classify(&self, what: &str, finished: &exec::Finished) -> AptError {
        let text = finished.tail.join("\n");
        let detail = finished
            .tail
            .iter()
            .rev()
            .find(|line| {
                line.starts_with("E:") || line.starts_with("W:") || line.starts_with("Err")
            })
            .or(finished.tail.last())
            .cloned()
            .unwrap_or_default();
        let log = self.log_path();
        let unreachable = [
            "Could not connect",
            "Could not resolve",
            "Connection refused",
            "Connection timed out",
            "Temporary failure resolving",
            "No route to host",
            "Network is unreachable",
        ];
        if unreachable.iter().any(|needle| text.contains(needle)) {
            return AptError::Unreachable {
                mirror: self.mirror.clone(),
                detail,
                log,
            };
        }
        if [
            "NO_PUBKEY",
            "is not signed",
            "signatures were invalid",
            "EXPKEYSIG",
        ]
        .iter()
        .any(|needle| text.contains(needle))
        {
            return AptError::Signature {
                mirror: self.mirror.clone(),
                distro: self.distro.to_string(),
                detail,
                log,
            };
        }
        AptError::Failed {
            what: what.to_owned(),
            status: finished.status.to_string(),
            detail,
            log,
        }
    }
}

/// The first stanza of `apt-cache show` output.
pub fn parse_show(text: &str) -> Option<PackageInfo> {
    let stanza = text.split("\n\n").next()?;
    let field = |key: &str| {
        stanza.lines().find_map(|line| {
            line.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(|value| value.trim().to_owned())
        })
    };
    Some(PackageInfo {
        name: field("Package")?,
        version: field("Version")?,
        architecture: field("Architecture").unwrap_or_else(|| ARCH.to_owned()),
        depends: field("Depends")
            .map(|depends| {
                depends
                    .split(',')
                    .map(|entry| entry.trim().to_owned())
                    .filter(|entry| !entry.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        sha256: field("SHA256"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apt_cache_show() {
        let text = "Package: linux-image-cloud-amd64\nSource: linux-signed-amd64 (6.1.176+1)\nVersion: 6.1.176-1\nArchitecture: amd64\nDepends: linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)\nDescription: Linux\n meta\nSHA256: abc\n\nPackage: other\n";
        let info = parse_show(text).unwrap();
        assert_eq!(info.name, "linux-image-cloud-amd64");
        assert_eq!(info.version, "6.1.176-1");
        assert_eq!(
            info.depends,
            ["linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)"]
        );
        assert_eq!(info.sha256.as_deref(), Some("abc"));
        assert_eq!(parse_show(""), None);
    }

    #[test]
    fn file_names_escape_epochs() {
        let info = PackageInfo {
            name: "busybox-static".into(),
            version: "1:1.35.0-4+deb12u1+b1".into(),
            architecture: "amd64".into(),
            depends: vec![],
            sha256: None,
        };
        assert_eq!(
            info.file_name(),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"
        );
    }

    #[test]
    fn the_configuration_stays_inside_its_directory() {
        let distro = Distro::parse("debian:bookworm").unwrap();
        let env = AptEnv::new(Path::new("/c/banger"), &distro, "http://m/debian");
        let text = env.config_text();
        for line in text.lines().filter(|line| line.starts_with("Dir")) {
            assert!(
                line.contains("\"/c/banger/apt/debian-bookworm-amd64/"),
                "{line}"
            );
        }
    }
}
