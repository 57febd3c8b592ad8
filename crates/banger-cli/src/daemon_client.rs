//! Connecting to `bangerd`.
//!
//! [`connect`] starts the daemon when it is absent and restarts it when it
//! runs another build than this CLI. Starting is serialised by an exclusive
//! `flock` on the spawn lock, so two CLIs starting at once end up sharing one
//! daemon. [`connect_existing`] never starts anything (status, stop,
//! completion).

use banger_rpc::{NoParams, method};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use banger_buildinfo::BuildInfo;
use banger_model::layout::Layout;
use banger_rpc::Client;
use banger_rpc::response::{Empty, PingResult};
use nix::fcntl::{Flock, FlockArg};
use tokio::net::UnixStream;

pub type DaemonConnection = Client<UnixStream>;

/// How long a freshly started daemon has to answer (it may first wait for a
/// stopping one to finish its requests).
const START_TIMEOUT: Duration = Duration::from_secs(75);
/// How long a stopping daemon has to release its lock (it lets running
/// requests finish for up to 30 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(45);

/// Connects, starting or restarting the daemon as needed: a daemon of
/// another build, or one that read `config.toml` before its last edit, is
/// restarted (running VMs keep running and are adopted). An edit that does
/// not parse is reported instead, and the daemon keeps its config.
pub async fn connect(layout: &Layout) -> anyhow::Result<DaemonConnection> {
    let own = BuildInfo::current();
    let config = layout.config_file();
    if let Some(client) = connect_matching(layout, &own, &config).await? {
        return Ok(client);
    }
    // Absent or stale: fix it under the spawn lock, then look again, since
    // another CLI may have done it while we waited.
    let _guard = spawn_lock(layout).await?;
    if let Some(client) = connect_matching(layout, &own, &config).await? {
        return Ok(client);
    }
    if let Some(mut stale) = connect_existing(layout).await? {
        let ping: PingResult = stale.call::<method::Ping>(NoParams {}, |_| {}).await?;
        if ping.build.build_id != own.build_id {
            eprintln!(
                "banger: restarting bangerd (running build {}, this CLI is {})",
                ping.build.build_id, own.build_id
            );
        } else {
            // Only the config changed: never trade a working daemon for
            // one that cannot start.
            banger_model::config::Config::load(&config).map_err(|err| {
                anyhow!(
                    "{err}\nhint: the running daemon keeps the config it read before; fix the file and run the command again"
                )
            })?;
            eprintln!(
                "banger: {} changed; restarting bangerd to apply it",
                config.display()
            );
        }
        let _: Empty = stale.call::<method::Shutdown>(NoParams {}, |_| {}).await?;
        drop(stale);
        wait_until_stopped(layout).await?;
    }
    let mut client = start(layout).await?;
    let ping: PingResult = client.call::<method::Ping>(NoParams {}, |_| {}).await?;
    if ping.build.build_id != own.build_id {
        eprintln!(
            "banger: warning: {} is build {}, this CLI is {}; reinstall banger so both match",
            bangerd_path()?.display(),
            ping.build.build_id,
            own.build_id
        );
    }
    Ok(client)
}

/// Connects only if a daemon already runs.
pub async fn connect_existing(layout: &Layout) -> anyhow::Result<Option<DaemonConnection>> {
    match UnixStream::connect(layout.socket()).await {
        Ok(stream) => Ok(Some(Client::new(stream))),
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(err) => {
            Err(err).with_context(|| format!("connecting to {}", layout.socket().display()))
        }
    }
}

/// A connection to a daemon of our own build that read the config file as
/// it is now, or `None`.
async fn connect_matching(
    layout: &Layout,
    own: &BuildInfo,
    config: &Path,
) -> anyhow::Result<Option<DaemonConnection>> {
    let Some(mut client) = connect_existing(layout).await? else {
        return Ok(None);
    };
    match client.call::<method::Ping>(NoParams {}, |_| {}).await {
        Ok(ping)
            if ping.build.build_id == own.build_id
                && ping.config == banger_model::config::fingerprint_of(config) =>
        {
            Ok(Some(client))
        }
        Ok(_) => Ok(None),
        // A daemon that cannot answer a ping (e.g. another protocol) is stale.
        Err(_) => Ok(None),
    }
}

