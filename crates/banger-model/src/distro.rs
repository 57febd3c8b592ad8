//! The distributions banger can build images and kernels from, with
//! everything that differs between them: mirror, archive keyring, suite,
//! the kernel and busybox packages. Names and values only: banger-bootstrap
//! does the building.

use std::fmt;

pub use crate::image::ImageProfile;

/// Debian's archive keyring (package `debian-archive-keyring`): apt and
/// debootstrap verify the mirror's signed `InRelease` against it.
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Debian's redirector to a nearby mirror.
pub const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// The only architecture banger builds for (Firecracker on x86-64).
pub const ARCH: &str = "amd64";

/// Packages every bootstrapped image gets on top of debootstrap's minbase:
/// sshd, `ip`, TLS roots, git (workspaces), `ps`/`pkill`, and systemd as
/// `/sbin/init`.
pub const BASE_PACKAGES: &[&str] = &[
    "openssh-server",
    "iproute2",
    "ca-certificates",
    "git",
    "procps",
    "systemd-sysv",
];

/// What the developer profile adds to [`BASE_PACKAGES`]: a box to work in.
/// Compilers and make, download and sync tools, a terminal multiplexer and
/// editors, JSON and archive tools, Python with venv and pip, network
/// diagnostics, Docker with compose, `kmod` so the guest can load the
/// modules Docker needs, and `apparmor`: Debian's kernel enables AppArmor,
/// and Docker refuses to start containers when it cannot load its profile
/// (debootstrap installs no Recommends, where docker.io asks for it).
pub const DEVELOPER_PACKAGES: &[&str] = &[
    "build-essential",
    "curl",
    "wget",
    "openssh-client",
    "rsync",
    "tmux",
    "less",
    "nano",
    "vim-tiny",
    "jq",
    "unzip",
    "xz-utils",
    "zstd",
    "python3",
    "python3-venv",
    "python3-pip",
    "iputils-ping",
    "dnsutils",
    "docker.io",
    "docker-compose",
    "kmod",
    "apparmor",
    "bash-completion",
];

/// The packages of a profile on top of debootstrap's minbase, base first.
pub fn profile_packages(profile: ImageProfile) -> Vec<&'static str> {
    let mut packages = BASE_PACKAGES.to_vec();
    if profile == ImageProfile::Developer {
        packages.extend(DEVELOPER_PACKAGES.iter().copied());
    }
    packages
}

/// A distribution family banger knows how to bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Debian,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debian => "debian",
        }
    }
}

/// One release of a distribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distro {
    pub family: Family,
    /// The suite's codename (`bookworm`).
    pub release: &'static str,
    /// Its version number (`12`), accepted as an alias.
    pub version: &'static str,
    pub default_mirror: &'static str,
    /// The keyring the archive's `InRelease` must be signed with.
    pub keyring: &'static str,
    /// Package that installs the keyring, for error hints.
    pub keyring_package: &'static str,
    /// The distribution's kernel for virtual machines (a metapackage that
    /// depends on the current versioned kernel).
    pub kernel_package: &'static str,
    /// A statically linked busybox, the initrd's userland.
    pub busybox_package: &'static str,
}

const KNOWN: &[Distro] = &[
    Distro {
        family: Family::Debian,
        release: "bookworm",
        version: "12",
        default_mirror: DEBIAN_MIRROR,
        keyring: DEBIAN_KEYRING,
        keyring_package: "debian-archive-keyring",
        kernel_package: "linux-image-cloud-amd64",
        busybox_package: "busybox-static",
    },
    Distro {
        family: Family::Debian,
        release: "trixie",
        version: "13",
        default_mirror: DEBIAN_MIRROR,
        keyring: DEBIAN_KEYRING,
        keyring_package: "debian-archive-keyring",
        kernel_package: "linux-image-cloud-amd64",
        busybox_package: "busybox-static",
    },
];

/// The release used when only a family is named (`debian`).
pub const DEFAULT: &str = "debian:bookworm";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDistroError {
    #[error("unknown distribution {input:?}; banger can bootstrap {supported}")]
    UnknownFamily { input: String, supported: String },
    #[error("unknown {family} release {release:?}; banger can bootstrap {supported}")]
    UnknownRelease {
        family: &'static str,
        release: String,
        supported: String,
    },
}

