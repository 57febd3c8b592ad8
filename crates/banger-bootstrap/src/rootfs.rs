//! A root filesystem from a distribution's packages with `debootstrap`:
//! the plan (suite, variant, packages, mirror, keyring, `.deb` cache), its
//! progress read from debootstrap's output, the clean-up of what the build
//! host leaves behind, and the release of mounts a killed debootstrap leaves
//! under its target.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::distro::{ARCH, Distro, ImageProfile, profile_packages};

/// A debootstrap run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsPlan {
    pub distro: Distro,
    pub mirror: String,
    pub profile: ImageProfile,
    /// The profile's packages followed by the extra ones, without duplicates.
    pub packages: Vec<String>,
    /// The extra ones alone (`--packages`), as given, checked.
    pub extra: Vec<String>,
    /// The directory the root filesystem is built in (must not exist).
    pub target: PathBuf,
    /// debootstrap's `--cache-dir`: downloaded `.deb`s, reused by later runs.
    pub deb_cache: PathBuf,
    /// Where debootstrap's output goes.
    pub log: PathBuf,
    /// `http_proxy` for debootstrap, when not its own environment's.
    pub proxy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a Debian package name (lowercase letters, digits, '+', '-', '.'; at least two characters)"
)]
pub struct BadPackageName(pub String);

/// Debian policy §5.6.1: `[a-z0-9][a-z0-9+.-]+`.
pub fn check_package_name(name: &str) -> Result<(), BadPackageName> {
    let bytes = name.as_bytes();
    let valid = bytes.len() >= 2
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes[1..].iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')
        });
    if valid {
        Ok(())
    } else {
        Err(BadPackageName(name.to_owned()))
    }
}

impl RootfsPlan {
    /// A plan for `distro` from `mirror`: the `profile`'s packages and
    /// `extra` ones; `.deb`s are cached under
    /// `cache_dir/debootstrap/<release>-amd64`.
    pub fn new(
        distro: &Distro,
        mirror: &str,
        profile: ImageProfile,
        extra: &[String],
        target: &Path,
        cache_dir: &Path,
        log: &Path,
    ) -> Result<Self, BadPackageName> {
        let mut packages: Vec<String> = profile_packages(profile)
            .iter()
            .map(|p| (*p).to_owned())
            .collect();
        let mut checked = Vec::new();
        for package in extra {
            let package = package.trim();
            if package.is_empty() {
                continue;
            }
            check_package_name(package)?;
            if !checked.iter().any(|known| known == package) {
                checked.push(package.to_owned());
            }
            if !packages.iter().any(|known| known == package) {
                packages.push(package.to_owned());
            }
        }
        Ok(Self {
            distro: distro.clone(),
            mirror: mirror.to_owned(),
            profile,
            packages,
            extra: checked,
            target: target.to_owned(),
            deb_cache: cache_dir
                .join("debootstrap")
                .join(format!("{}-{ARCH}", distro.release)),
            log: log.to_owned(),
            proxy: None,
        })
    }

    /// debootstrap's arguments.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--variant=minbase".into(),
            format!("--arch={ARCH}").into(),
            format!("--include={}", self.packages.join(",")).into(),
            format!("--keyring={}", self.distro.keyring).into(),
        ];
        let mut cache = OsString::from("--cache-dir=");
        cache.push(&self.deb_cache);
        args.push(cache);
        args.push(self.distro.release.into());
        args.push(self.target.clone().into());
        args.push(self.mirror.clone().into());
        args
    }
}

/// What debootstrap is doing, read from its `I:` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Fetching and verifying `InRelease` and `Packages`, resolving.
    Resolve,
    /// Fetching (or validating cached) `.deb`s.
    Download,
    /// Unpacking the essential packages.
    Extract,
    /// dpkg installing and configuring everything in the target.
    Install,
}

impl Phase {
    /// The progress stage shown for it.
    pub fn stage(self) -> &'static str {
        match self {
            Self::Resolve => "debootstrap_resolve",
            Self::Download => "debootstrap_download",
            Self::Extract => "debootstrap_extract",
            Self::Install => "debootstrap_install",
        }
    }
}

/// The phase a debootstrap output line announces, if any.
pub fn phase_of(line: &str) -> Option<Phase> {
    let rest = line.strip_prefix("I: ")?;
    if rest.starts_with("Retrieving InRelease")
        || rest.starts_with("Retrieving Release")
        || rest.starts_with("Checking Release signature")
    {
        Some(Phase::Resolve)
    } else if rest.starts_with("Retrieving ") || rest.starts_with("Validating ") {
        // "Retrieving Packages"/"Validating Packages" still belong to resolving.
        if rest.starts_with("Retrieving Packages") || rest.starts_with("Validating Packages") {
            Some(Phase::Resolve)
        } else {
            Some(Phase::Download)
        }
    } else if rest.starts_with("Extracting ") {
        Some(Phase::Extract)
    } else if rest.starts_with("Installing core packages")
        || rest.starts_with("Unpacking ")
        || rest.starts_with("Configuring ")
        || rest.starts_with("Installing base packages")
    {
        Some(Phase::Install)
    } else {
        None
    }
}

