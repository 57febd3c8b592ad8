//! The daemon's shared context and its request dispatch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use banger_bootstrap::BootstrapHost;
use banger_buildinfo::BuildInfo;
use banger_disk::{DiskOps, StrategyProbe};
use banger_firecracker::{Vmm, VmmProcess};
use banger_model::Id;
use banger_model::config::Config;
use banger_model::layout::Layout;
use banger_rpc::{Method, Request, RpcError};
use banger_store::Store;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::errors::{Doing, ServiceError};
use crate::network::Network;
use crate::server::{EventSink, Handler};
use crate::ssh::KeyStore;
use crate::vm::boot::Readiness;
use crate::vm::halt::Mode;
use crate::vm_locks::VmLocks;

/// The host-facing parts: real in `main`, fakes in tests.
#[derive(Debug)]
pub struct Subsystems {
    pub network: Network,
    pub disk: Arc<dyn DiskOps>,
    /// How VM root disks are made in the state dir (probed at start).
    pub storage: StrategyProbe,
    pub vmm: Arc<dyn Vmm>,
    pub readiness: Arc<dyn Readiness>,
    /// debootstrap and its mounts, for `image.bootstrap`.
    pub bootstrap: Arc<dyn BootstrapHost>,
}

/// Everything a request handler can reach.
#[derive(Debug)]
pub struct Daemon {
    pub layout: Layout,
    pub config: Config,
    pub store: Arc<Store>,
    pub build: BuildInfo,
    pub network: Network,
    pub disk: Arc<dyn DiskOps>,
    pub storage: StrategyProbe,
    pub vmm: Arc<dyn Vmm>,
    pub readiness: Arc<dyn Readiness>,
    pub bootstrap: Arc<dyn BootstrapHost>,
    pub keys: KeyStore,
    pub vm_locks: VmLocks,
    /// Published ports of running VMs.
    pub forwards: crate::forward::Forwards,
    /// Serialises image and kernel registry changes (names, default image).
    pub images_lock: tokio::sync::Mutex<()>,
    /// Serialises picking guest addresses and vsock ids.
    pub alloc_lock: tokio::sync::Mutex<()>,
    pub started_at: jiff::Timestamp,
    /// Fired to stop the daemon (by `daemon.shutdown` or a signal).
    pub shutdown: CancellationToken,
    /// VMM processes of running VMs.
    processes: Mutex<HashMap<Id, VmmProcess>>,
    active_requests: AtomicUsize,
    /// Test hook: lifecycle steps left before an injected crash (0: never).
    crash_after: AtomicUsize,
    me: Weak<Daemon>,
}