impl Distro {
    /// Parses `debian`, `debian:bookworm` or `debian:12`.
    pub fn parse(input: &str) -> Result<Self, ParseDistroError> {
        let trimmed = input.trim().to_ascii_lowercase();
        let (family, release) = match trimmed.split_once(':') {
            Some((family, release)) => (family.to_owned(), Some(release.to_owned())),
            None => (trimmed.clone(), None),
        };
        let family = match family.as_str() {
            "debian" => Family::Debian,
            _ => {
                return Err(ParseDistroError::UnknownFamily {
                    input: input.to_owned(),
                    supported: supported(),
                });
            }
        };
        let Some(release) = release else {
            return Ok(Self::default_for(family));
        };
        KNOWN
            .iter()
            .find(|distro| {
                distro.family == family && (distro.release == release || distro.version == release)
            })
            .cloned()
            .ok_or_else(|| ParseDistroError::UnknownRelease {
                family: family.as_str(),
                release,
                supported: supported(),
            })
    }

    fn default_for(family: Family) -> Self {
        KNOWN
            .iter()
            .find(|distro| distro.family == family)
            .cloned()
            .expect("every family has a release")
    }

    /// Every distribution banger knows, as `family:release`.
    pub fn known() -> impl Iterator<Item = &'static Distro> {
        KNOWN.iter()
    }

    /// `debian-bookworm`: the default image name, and a directory name.
    pub fn slug(&self) -> String {
        format!("{}-{}", self.family.as_str(), self.release)
    }

    /// The default name of a kernel bootstrapped from this release.
    pub fn kernel_name(&self) -> String {
        format!("{}-cloud", self.slug())
    }
}

impl fmt::Display for Distro {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.family.as_str(), self.release)
    }
}

fn supported() -> String {
    KNOWN
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks a mirror URL's shape (`http://` or `https://` followed by a host).
pub fn check_mirror(mirror: &str) -> Result<String, BadMirror> {
    let trimmed = mirror.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| BadMirror(mirror.to_owned()))?;
    if rest.is_empty() || rest.starts_with('/') || trimmed.chars().any(char::is_whitespace) {
        return Err(BadMirror(mirror.to_owned()));
    }
    Ok(trimmed.to_owned())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mirror {0:?} is not an http:// or https:// URL (e.g. {DEBIAN_MIRROR})")]
pub struct BadMirror(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_families_releases_and_aliases() {
        assert_eq!(Distro::parse("debian").unwrap().release, "bookworm");
        assert_eq!(
            Distro::parse("debian:bookworm").unwrap().release,
            "bookworm"
        );
        assert_eq!(Distro::parse("Debian:12").unwrap().release, "bookworm");
        assert_eq!(Distro::parse("debian:trixie").unwrap().release, "trixie");
        assert_eq!(
            Distro::parse("debian:bookworm").unwrap().to_string(),
            "debian:bookworm"
        );
        assert_eq!(Distro::parse("debian").unwrap().slug(), "debian-bookworm");
    }

    #[test]
    fn unknown_input_names_what_is_supported() {
        let err = Distro::parse("gentoo").unwrap_err();
        assert!(err.to_string().contains("debian:bookworm"), "{err}");
        let err = Distro::parse("debian:hamm").unwrap_err();
        assert!(matches!(err, ParseDistroError::UnknownRelease { .. }));
        assert!(err.to_string().contains("\"hamm\""), "{err}");
    }

    #[test]
    fn mirrors_must_be_http_urls() {
        assert_eq!(
            check_mirror("http://deb.debian.org/debian/").unwrap(),
            "http://deb.debian.org/debian"
        );
        assert!(check_mirror("https://mirror.example/debian").is_ok());
        assert!(check_mirror("ftp://x/debian").is_err());
        assert!(check_mirror("http://").is_err());
        assert!(check_mirror("deb.debian.org").is_err());
        assert!(check_mirror("http://a b/").is_err());
    }
}
