//! A daemon in-process, wired to fakes.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use banger_bootstrap::FakeBootstrap;
use banger_disk::StrategyProbe;
use banger_disk::fake::FakeDiskOps;
use banger_disk::strategy::Support;
use banger_firecracker::FakeVmm;
use banger_model::config::Config;
use banger_model::image::{Image, ImageSource};
use banger_model::layout::Layout;
use banger_model::vm::StorageStrategy;
use banger_model::{ByteSize, Id, Name};
use banger_net::fake::FakeNetOps;
use banger_rpc::RpcError;
use banger_rpc::request::VmCreateParams;
use banger_store::Store;
use bangerd::Daemon;
use bangerd::daemon::Subsystems;
use bangerd::network::Network;
use bangerd::server::EventSink;
use bangerd::vm::boot::Readiness;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

/// Readiness that answers as told.
#[derive(Debug, Default)]
pub(crate) struct FakeReadiness {
    pub(crate) never: AtomicBool,
}

impl Readiness for FakeReadiness {
    fn agent<'a>(&'a self, _vsock: &'a Path) -> BoxFuture<'a, bool> {
        let ready = !self.never.load(Ordering::SeqCst);
        Box::pin(async move { ready })
    }

    fn ssh(&self, _ip: Ipv4Addr) -> BoxFuture<'_, bool> {
        let ready = !self.never.load(Ordering::SeqCst);
        Box::pin(async move { ready })
    }
}

pub(crate) struct Harness {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) daemon: Arc<Daemon>,
    pub(crate) net: Arc<FakeNetOps>,
    pub(crate) disk: Arc<FakeDiskOps>,
    pub(crate) vmm: Arc<FakeVmm>,
    pub(crate) ready: Arc<FakeReadiness>,
    pub(crate) bootstrap: Arc<FakeBootstrap>,
}

#[allow(clippy::too_many_arguments)]
async fn new_daemon(
    layout: Layout,
    config: Config,
    store: Arc<Store>,
    net: &Arc<FakeNetOps>,
    disk: &Arc<FakeDiskOps>,
    vmm: &Arc<FakeVmm>,
    ready: &Arc<FakeReadiness>,
    bootstrap: &Arc<FakeBootstrap>,
) -> Arc<Daemon> {
    let network = Network::start(net.clone(), config.network.clone()).await;
    let storage = StrategyProbe {
        dir: layout.state_dir.clone(),
        strategy: StorageStrategy::Copy,
        reflink: Support::No("fake".into()),
        device_mapper: None,
    };
    let subsystems = Subsystems {
        network,
        disk: disk.clone(),
        storage,
        vmm: vmm.clone(),
        readiness: ready.clone(),
        bootstrap: bootstrap.clone(),
    };
    Daemon::new(
        layout,
        config,
        store,
        banger_buildinfo::BuildInfo::current(),
        subsystems,
    )
}

impl Harness {
    pub(crate) async fn new() -> Self {
        Self::with_config(Config::default()).await
    }

    pub(crate) async fn with_config(mut config: Config) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let layout = Layout::from_lookup(|key| match key {
            "HOME" => Some(root.join("home").to_string_lossy().into_owned()),
            "XDG_RUNTIME_DIR" => Some(root.join("run").to_string_lossy().into_owned()),
            _ => None,
        })
        .unwrap();
        config.vmm = banger_model::vm::VmmKind::Sim;
        config.simvm_bin = Some("/bin/true".into());
        config.network.dns_listen = "127.0.0.1:0".parse().unwrap();
        config.network.tap_pool_size = 0;
        config.boot_timeout = std::time::Duration::from_millis(300);
        config.stop_grace = std::time::Duration::from_millis(200);
        let store = Arc::new(Store::open(&layout.database()).unwrap());
        let net = Arc::new(FakeNetOps::new());
        let disk = Arc::new(FakeDiskOps::new());
        let vmm = Arc::new(FakeVmm::new());
        let ready = Arc::new(FakeReadiness::default());
        let bootstrap = Arc::new(FakeBootstrap::new());
        let daemon = new_daemon(layout, config, store, &net, &disk, &vmm, &ready, &bootstrap).await;
        let harness = Self {
            _dir: dir,
            daemon,
            net,
            disk,
            vmm,
            ready,
            bootstrap,
        };
        let daemon = &harness.daemon;
        let image = Image {
            id: Id::generate(),
            name: Name::parse("debian").unwrap(),
            kernel_id: None,
            kernel_name: None,
            rootfs_path: daemon.layout.images_dir().join("img/rootfs.ext4"),
            work_seed_path: Some(daemon.layout.images_dir().join("img/work-seed.ext4")),
            rootfs_size: ByteSize::gib(1),
            source: ImageSource::Register,
            is_default: true,
            created_at: jiff::Timestamp::now(),
        };
        daemon.store.insert_image(&image).unwrap();
        harness
    }

    /// Replaces the daemon with a new one over the same store, state dir
    /// and host (the fakes keep their TAPs, rules, disks and VMMs), as the
    /// daemon started after a crash would be. Reconcile is not run.
    pub(crate) async fn restart(&mut self) {
        self.daemon = new_daemon(
            self.daemon.layout.clone(),
            self.daemon.config.clone(),
            Arc::clone(&self.daemon.store),
            &self.net,
            &self.disk,
            &self.vmm,
            &self.ready,
            &self.bootstrap,
        )
        .await;
    }

    pub(crate) async fn create(
        &self,
        name: &str,
        nat: bool,
    ) -> Result<banger_model::vm::Vm, RpcError> {
        let params = VmCreateParams {
            name: Some(name.into()),
            nat: Some(nat),
            ..Default::default()
        };
        bangerd::services::vm_create::create(
            &self.daemon,
            params,
            &EventSink::discard(),
            &CancellationToken::new(),
        )
        .await
        .map_err(RpcError::from)
    }

    pub(crate) fn vm_names(&self) -> Vec<String> {
        self.daemon
            .store
            .list_vms()
            .unwrap()
            .iter()
            .map(|vm| vm.name.to_string())
            .collect()
    }

    /// TAPs named after VMs (not pool TAPs).
    pub(crate) fn vm_taps(&self) -> Vec<String> {
        self.net
            .taps()
            .keys()
            .filter(|name| !name.starts_with("btap-pool-"))
            .cloned()
            .collect()
    }

    /// No host resource held: TAPs, NAT rules, running VMMs.
    pub(crate) fn host_clean(&self, api_sockets: &[std::path::PathBuf]) -> bool {
        self.vm_taps().is_empty()
            && self.net.nat().is_empty()
            && api_sockets
                .iter()
                .all(|socket| !self.vmm.is_running(socket))
    }
}