impl Daemon {
    pub fn new(
        layout: Layout,
        config: Config,
        store: Arc<Store>,
        build: BuildInfo,
        subsystems: Subsystems,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            keys: KeyStore::new(&layout, &config),
            layout,
            config,
            store,
            build,
            network: subsystems.network,
            disk: subsystems.disk,
            storage: subsystems.storage,
            vmm: subsystems.vmm,
            readiness: subsystems.readiness,
            bootstrap: subsystems.bootstrap,
            vm_locks: VmLocks::default(),
            forwards: crate::forward::Forwards::default(),
            images_lock: tokio::sync::Mutex::new(()),
            alloc_lock: tokio::sync::Mutex::new(()),
            started_at: jiff::Timestamp::now(),
            shutdown: CancellationToken::new(),
            processes: Mutex::new(HashMap::new()),
            active_requests: AtomicUsize::new(0),
            crash_after: AtomicUsize::new(0),
            me: me.clone(),
        })
    }

    /// This daemon as an `Arc`, for work that outlives a request.
    pub fn arc(&self) -> Arc<Self> {
        self.me
            .upgrade()
            .expect("the daemon is alive while it serves requests")
    }

    /// Requests currently running, including the caller's.
    pub fn active_requests(&self) -> usize {
        self.active_requests.load(Ordering::SeqCst)
    }

    /// Marks the end of a lifecycle step that changed the store or the
    /// host. A no-op unless a test armed [`Self::crash_after_steps`]: then
    /// the step that exhausts the count panics, which stops the operation
    /// where a crash would (nothing after the step runs), so tests can
    /// check that the next daemon's reconcile finishes or undoes it.
    pub fn checkpoint(&self, step: &'static str) {
        let armed = self
            .crash_after
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            });
        if armed == Ok(1) {
            panic!("injected crash after: {step}");
        }
    }

    /// Test hook: crash (panic) at the end of the `steps`-th step from now.
    #[doc(hidden)]
    pub fn crash_after_steps(&self, steps: usize) {
        self.crash_after.store(steps, Ordering::SeqCst);
    }

    pub fn put_process(&self, id: &Id, process: VmmProcess) {
        self.lock_processes().insert(id.clone(), process);
    }

    /// Whether this daemon holds a VMM for `id` that has not exited.
    pub fn has_live_process(&self, id: &Id) -> bool {
        self.lock_processes()
            .get(id)
            .is_some_and(|process| process.exited().is_none())
    }

    /// Takes `id`'s process out of the table if it is the one with `pid`;
    /// returns whether it was.
    pub fn take_process_if(&self, id: &Id, pid: u32) -> bool {
        let mut processes = self.lock_processes();
        let held = processes.get(id).is_some_and(|held| held.pid() == pid);
        if held {
            processes.remove(id);
        }
        held
    }

    pub fn take_process(&self, id: &Id) -> Option<VmmProcess> {
        self.lock_processes().remove(id)
    }

    fn lock_processes(&self) -> std::sync::MutexGuard<'_, HashMap<Id, VmmProcess>> {
        self.processes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn dispatch(
        &self,
        request: Request,
        events: EventSink,
        cancel: CancellationToken,
    ) -> Result<Value, ServiceError> {
        use crate::services::*;
        use banger_rpc::method as m;
        let me = self.arc();
        match request {
            Request::Ping(_) => reply::<m::Ping>(daemon_ops::ping(self)),
            Request::Status(_) => reply::<m::Status>(daemon_ops::status(self)),
            Request::Shutdown(_) => reply::<m::Shutdown>(daemon_ops::shutdown(self)),
            Request::Sleep(params) => {
                reply::<m::Sleep>(daemon_ops::sleep(params, &events, &cancel).await?)
            }
            Request::VmList(_) => reply::<m::VmList>(vm_list::list(self)?),
            Request::VmShow(params) => reply::<m::VmShow>(vm_list::show(self, &params.reference)?),
            Request::VmCreate(params) => {
                reply::<m::VmCreate>(vm_create::create(&me, params, &events, &cancel).await?)
            }
            Request::VmStart(params) => reply::<m::VmStart>(
                vm_start::start(&me, &params.reference, &events, &cancel).await?,
            ),
            Request::VmRestart(params) => reply::<m::VmRestart>(
                vm_start::restart(&me, &params.reference, &events, &cancel).await?,
            ),
            Request::VmStop(params) => {
                reply::<m::VmStop>(vm_stop::stop(&me, &params.reference, Mode::Graceful).await?)
            }
            Request::VmKill(params) => {
                reply::<m::VmKill>(vm_stop::stop(&me, &params.reference, Mode::Kill).await?)
            }
            Request::VmDelete(params) => {
                reply::<m::VmDelete>(vm_delete::delete(&me, &params.reference).await?)
            }
            Request::VmSet(params) => reply::<m::VmSet>(vm_set::set(&me, params).await?),
            Request::VmSshInfo(params) => {
                reply::<m::VmSshInfo>(vm_info::ssh_info(self, &params.reference).await?)
            }
            Request::VmHealth(params) => {
                reply::<m::VmHealth>(vm_info::health(self, &params.reference).await?)
            }
            Request::VmStats(params) => {
                reply::<m::VmStats>(vm_info::stats(self, &params.reference).await?)
            }
            Request::VmPorts(params) => {
                reply::<m::VmPorts>(vm_ports::ports(self, &params.reference).await?)
            }
            Request::VmPortForward(params) => {
                reply::<m::VmPortForward>(vm_port_forward::port_forward(&me, params).await?)
            }
            Request::WorkspaceRecord(params) => {
                reply::<m::WorkspaceRecord>(vm_workspace::record(&me, params).await?)
            }
            Request::ImageList(_) => reply::<m::ImageList>(image_list::list(self)?),
            Request::ImageShow(params) => {
                reply::<m::ImageShow>(image_list::show(self, &params.reference)?)
            }
            Request::ImageImport(params) => {
                reply::<m::ImageImport>(image_import::import(self, params, &events, &cancel).await?)
            }
            Request::ImageBootstrap(params) => reply::<m::ImageBootstrap>(
                image_bootstrap::bootstrap(self, params, &events, &cancel).await?,
            ),
            Request::ImageDelete(params) => {
                reply::<m::ImageDelete>(image_import::delete(self, &params.reference).await?)
            }
            Request::ImagePromote(params) => {
                reply::<m::ImagePromote>(image_import::promote(self, &params.reference).await?)
            }
            Request::KernelList(_) => reply::<m::KernelList>(kernel_list::list(self)?),
            Request::KernelShow(params) => {
                reply::<m::KernelShow>(kernel_list::show(self, &params.reference)?)
            }
            Request::KernelImport(params) => {
                reply::<m::KernelImport>(kernel_import::import(self, params, &cancel).await?)
            }
            Request::KernelBootstrap(params) => reply::<m::KernelBootstrap>(
                kernel_bootstrap::bootstrap(self, params, &events, &cancel).await?,
            ),
            Request::KernelRm(params) => {
                reply::<m::KernelRm>(kernel_import::remove(self, &params.reference).await?)
            }
            Request::Doctor(_) => reply::<m::Doctor>(doctor::run(self).await?),
            Request::ImagePull(params) => {
                reply::<m::ImagePull>(image_pull::pull(self, params, &events, &cancel).await?)
            }
            Request::ImageRegister(params) => {
                reply::<m::ImageRegister>(image_register::register(self, params, &events).await?)
            }
            Request::KernelPull(params) => reply::<m::KernelPull>(
                image_pull::pull_kernel(self, params, &events, &cancel).await?,
            ),
        }
    }
}

impl Handler for Daemon {
    async fn handle(
        &self,
        request: Request,
        events: EventSink,
        cancel: CancellationToken,
    ) -> Result<Value, RpcError> {
        self.active_requests.fetch_add(1, Ordering::SeqCst);
        let _active = ActiveGuard(&self.active_requests);
        // The one place service errors become wire errors.
        self.dispatch(request, events, cancel)
            .await
            .map_err(RpcError::from)
    }
}

struct ActiveGuard<'a>(&'a AtomicUsize);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Encodes method `M`'s result: a service answering with another type
/// does not compile.
fn reply<M: Method>(value: M::Result) -> Result<Value, ServiceError> {
    serde_json::to_value(value).doing("encoding reply")
}