/// The most telling line of a failed run: its last `E:` line, else its last line.
pub fn failure_detail(tail: &[String]) -> String {
    tail.iter()
        .rev()
        .find(|line| line.starts_with("E: "))
        .or(tail.last())
        .map(|line| line.trim_start_matches("E: ").to_owned())
        .unwrap_or_else(|| "no output".to_owned())
}

/// Whether a failure reads as the mirror being unreachable.
pub fn looks_unreachable(detail: &str) -> bool {
    [
        "Failed getting release file",
        "Couldn't download",
        "Could not resolve",
        "Connection refused",
        "unable to resolve host",
    ]
    .iter()
    .any(|needle| detail.contains(needle))
}

#[derive(Debug, thiserror::Error)]
pub enum FinishRootfsError {
    #[error("the built root filesystem {0} has no etc/os-release")]
    NotARootfs(PathBuf),
    #[error("cleaning {path} in the built root filesystem")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Removes what belongs to the build host or must differ per VM: host name,
/// resolver, machine id, ssh host keys (banger writes each VM's own at
/// create), apt's downloaded lists and packages, and device nodes (the
/// guest's `/dev` is a devtmpfs).
pub fn finish(root: &Path) -> Result<(), FinishRootfsError> {
    if !root.join("etc/os-release").exists() && !root.join("usr/lib/os-release").exists() {
        return Err(FinishRootfsError::NotARootfs(root.to_owned()));
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| FinishRootfsError::Io { path, source }
    };
    for file in ["etc/hostname", "etc/resolv.conf", "var/lib/dbus/machine-id"] {
        remove_if_present(&root.join(file)).map_err(io(&root.join(file)))?;
    }
    // Empty, so each VM's first boot makes one. Replaced rather than
    // truncated: it is read-only (0444), which only stops a writer that is
    // not root, such as a daemon finishing a tree banger-helper gave it.
    let machine_id = root.join("etc/machine-id");
    let empty =
        fs_err::symlink_metadata(&machine_id).is_ok_and(|meta| meta.is_file() && meta.len() == 0);
    if !empty {
        remove_if_present(&machine_id).map_err(io(&machine_id))?;
        fs_err::write(&machine_id, b"").map_err(io(&machine_id))?;
    }
    let ssh = root.join("etc/ssh");
    for entry in read_dir_if_present(&ssh).map_err(io(&ssh))? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("ssh_host_") {
            remove_if_present(&entry.path()).map_err(io(&entry.path()))?;
        }
    }
    for (dir, keep) in [
        ("var/cache/apt/archives", &["partial", "lock"][..]),
        ("var/lib/apt/lists", &["partial", "lock", "auxfiles"][..]),
        ("dev", &[][..]),
    ] {
        let dir = root.join(dir);
        for entry in read_dir_if_present(&dir).map_err(io(&dir))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name.as_str()) {
                continue;
            }
            let path = entry.path();
            let removed = if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                fs_err::remove_dir_all(&path)
            } else {
                fs_err::remove_file(&path)
            };
            removed.map_err(io(&path))?;
        }
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match fs_err::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

fn read_dir_if_present(dir: &Path) -> std::io::Result<Vec<fs_err::DirEntry>> {
    match fs_err::read_dir(dir) {
        Ok(entries) => entries.collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err),
    }
}

/// Mount points at or under `dir`, deepest first, from `/proc/self/mountinfo`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs_err::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|mount| mount.starts_with(dir))
        .collect();
    found.sort_by_key(|mount| std::cmp::Reverse(mount.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, thiserror::Error)]
#[error("{count} mount(s) are still under {dir} (first: {first}); it is left in place")]
pub struct ReleaseMountsError {
    pub dir: PathBuf,
    pub count: usize,
    pub first: String,
}

