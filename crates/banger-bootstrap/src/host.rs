//! The privileged side of a bootstrap behind one narrow trait: running
//! debootstrap (root; it chroots, mknods and mounts inside its target) and
//! releasing the mounts it may leave behind. [`HostBootstrap`] does it for
//! real; [`FakeBootstrap`] records calls, writes a tiny root filesystem
//! instead, and fails on request, so the daemon's rollback is testable
//! without root or network.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::exec::{self, ExecError, Invocation};
use crate::rootfs::{self, ReleaseMountsError, RootfsPlan};

#[derive(Debug, thiserror::Error)]
pub enum DebootstrapError {
    #[error(
        "debootstrap is not installed (install the debootstrap package, e.g. `apt-get install debootstrap`)"
    )]
    NotInstalled,
    #[error("debootstrap needs root; bangerd runs as uid {uid}")]
    NotRoot { uid: u32 },
    #[error("the {distro} archive keyring {keyring} is missing (install {package})")]
    NoKeyring {
        distro: String,
        keyring: String,
        package: String,
    },
    #[error("debootstrap cannot reach the mirror {mirror}: {detail} (log: {log})")]
    Unreachable {
        mirror: String,
        detail: String,
        log: PathBuf,
    },
    #[error("debootstrap failed ({status}): {detail} (log: {log})")]
    Failed {
        status: String,
        detail: String,
        log: PathBuf,
    },
    #[error("debootstrap was cancelled")]
    Cancelled,
    #[error("preparing {path}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Exec(ExecError),
}

impl DebootstrapError {
    /// A debootstrap of `plan` that ended in failure: the mirror could not
    /// be reached (so the hint is the network), or something else.
    pub fn failed(plan: &RootfsPlan, status: String, detail: String) -> Self {
        if rootfs::looks_unreachable(&detail) {
            return Self::Unreachable {
                mirror: plan.mirror.clone(),
                detail,
                log: plan.log.clone(),
            };
        }
        Self::Failed {
            status,
            detail,
            log: plan.log.clone(),
        }
    }
}

/// What a bootstrap does to the host.
pub trait BootstrapHost: Send + Sync + std::fmt::Debug {
    /// Checks that `plan` can run here (tools, privileges, keyring).
    fn preflight(&self, plan: &RootfsPlan) -> Result<(), DebootstrapError>;

    /// Runs debootstrap for `plan`, handing it each output line.
    fn debootstrap<'a>(
        &'a self,
        plan: &'a RootfsPlan,
        on_line: &'a mut (dyn FnMut(&str) + Send),
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), DebootstrapError>>;

    /// Unmounts whatever is mounted under `dir`; errors when something stays.
    fn release_mounts(&self, dir: &Path) -> Result<Vec<PathBuf>, ReleaseMountsError>;

    /// Owners the tree built at `target` should have but does not (its
    /// files were given to the daemon's user), for the image's build to
    /// put back. Empty when the tree keeps its owners.
    fn take_owners(&self, target: &Path) -> Vec<TreeOwner> {
        let _ = target;
        Vec::new()
    }
}

/// A file of a built tree and the owner it should have in the image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeOwner {
    /// Relative to the tree's root.
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

/// Checks that debootstrap and the distribution's keyring are installed.
pub fn preflight_tools(plan: &RootfsPlan) -> Result<(), DebootstrapError> {
    if exec::locate("debootstrap").is_none() {
        return Err(DebootstrapError::NotInstalled);
    }
    if !crate::keyring_present(&plan.distro) {
        return Err(DebootstrapError::NoKeyring {
            distro: plan.distro.to_string(),
            keyring: plan.distro.keyring.to_owned(),
            package: plan.distro.keyring_package.to_owned(),
        });
    }
    Ok(())
}

/// The real thing.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostBootstrap;

impl BootstrapHost for HostBootstrap {
    fn preflight(&self, plan: &RootfsPlan) -> Result<(), DebootstrapError> {
        if exec::locate("debootstrap").is_none() {
            return Err(DebootstrapError::NotInstalled);
        }
        let uid = nix::unistd::geteuid();
        if !uid.is_root() {
            return Err(DebootstrapError::NotRoot { uid: uid.as_raw() });
        }
        preflight_tools(plan)
    }

    fn debootstrap<'a>(
        &'a self,
        plan: &'a RootfsPlan,
        on_line: &'a mut (dyn FnMut(&str) + Send),
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), DebootstrapError>> {
        Box::pin(async move {
            let program = exec::locate("debootstrap").ok_or(DebootstrapError::NotInstalled)?;
            for dir in [
                &plan.deb_cache,
                &plan.log.parent().unwrap_or(Path::new("/")).to_owned(),
            ] {
                fs_err::create_dir_all(dir).map_err(|source| DebootstrapError::Prepare {
                    path: dir.clone(),
                    source,
                })?;
            }
            let mut invocation = Invocation::new(program)
                .args(plan.args())
                .env("DEBIAN_FRONTEND", "noninteractive");
            if let Some(proxy) = &plan.proxy {
                invocation = invocation.env("http_proxy", proxy);
            }
            let finished = exec::run(&invocation, Some(&plan.log), on_line, cancel)
                .await
                .map_err(|err| match err {
                    ExecError::Cancelled { .. } => DebootstrapError::Cancelled,
                    other => DebootstrapError::Exec(other),
                })?;
            if finished.status.success() {
                return Ok(());
            }
            let detail = rootfs::failure_detail(&finished.tail);
            Err(DebootstrapError::failed(
                plan,
                finished.status.to_string(),
                detail,
            ))
        })
    }

    fn release_mounts(&self, dir: &Path) -> Result<Vec<PathBuf>, ReleaseMountsError> {
        rootfs::release_mounts(dir)
    }
}

