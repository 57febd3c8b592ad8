//! `bangerd`: wiring only. See the library for everything else.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use banger_buildinfo::BuildInfo;
use banger_model::config::Config;
use banger_model::layout::Layout;
use banger_store::Store;
use bangerd::daemon::Subsystems;
use bangerd::network::{Access, Network, Via};
use bangerd::{Daemon, instance, logging};
use clap::Parser;
use tracing::info;

/// banger's daemon. The `banger` CLI starts it on demand; you rarely run it
/// yourself.
#[derive(Debug, Parser)]
#[command(name = "bangerd", version = banger_buildinfo::version_line())]
struct Args {}

fn main() -> ExitCode {
    let _args = Args::parse();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bangerd: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let layout = Layout::from_env()?;
    instance::refuse_foreign_files(&layout.own_dirs())?;
    let config = Config::load(&layout.config_file())?;
    instance::private_dir(&layout.state_dir)?;
    let mut lock = instance::acquire(&layout.daemon_lock())?;
    logging::init(&layout.daemon_log(), config.log_level)?;
    let store = Store::open(&layout.database()).context("opening the store")?;

    let mut build = BuildInfo::current();
    // Test seam: lets the test suite pose as a daemon from another build.
    if let Ok(fake) = std::env::var("BANGER_FAKE_BUILD_ID") {
        build.build_id = fake;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = instance::bind(&layout.socket())?;
        let socket = layout.socket();
        let access = network_access(&config).await?;
        info!(via = %access.via, bridge = %access.config.bridge, subnet = %access.config.subnet, "host network");
        let routing = Arc::clone(&access.routing);
        let resolved = banger_net::routing::systemd_resolved_active();
        let host_netns = bangerd::network::shares_resolved_network_namespace();
        let network = Network::start_with(access).await;
        let network = if resolved && !host_netns {
            info!("systemd-resolved runs, but bangerd is in a private network namespace: .vm is not routed");
            network.with_routing_skipped(
                "bangerd runs in another network namespace than systemd-resolved",
            )
        } else {
            network.with_routing(resolved.then_some(routing))
        };
        let storage = banger_disk::detect_strategy(&layout.state_dir)
            .context("probing storage in the state dir")?;
        info!(strategy = %storage.strategy, dir = %storage.dir.display(), "storage strategy");
        let subsystems = Subsystems {
            network,
            disk: Arc::new(banger_disk::HostDiskOps::new()),
            storage,
            vmm: if nix::unistd::geteuid().is_root() {
                Arc::new(banger_firecracker::ProcessVmm)
            } else {
                // Sim guests need root: banger-helper starts them.
                Arc::new(banger_helper::HelperVmm::new(&config.helper_socket))
            },
            readiness: Arc::new(bangerd::vm::boot::Probes),
            bootstrap: if nix::unistd::geteuid().is_root() {
                Arc::new(banger_bootstrap::HostBootstrap)
            } else {
                // debootstrap needs root: banger-helper runs it.
                Arc::new(banger_helper::HelperBootstrap::new(&config.helper_socket))
            },
        };
        let daemon = Daemon::new(layout, config, Arc::new(store), build, subsystems);
        if let Err(err) = bangerd::ssh::write_ssh_config(&daemon.layout, daemon.keys.private_path()) {
            tracing::warn!(error = %err, "cannot write banger's ssh_config");
        }
        bangerd::reconcile::reconcile(&daemon).await;
        bangerd::disk_space::spawn_monitor(&daemon);
        info!(pid = std::process::id(), socket = %socket.display(), build = %daemon.build.build_id, "bangerd started");
        spawn_signal_handler(daemon.shutdown.clone())?;
        let server = tokio::spawn(bangerd::serve(listener, Arc::clone(&daemon), daemon.shutdown.clone()));
        daemon.shutdown.cancelled().await;
        // A daemon started now waits for us instead of refusing to start.
        lock.mark_stopping();
        let _ = std::fs::remove_file(&socket);
        let _ = server.await;
        daemon.network.shutdown().await;
        info!("bangerd stopped");
        anyhow::Ok(())
    })
}

/// Root reaches the host network itself; any other uid through
/// banger-helper. A helper that cannot be reached is not fatal (the daemon
/// still lists, imports and explains), but every VM would fail on its
/// network, so it is said in the log and by `daemon status`.
async fn network_access(config: &Config) -> anyhow::Result<Access> {
    let direct = || -> anyhow::Result<Access> {
        Ok(Access {
            ops: Arc::new(banger_net::RealNetOps::connect().context("opening netlink")?),
            config: config.network.clone(),
            routing: Arc::new(banger_net::routing::Resolvectl::default()),
            pool_space: 0,
            via: Via::Netlink,
        })
    };
    if nix::unistd::geteuid().is_root() {
        return direct();
    }
    match Access::through_helper(&config.helper_socket, config.network.clone()).await {
        Ok(access) => Ok(access),
        Err(err) => {
            tracing::warn!(
                error = %err,
                "bangerd is not root and banger-helper cannot be reached: VMs cannot get a network \
                 (install the helper with `sudo make install-helper`, or run banger as root)"
            );
            let mut access = direct()?;
            access.via = Via::Unprivileged {
                uid: nix::unistd::geteuid().as_raw(),
                socket: config.helper_socket.clone(),
                error: err.to_string(),
            };
            Ok(access)
        }
    }
}

fn spawn_signal_handler(shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
        }
        shutdown.cancel();
    });
    Ok(())
}
