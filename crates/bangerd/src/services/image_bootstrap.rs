//! `image.bootstrap`: an image built here from a distribution's packages
//! (debootstrap), then made into `rootfs.ext4` + guest files + work seed and
//! registered the way `image.import` does it.
//!
//! Files: the root filesystem tree is built in `staging/<id>.rootfs/`, the
//! image files in `staging/<id>/`; both go away whatever happens (the tree
//! in the background, once nothing is mounted under it). The
//! debootstrap log is `logs/image-bootstrap-<id>.log` under the state dir
//! while building (and after a failure, which names it), then
//! `images/<id>/debootstrap.log`. Downloaded `.deb`s stay in
//! `<cache>/debootstrap/<release>-amd64/` for the next build.

use std::path::{Path, PathBuf};

use banger_bootstrap::distro::{Distro, check_mirror};
use banger_bootstrap::host::DebootstrapError;
use banger_bootstrap::rootfs::{self, Phase, RootfsPlan};
use banger_model::image::{Image, ImageSource};
use banger_model::{Id, Name};
use banger_rpc::request::ImageBootstrapParams;
use tokio_util::sync::CancellationToken;

use crate::binaries;
use crate::daemon::Daemon;
use crate::errors::{Doing, Hint, ServiceError, blocking};
use crate::server::{EventSink, Stage};
use crate::services::image_import::{
    BuiltImage, build_image_files, check_name_free, publish, resolve_kernel,
};

/// One bootstrap at a time per daemon: they share the `.deb` cache, and two
/// debootstraps at once would only compete for the same two cores.
static BOOTSTRAP_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where a build's debootstrap log is kept until the image exists.
pub fn log_path(daemon: &Daemon, id: &Id) -> PathBuf {
    daemon
        .layout
        .state_dir
        .join("logs")
        .join(format!("image-bootstrap-{id}.log"))
}

