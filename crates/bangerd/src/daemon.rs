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
use banger_rpc::{ErrorCode, Request, RpcError};
use banger_store::{ResolveError, Store, StoreError};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

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
    ) -> Result<Value, RpcError> {
        use crate::services::*;
        let me = self.arc();
        match request {
            Request::Ping => reply(daemon_ops::ping(self)),
            Request::Status => reply(daemon_ops::status(self)),
            Request::Shutdown => reply(daemon_ops::shutdown(self)),
            Request::Sleep(params) => reply(daemon_ops::sleep(params, &events, &cancel).await?),
            Request::VmList => reply(vm_list::list(self)?),
            Request::VmShow(params) => reply(vm_list::show(self, &params.reference)?),
            Request::VmCreate(params) => {
                reply(vm_create::create(&me, params, &events, &cancel).await?)
            }
            Request::VmStart(params) => {
                reply(vm_start::start(&me, &params.reference, &events, &cancel).await?)
            }
            Request::VmRestart(params) => {
                reply(vm_start::restart(&me, &params.reference, &events, &cancel).await?)
            }
            Request::VmStop(params) => {
                reply(vm_stop::stop(&me, &params.reference, Mode::Graceful).await?)
            }
            Request::VmKill(params) => {
                reply(vm_stop::stop(&me, &params.reference, Mode::Kill).await?)
            }
            Request::VmDelete(params) => reply(vm_delete::delete(&me, &params.reference).await?),
            Request::VmSet(params) => reply(vm_set::set(&me, params).await?),
            Request::VmSshInfo(params) => reply(vm_info::ssh_info(self, &params.reference).await?),
            Request::VmHealth(params) => reply(vm_info::health(self, &params.reference).await?),
            Request::VmStats(params) => reply(vm_info::stats(self, &params.reference).await?),
            Request::VmPorts(params) => reply(vm_ports::ports(self, &params.reference).await?),
            Request::WorkspaceRecord(params) => reply(vm_workspace::record(&me, params).await?),
            Request::ImageList => reply(image_list::list(self)?),
            Request::ImageShow(params) => reply(image_list::show(self, &params.reference)?),
            Request::ImageImport(params) => {
                reply(image_import::import(self, params, &events, &cancel).await?)
            }
            Request::ImageBootstrap(params) => {
                reply(image_bootstrap::bootstrap(self, params, &events, &cancel).await?)
            }
            Request::ImageDelete(params) => {
                reply(image_import::delete(self, &params.reference).await?)
            }
            Request::ImagePromote(params) => {
                reply(image_import::promote(self, &params.reference).await?)
            }
            Request::KernelList => reply(kernel_list::list(self)?),
            Request::KernelShow(params) => reply(kernel_list::show(self, &params.reference)?),
            Request::KernelImport(params) => {
                reply(kernel_import::import(self, params, &cancel).await?)
            }
            Request::KernelBootstrap(params) => {
                reply(kernel_bootstrap::bootstrap(self, params, &events, &cancel).await?)
            }
            Request::KernelRm(params) => {
                reply(kernel_import::remove(self, &params.reference).await?)
            }
            Request::Doctor => reply(doctor::run(self).await?),
            Request::ImagePull(params) => {
                reply(image_pull::pull(self, params, &events, &cancel).await?)
            }
            Request::ImageRegister(params) => {
                reply(image_register::register(self, params, &events).await?)
            }
            Request::KernelPull(params) => {
                reply(image_pull::pull_kernel(self, params, &events, &cancel).await?)
            }
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
        self.dispatch(request, events, cancel).await
    }
}

struct ActiveGuard<'a>(&'a AtomicUsize);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn reply<T: Serialize>(value: T) -> Result<Value, RpcError> {
    serde_json::to_value(value).map_err(|err| RpcError::internal(format!("encoding reply: {err}")))
}

/// Maps store errors onto wire errors.
pub(crate) fn store_error(err: StoreError) -> RpcError {
    match err {
        StoreError::NameTaken { .. } => RpcError::new(ErrorCode::AlreadyExists, err.to_string()),
        StoreError::Conflict { .. } => RpcError::new(ErrorCode::Conflict, err.to_string()),
        StoreError::Missing { .. } => RpcError::not_found(err.to_string()),
        StoreError::Corrupt { .. } | StoreError::Sql(_) => {
            tracing::error!(error = ?err, "store failure");
            crate::errors::failed(ErrorCode::Internal, "recording the change", &err)
        }
    }
}

pub(crate) fn resolve_error(err: ResolveError) -> RpcError {
    match err {
        ResolveError::NotFound { .. } => RpcError::not_found(err.to_string()),
        ResolveError::Ambiguous { .. } => RpcError::new(ErrorCode::Ambiguous, err.to_string()),
    }
}

/// `outer: inner: innermost` for an error's sources.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = err.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.join(": ")
}
