//! `banger-helper serve`: bind the socket with its mode and group, start
//! the [`Helper`] in this process's network namespace, serve until SIGTERM
//! or SIGINT, and remove the socket.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use banger_net::RealNetOps;
use banger_net::routing::Resolvectl;
use nix::unistd::{Gid, Uid, chown};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::access::Access;
use crate::service::Helper;
use crate::sim::SimGuests;

/// The socket's mode: the owner (root) and the group may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// What `serve` was asked for, resolved.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub socket: PathBuf,
    pub group: String,
    /// `banger-simvm` for sim guests; found next to the helper or in PATH
    /// when `None`.
    pub simvm: Option<PathBuf>,
    /// Start no sim guests (they make the group root-equivalent).
    pub no_sim: bool,
    /// Root's cache for debootstrap's `.deb`s.
    pub cache_dir: PathBuf,
}

/// How sim guests are started, as `options` ask.
pub fn sim_guests(options: &ServeOptions) -> anyhow::Result<SimGuests> {
    if options.no_sim {
        return Ok(SimGuests::disabled("it was started with --no-sim"));
    }
    let found = options.simvm.clone().or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join(SIMVM)))
            .filter(|path| path.is_file())
            .or_else(|| banger_exec::find_program(SIMVM, &[]))
    });
    match found {
        Some(path) => SimGuests::new(&path)
            .with_context(|| format!("cannot use {} for sim guests", path.display())),
        None => Ok(SimGuests::disabled(format!(
            "{SIMVM} is neither next to banger-helper nor in PATH"
        ))),
    }
}

/// The stand-in VMM whose `sim` engine needs root.
const SIMVM: &str = "banger-simvm";

/// Binds `path` for the helper: its directory made when missing (0755), a
/// stale socket replaced, a live helper on it refused; then mode 0660 and
/// group `gid` when given.
pub async fn bind_socket(path: &Path, gid: Option<u32>) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty())
        && !dir.exists()
    {
        fs_err::create_dir_all(dir)?;
        fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    match fs_err::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                bail!(
                    "another banger-helper is listening on {}; stop it first",
                    path.display()
                );
            }
            fs_err::remove_file(path)?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; remove it or pass --socket",
            path.display()
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error.into()),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot bind {}", path.display()))?;
    chown(path, Some(Uid::from_raw(0)), gid.map(Gid::from_raw))
        .with_context(|| format!("cannot give {} to root and its group", path.display()))?;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
    Ok(listener)
}

/// Runs the helper in the foreground until SIGTERM or SIGINT.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("banger-helper serve must run as root (it creates bridges, TAPs and firewall rules)");
    }
    let access = Access::for_group(&options.group)
        .with_context(|| format!("cannot look up group {}", options.group))?;
    if access.gid.is_none() {
        tracing::warn!(
            group = options.group,
            "group does not exist: only root may use banger-helper (create it with groupadd --system)"
        );
    }
    let ops = RealNetOps::connect().context("cannot open netlink")?;
    let sims = sim_guests(&options)?;
    match sims.binary() {
        Some(simvm) => {
            tracing::info!(simvm = %simvm.display(), "sim guests on (members of the group are root-equivalent)")
        }
        None => tracing::info!("sim guests off"),
    }
    let helper = Helper::start(ops, Arc::new(Resolvectl::default()))
        .await
        .context("cannot list the links an earlier helper left")?
        .with_sims(sims)
        .with_cache_dir(&options.cache_dir);
    let listener = bind_socket(&options.socket, access.gid).await?;
    tracing::info!(
        socket = %options.socket.display(),
        group = options.group,
        "banger-helper listening"
    );
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    crate::server::run(listener, Arc::new(helper), access, shutdown).await;
    let _ = fs_err::remove_file(&options.socket);
    Ok(())
}