pub async fn bootstrap(
    daemon: &Daemon,
    params: ImageBootstrapParams,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<Image, ServiceError> {
    let agent = binaries::find(binaries::AGENT).unmet()?;
    bootstrap_with_agent(daemon, params, &agent, events, cancel).await
}

/// [`bootstrap`] with the guest agent binary given (tests pass a stand-in).
pub async fn bootstrap_with_agent(
    daemon: &Daemon,
    params: ImageBootstrapParams,
    agent: &Path,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<Image, ServiceError> {
    let distro = Distro::parse(&params.distro)
        .invalid()
        .hint("e.g. `banger image bootstrap debian:bookworm`")?;
    let mirror =
        check_mirror(params.mirror.as_deref().unwrap_or(distro.default_mirror)).invalid()?;
    let name = match &params.name {
        Some(name) => Name::parse(name),
        None => Name::parse(&distro.slug()),
    }?;
    check_name_free(daemon, &name)?;
    let kernel = resolve_kernel(daemon, params.kernel_ref.as_deref())?;

    let id = Id::generate();
    let staging = daemon.layout.staging_dir().join(id.as_str());
    let tree = daemon
        .layout
        .staging_dir()
        .join(format!("{}.rootfs", id.as_str()));
    let log = log_path(daemon, &id);
    let profile = params.profile.unwrap_or_default();
    let plan = RootfsPlan::new(
        &distro,
        &mirror,
        profile,
        &params.packages,
        &tree,
        &daemon.layout.cache_dir,
        &log,
    )
    .invalid()?;
    daemon.bootstrap.preflight(&plan)?;

    let _one_at_a_time = match BOOTSTRAP_LOCK.try_lock() {
        Ok(guard) => guard,
        Err(_) => {
            events.log("info", "waiting for another image bootstrap to finish");
            tokio::select! {
                guard = BOOTSTRAP_LOCK.lock() => guard,
                () = cancel.cancelled() => return Err(ServiceError::Cancelled),
            }
        }
    };
    // The name may have been taken while we waited.
    check_name_free(daemon, &name)?;
    sweep_stale_trees(daemon);
    events.log(
        "info",
        format!(
            "debootstrap {distro}, {profile} profile (minbase + {}) from {mirror}; log: {}",
            plan.packages.join(", "),
            log.display()
        ),
    );
    tracing::info!(image = %name, %distro, %mirror, log = %log.display(), "image bootstrap started");

    let built = build(daemon, &plan, &staging, agent, events, cancel).await;
    let released = release_tree(daemon, &tree).await;
    let built = match (built, released) {
        (Ok(built), Ok(())) => built,
        (Err(err), _) | (Ok(_), Err(err)) => {
            remove_dir(&staging);
            tracing::warn!(image = %name, error = %err.message(), log = %log.display(), "image bootstrap failed");
            return Err(err);
        }
    };
    let image = publish(
        daemon,
        &staging,
        Image {
            id: id.clone(),
            name,
            kernel_id: kernel.as_ref().map(|kernel| kernel.id.clone()),
            kernel_name: kernel.map(|kernel| kernel.name.to_string()),
            rootfs_path: PathBuf::new(),
            work_seed_path: None,
            rootfs_size: built.size,
            source: ImageSource::Bootstrap {
                distro: distro.to_string(),
                mirror,
                profile,
                extra_packages: plan.extra.clone(),
                installed_size: Some(built.content),
            },
            is_default: false,
            created_at: jiff::Timestamp::now(),
        },
    )
    .await?;
    let kept = daemon.layout.image_dir(&id).join("debootstrap.log");
    if let Err(err) = fs_err::rename(&log, &kept) {
        tracing::warn!(error = %err, "debootstrap log not moved into the image directory");
    }
    Ok(image)
}

/// debootstrap, then the clean-up of the tree, then the image files.
async fn build(
    daemon: &Daemon,
    plan: &RootfsPlan,
    staging: &Path,
    agent: &Path,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<BuiltImage, ServiceError> {
    let mut current: Option<(Phase, Stage)> = None;
    let mut on_line = |line: &str| {
        if let Some(phase) = rootfs::phase_of(line) {
            // Phases only move forward (debootstrap interleaves a few lines).
            if current.as_ref().is_none_or(|(now, _)| phase > *now) {
                if let Some((_, stage)) = current.take() {
                    stage.done();
                }
                current = Some((phase, events.stage(phase.stage())));
            }
        } else if let Some(warning) = line.strip_prefix("W: ") {
            events.log("warn", format!("debootstrap: {warning}"));
        }
    };
    let ran = daemon
        .bootstrap
        .debootstrap(plan, &mut on_line, cancel)
        .await;
    match ran {
        Ok(()) => {
            if let Some((_, stage)) = current.take() {
                stage.done();
            }
        }
        // The open stage reports failure when dropped.
        Err(err) => return Err(err.into()),
    }
    if cancel.is_cancelled() {
        return Err(ServiceError::Cancelled);
    }

    let stage = events.stage("clean_rootfs");
    let tree = plan.target.clone();
    blocking(move || rootfs::finish(&tree))
        .await?
        .doing("cleaning the rootfs")
        .or_hint(format!("see {}", plan.log.display()))?;
    stage.done();

    let owners = daemon.bootstrap.take_owners(&plan.target);
    build_image_files(
        daemon,
        &plan.target,
        &owners,
        staging,
        agent,
        events,
        cancel,
    )
    .await
}

/// Unmounts what debootstrap left under the tree, then removes it. A tree
/// that still has mounts is left alone (removing it would reach into them).
async fn release_tree(daemon: &Daemon, tree: &Path) -> Result<(), ServiceError> {
    if !tree.exists() {
        return Ok(());
    }
    daemon
        .bootstrap
        .release_mounts(tree)
        .doing("releasing the build tree's mounts")
        .hint("unmount them (`umount -R`), then delete the directory")?;
    // Deleting a few hundred MB of small files can take half a minute on a
    // busy disk, and nothing waits for it.
    let tree = tree.to_owned();
    tokio::task::spawn_blocking(move || {
        remove_dir(&tree);
        tracing::debug!(tree = %tree.display(), "build tree removed");
    });
    Ok(())
}

/// Build trees a previous daemon left in staging (it was killed mid-build):
/// anything older than this daemon is no build of ours, and we hold the
/// bootstrap lock. Released and removed in the background; one with a mount
/// that will not go is left alone.
fn sweep_stale_trees(daemon: &Daemon) {
    let Ok(entries) = fs_err::read_dir(daemon.layout.staging_dir()) else {
        return;
    };
    let started = std::time::SystemTime::from(daemon.started_at);
    for entry in entries.flatten() {
        let path = entry.path();
        let stale = path.extension().is_some_and(|ext| ext == "rootfs")
            && entry
                .metadata()
                .and_then(|meta| meta.modified())
                .is_ok_and(|modified| modified < started);
        if !stale {
            continue;
        }
        match daemon.bootstrap.release_mounts(&path) {
            Ok(_) => {
                tracing::info!(tree = %path.display(), "removing a build tree left by an earlier daemon");
                tokio::task::spawn_blocking(move || remove_dir(&path));
            }
            Err(err) => tracing::warn!(error = %err, "stale build tree left in place"),
        }
    }
}

/// A debootstrap failure, with what to do about it.
impl From<DebootstrapError> for ServiceError {
    fn from(err: DebootstrapError) -> Self {
        let message = err.to_string();
        match err {
        DebootstrapError::NotInstalled => ServiceError::precondition(message)
            .with_hint("install it: `sudo apt-get install debootstrap` (Debian/Ubuntu)"),
        DebootstrapError::NotRoot { .. } => ServiceError::precondition(message)
            .with_hint("debootstrap needs root: a daemon that is not root has banger-helper run it"),
        DebootstrapError::NoKeyring { package, .. } => {
            ServiceError::precondition(message)
                .with_hint(format!("install it: `sudo apt-get install {package}`"))
        }
        DebootstrapError::Unreachable { log, .. } => {
            ServiceError::precondition(message).with_hint(format!(
                "check the network, or pass --mirror with a reachable Debian mirror; debootstrap's log: {}",
                log.display()
            ))
        }
        DebootstrapError::Failed { log, .. } => ServiceError::internal(message)
            .with_hint(format!("debootstrap's log: {}", log.display())),
        DebootstrapError::Cancelled => ServiceError::Cancelled,
        DebootstrapError::Prepare { .. } | DebootstrapError::Exec(_) => {
            ServiceError::failed("running debootstrap", err)
        }
    }
    }
}

fn remove_dir(dir: &Path) {
    if let Err(err) = fs_err::remove_dir_all(dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %err, "could not remove directory");
    }
}