/// Lazily unmounts everything under `dir` (deepest first) and checks that
/// nothing is left; returns what it unmounted.
pub fn release_mounts(dir: &Path) -> Result<Vec<PathBuf>, ReleaseMountsError> {
    let mounts = mounts_under(dir);
    for mount in &mounts {
        match nix::mount::umount2(mount, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => {
                tracing::info!(mount = %mount.display(), "released a mount left by debootstrap")
            }
            Err(err) => tracing::warn!(mount = %mount.display(), error = %err, "cannot unmount"),
        }
    }
    let left = mounts_under(dir);
    if let Some(first) = left.first() {
        return Err(ReleaseMountsError {
            dir: dir.to_owned(),
            count: left.len(),
            first: first.display().to_string(),
        });
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_args_and_packages() {
        let distro = Distro::parse("debian").unwrap();
        let plan = RootfsPlan::new(
            &distro,
            "http://m/debian",
            ImageProfile::Minimal,
            &["git".into(), "curl".into(), " ".into()],
            Path::new("/s/tree"),
            Path::new("/c"),
            Path::new("/s/log"),
        )
        .unwrap();
        assert_eq!(
            plan.packages,
            [
                "openssh-server",
                "iproute2",
                "ca-certificates",
                "git",
                "procps",
                "systemd-sysv",
                "curl"
            ]
        );
        let args: Vec<String> = plan
            .args()
            .iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--variant=minbase",
                "--arch=amd64",
                "--include=openssh-server,iproute2,ca-certificates,git,procps,systemd-sysv,curl",
                "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg",
                "--cache-dir=/c/debootstrap/bookworm-amd64",
                "bookworm",
                "/s/tree",
                "http://m/debian"
            ]
        );
        assert_eq!(plan.extra, ["git", "curl"]);
        let developer = RootfsPlan::new(
            &distro,
            "http://m/debian",
            ImageProfile::Developer,
            &["htop".into(), "make".into()],
            Path::new("/s/tree"),
            Path::new("/c"),
            Path::new("/s/log"),
        )
        .unwrap();
        for wanted in [
            "openssh-server",
            "systemd-sysv",
            "build-essential",
            "docker.io",
            "htop",
        ] {
            assert!(developer.packages.iter().any(|p| p == wanted), "{wanted}");
        }
        assert_eq!(developer.packages.iter().filter(|p| *p == "git").count(), 1);
        for bad in ["Git", "a", "x;rm", "-x", "a b"] {
            assert!(
                RootfsPlan::new(
                    &distro,
                    "m",
                    ImageProfile::Developer,
                    &[bad.into()],
                    Path::new("/t"),
                    Path::new("/c"),
                    Path::new("/l")
                )
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn phases_from_output() {
        assert_eq!(phase_of("I: Retrieving InRelease "), Some(Phase::Resolve));
        assert_eq!(phase_of("I: Validating Packages "), Some(Phase::Resolve));
        assert_eq!(
            phase_of("I: Retrieving libc6 2.36-9"),
            Some(Phase::Download)
        );
        assert_eq!(
            phase_of("I: Validating bash 5.2.15-2+b13"),
            Some(Phase::Download)
        );
        assert_eq!(
            phase_of("I: Extracting base-files..."),
            Some(Phase::Extract)
        );
        assert_eq!(
            phase_of("I: Installing core packages..."),
            Some(Phase::Install)
        );
        assert_eq!(phase_of("I: Configuring git..."), Some(Phase::Install));
        assert_eq!(phase_of("I: Base system installed successfully."), None);
        assert_eq!(phase_of("W: something"), None);
    }

    #[test]
    fn failure_details() {
        let tail = vec![
            "I: Retrieving Release ".to_owned(),
            "E: Failed getting release file http://127.0.0.1:9/debian/dists/bookworm/Release"
                .to_owned(),
        ];
        let detail = failure_detail(&tail);
        assert!(detail.starts_with("Failed getting release file"));
        assert!(looks_unreachable(&detail));
        assert!(!looks_unreachable("Couldn't find these debs: nope"));
    }

    #[test]
    fn finish_removes_host_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in [
            "etc/os-release",
            "etc/hostname",
            "etc/resolv.conf",
            "etc/machine-id",
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_ed25519_key.pub",
            "etc/ssh/sshd_config",
            "var/cache/apt/archives/x.deb",
            "var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease",
            "dev/null-ish",
        ] {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "x").unwrap();
        }
        std::fs::create_dir_all(root.join("var/cache/apt/archives/partial")).unwrap();
        std::fs::create_dir_all(root.join("dev/pts")).unwrap();
        finish(root).unwrap();
        for gone in [
            "etc/hostname",
            "etc/resolv.conf",
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_ed25519_key.pub",
            "var/cache/apt/archives/x.deb",
            "var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease",
            "dev/null-ish",
            "dev/pts",
        ] {
            assert!(!root.join(gone).exists(), "{gone}");
        }
        assert!(root.join("etc/ssh/sshd_config").exists());
        assert!(root.join("var/cache/apt/archives/partial").is_dir());
        assert_eq!(std::fs::read(root.join("etc/machine-id")).unwrap(), b"");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            finish(empty.path()),
            Err(FinishRootfsError::NotARootfs(_))
        ));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/end\\04"), "/end\\04");
    }

    #[test]
    fn releases_real_mounts() {
        if !banger_testkit::root_or_skip("releases_real_mounts", "mounts") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("tree");
        let proc_dir = target.join("proc");
        let tmp = target.join("dev/pts");
        std::fs::create_dir_all(&proc_dir).unwrap();
        std::fs::create_dir_all(&tmp).unwrap();
        // A private mount namespace would hide the mounts from mountinfo of
        // this process; mount for real and rely on release to clean up.
        nix::mount::mount(
            Some("tmpfs"),
            &target.join("dev"),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        std::fs::create_dir_all(&tmp).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &tmp,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        assert_eq!(mounts_under(&target), [tmp.clone(), target.join("dev")]);
        let released = release_mounts(&target).unwrap();
        assert_eq!(released.len(), 2);
        assert!(mounts_under(&target).is_empty());
        assert!(release_mounts(&target).unwrap().is_empty());
    }
}