/// Asks a running daemon to stop and waits until it has.
pub async fn stop(layout: &Layout) -> anyhow::Result<bool> {
    let Some(mut client) = connect_existing(layout).await? else {
        return Ok(false);
    };
    let _: Empty = client.call::<method::Shutdown>(NoParams {}, |_| {}).await?;
    drop(client);
    wait_until_stopped(layout).await?;
    Ok(true)
}

async fn start(layout: &Layout) -> anyhow::Result<DaemonConnection> {
    let bangerd = bangerd_path()?;
    let startup_log = layout.runtime_dir.join("bangerd.out");
    let mut child = crate::exec::spawn_daemon(&bangerd, &startup_log)
        .with_context(|| format!("starting {}", bangerd.display()))?;
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Some(client) = connect_existing(layout).await? {
            // Reap the daemon later by whoever inherits it; we just leave.
            return Ok(client);
        }
        if let Some(status) = child.try_wait().context("checking on bangerd")? {
            let output = std::fs::read_to_string(&startup_log).unwrap_or_default();
            bail!(
                "bangerd exited during start ({status}): {}\nhint: its log is {}",
                output.trim(),
                layout.daemon_log().display()
            );
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "bangerd did not answer on {} within {}s\nhint: see {} and {}",
                layout.socket().display(),
                START_TIMEOUT.as_secs(),
                startup_log.display(),
                layout.daemon_log().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_until_stopped(layout: &Layout) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    while lock_is_held(&layout.daemon_lock()) {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "bangerd did not stop within {}s\nhint: see {}",
                STOP_TIMEOUT.as_secs(),
                layout.daemon_log().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Whether a daemon holds its instance lock.
fn lock_is_held(path: &Path) -> bool {
    let Ok(file) = File::options().read(true).write(true).open(path) else {
        return false;
    };
    Flock::lock(file, FlockArg::LockSharedNonblock).is_err()
}

/// Waits for the exclusive spawn lock (bounded).
async fn spawn_lock(layout: &Layout) -> anyhow::Result<Flock<File>> {
    std::fs::create_dir_all(&layout.runtime_dir)
        .with_context(|| format!("creating {}", layout.runtime_dir.display()))?;
    set_private(&layout.runtime_dir);
    let path = layout.spawn_lock();
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let locked = tokio::task::spawn_blocking(move || Flock::lock(file, FlockArg::LockExclusive));
    match tokio::time::timeout(START_TIMEOUT + STOP_TIMEOUT, locked).await {
        Ok(Ok(Ok(lock))) => Ok(lock),
        Ok(Ok(Err((_, errno)))) => Err(anyhow!("locking {}: {errno}", path.display())),
        Ok(Err(join)) => Err(anyhow!("locking {}: {join}", path.display())),
        Err(_) => Err(anyhow!(
            "another banger has held {} for too long",
            path.display()
        )),
    }
}

fn set_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

/// `bangerd` next to this executable, else from `PATH`.
pub fn bangerd_path() -> anyhow::Result<PathBuf> {
    sibling_binary("bangerd")
}

/// A companion binary where bangerd looks for it: next to `bangerd`, in
/// `../lib/banger/` of its prefix, else in `PATH`. On failure, where it was
/// looked for.
pub fn companion_binary(name: &str) -> Result<PathBuf, String> {
    let mut searched = Vec::new();
    if let Ok(bangerd) = bangerd_path()
        && let Some(dir) = bangerd.parent()
    {
        for candidate in [dir.join(name), dir.join("../lib/banger").join(name)] {
            if candidate.is_file() {
                return Ok(candidate);
            }
            searched.push(candidate.display().to_string());
        }
    }
    if let Some(found) = banger_exec::find_program(name, &[]) {
        return Ok(found);
    }
    searched.push("PATH".into());
    Err(searched.join(", "))
}

/// A banger binary installed next to the running one, else found in `PATH`.
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    if let Some(found) = banger_exec::find_program(name, &[]) {
        return Ok(found);
    }
    bail!("cannot find {name} next to banger or in PATH\nhint: install banger with `make install`")
}