/// How the fake's debootstrap ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FakeOutcome {
    /// Writes a tiny Debian-looking tree and succeeds.
    #[default]
    Succeed,
    /// Writes part of a tree, then fails with this detail.
    Fail(String),
    /// Writes part of a tree, then waits until cancelled.
    Hang,
}

/// A recording stand-in for [`HostBootstrap`].
#[derive(Debug, Default)]
pub struct FakeBootstrap {
    pub outcome: Mutex<FakeOutcome>,
    /// A preflight failure to report (`Some("debootstrap")` → not installed).
    pub preflight_failure: Mutex<Option<String>>,
    /// Mount points, relative to the released directory (`proc`), that
    /// `release_mounts` pretends it cannot unmount.
    pub stuck_mounts: Mutex<Vec<PathBuf>>,
    /// What `take_owners` answers (as banger-helper's debootstrap would).
    pub owners: Mutex<Vec<TreeOwner>>,
    calls: Mutex<Vec<String>>,
}

impl FakeBootstrap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_outcome(&self, outcome: FakeOutcome) {
        *lock(&self.outcome) = outcome;
    }

    /// Every call so far, e.g. `debootstrap bookworm /x/tree`, `release /x/tree`.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }

    fn record(&self, call: String) {
        lock(&self.calls).push(call);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A tree just large enough for the image pipeline (mkfs, guest files).
fn write_fake_tree(target: &Path, complete: bool) -> std::io::Result<()> {
    for dir in [
        "etc/ssh", "root", "usr/bin", "var/lib", "dev", "proc", "sys", "tmp",
    ] {
        fs_err::create_dir_all(target.join(dir))?;
    }
    fs_err::write(target.join("etc/hostname"), "buildhost\n")?;
    fs_err::write(target.join("etc/ssh/ssh_host_ed25519_key"), "secret\n")?;
    fs_err::write(target.join("root/.bashrc"), "# fake\n")?;
    if complete {
        fs_err::write(
            target.join("etc/os-release"),
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_CODENAME=bookworm\n",
        )?;
    }
    Ok(())
}

impl BootstrapHost for FakeBootstrap {
    fn preflight(&self, plan: &RootfsPlan) -> Result<(), DebootstrapError> {
        self.record(format!("preflight {}", plan.distro));
        match lock(&self.preflight_failure).as_deref() {
            None => Ok(()),
            Some("debootstrap") => Err(DebootstrapError::NotInstalled),
            Some(_) => Err(DebootstrapError::NotRoot { uid: 1000 }),
        }
    }

    fn debootstrap<'a>(
        &'a self,
        plan: &'a RootfsPlan,
        on_line: &'a mut (dyn FnMut(&str) + Send),
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), DebootstrapError>> {
        Box::pin(async move {
            self.record(format!(
                "debootstrap {} {} [{}]",
                plan.distro.release,
                plan.target.display(),
                plan.packages.join(",")
            ));
            let outcome = lock(&self.outcome).clone();
            let prepare = |source| DebootstrapError::Prepare {
                path: plan.target.clone(),
                source,
            };
            if let Some(parent) = plan.log.parent() {
                fs_err::create_dir_all(parent).map_err(prepare)?;
            }
            fs_err::write(&plan.log, "I: Retrieving InRelease\n").map_err(prepare)?;
            for line in [
                "I: Retrieving InRelease ",
                "I: Retrieving libc6 2.36",
                "I: Extracting base-files...",
                "I: Configuring openssh-server...",
            ] {
                on_line(line);
            }
            write_fake_tree(&plan.target, outcome == FakeOutcome::Succeed).map_err(prepare)?;
            match outcome {
                FakeOutcome::Succeed => Ok(()),
                FakeOutcome::Fail(detail) => Err(DebootstrapError::Failed {
                    status: "exit status: 1".into(),
                    detail,
                    log: plan.log.clone(),
                }),
                FakeOutcome::Hang => {
                    cancel.cancelled().await;
                    Err(DebootstrapError::Cancelled)
                }
            }
        })
    }

    fn take_owners(&self, _target: &Path) -> Vec<TreeOwner> {
        std::mem::take(&mut *lock(&self.owners))
    }

    fn release_mounts(&self, dir: &Path) -> Result<Vec<PathBuf>, ReleaseMountsError> {
        self.record(format!("release {}", dir.display()));
        let stuck: Vec<PathBuf> = lock(&self.stuck_mounts)
            .iter()
            .map(|mount| dir.join(mount))
            .collect();
        match stuck.first() {
            Some(first) => Err(ReleaseMountsError {
                dir: dir.to_owned(),
                count: stuck.len(),
                first: first.display().to_string(),
            }),
            None => Ok(Vec::new()),
        }
    }
}
