//! [`HelperVmm`]: banger-firecracker's [`Vmm`] for a daemon that is not
//! root. VMMs that run as the user (Firecracker, simvm's qemu engine) are
//! started as usual; those that need root ([`LaunchSpec::needs_root`]: the
//! sim engine) are started by banger-helper, which also kills them and
//! finds them again after a daemon restart. The daemon still sees their
//! exit through a pidfd, and talks to their API socket itself (simvm gives
//! it to the user).

use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_firecracker::launch::{
    self, ConfigureError, FindVmmError, KillVmmError, LaunchError, StopVmmError,
};
use banger_firecracker::vmm::KILL_WAIT;
use banger_firecracker::{LaunchSpec, ProcessVmm, VmConfig, Vmm, VmmProcess};
use futures::future::BoxFuture;
use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

use crate::client::{HelperCallError, HelperClient};
use crate::protocol::{FindSimParams, PidParams, StartSimParams, method};

/// VMMs of a daemon that is not root; see the module docs.
#[derive(Debug, Clone)]
pub struct HelperVmm {
    socket: PathBuf,
    direct: ProcessVmm,
}

impl HelperVmm {
    /// Through the helper listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            direct: ProcessVmm,
        }
    }

    async fn call<M: banger_rpc::Method>(
        &self,
        params: M::Params,
    ) -> Result<M::Result, HelperCallError> {
        HelperClient::connect(&self.socket)
            .await?
            .call::<M>(params)
            .await
    }

    async fn start_via_helper(
        &self,
        spec: &LaunchSpec,
        cancel: &CancellationToken,
    ) -> Result<VmmProcess, LaunchError> {
        drop(launch::prepare(spec).await?);
        let helper_error = |source: HelperCallError| LaunchError::Helper {
            binary: spec.binary.clone(),
            source: Box::new(source),
        };
        let started = self
            .call::<method::StartSim>(StartSimParams {
                id: spec.id.clone(),
                api_socket: spec.api_socket.clone(),
                console_log: spec.console_log.clone(),
                log_path: spec.log_path.clone(),
            })
            .await
            .map_err(helper_error)?;
        let process = launch::adopt_pid(started.pid, &spec.api_socket)
            .map_err(|source| LaunchError::Helper {
                binary: spec.binary.clone(),
                source: Box::new(source),
            })?
            .ok_or_else(|| LaunchError::Exited {
                binary: spec.binary.clone(),
                exit: launch::VmmExit::Unknown,
                console_log: spec.console_log.clone(),
            })?;
        tracing::debug!(pid = process.pid(), "vmm started by banger-helper");
        if let Err(err) = launch::api_ready(spec, &process, cancel).await {
            if let Err(error) = self.kill_process(&process, Duration::from_secs(10)).await {
                tracing::warn!(%error, "could not kill a vmm that failed to start");
            }
            return Err(err);
        }
        Ok(process)
    }

    /// SIGKILL: directly when the VMM is the user's, else through the
    /// helper; then waits (bounded) until it is gone.
    async fn kill_process(&self, process: &VmmProcess, wait: Duration) -> Result<(), KillVmmError> {
        match process.signal(Signal::SIGKILL) {
            Ok(()) => {}
            Err(KillVmmError::Signal { source, .. })
                if source.raw_os_error() == Some(libc::EPERM) =>
            {
                self.call::<method::KillSim>(PidParams { pid: process.pid() })
                    .await
                    .map_err(|source| KillVmmError::Helper {
                        pid: process.pid(),
                        source: Box::new(source),
                    })?;
            }
            Err(error) => return Err(error),
        }
        launch::wait_gone(process, wait).await
    }

    async fn adopt_any(&self, api_socket: &Path) -> Result<Option<VmmProcess>, FindVmmError> {
        if let Some(process) = self.direct.adopt(api_socket).await? {
            return Ok(Some(process));
        }
        // Nobody of ours listens there. A VMM of root's may: ask the helper
        // only when the socket exists, so a daemon without a helper still
        // reconciles VMMs that are simply gone.
        if std::fs::symlink_metadata(api_socket).is_err() {
            return Ok(None);
        }
        let helper_error = |source: HelperCallError| FindVmmError::Helper {
            path: api_socket.to_owned(),
            source: Box::new(source),
        };
        let found = match self
            .call::<method::FindSim>(FindSimParams {
                api_socket: api_socket.to_owned(),
            })
            .await
        {
            Ok(found) => found,
            // A helper that does not run sim guests has none of ours.
            Err(error)
                if error.rpc().map(|rpc| rpc.code)
                    == Some(banger_rpc::ErrorCode::FailedPrecondition) =>
            {
                return Ok(None);
            }
            Err(error) => return Err(helper_error(error)),
        };
        match found.pid {
            Some(pid) => launch::adopt_pid(pid, api_socket),
            None => Ok(None),
        }
    }
}

impl Vmm for HelperVmm {
    fn start<'a>(
        &'a self,
        spec: &'a LaunchSpec,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<VmmProcess, LaunchError>> {
        if spec.needs_root {
            Box::pin(self.start_via_helper(spec, cancel))
        } else {
            self.direct.start(spec, cancel)
        }
    }

    fn configure<'a>(
        &'a self,
        vmm: &'a VmmProcess,
        config: &'a VmConfig,
    ) -> BoxFuture<'a, Result<(), ConfigureError>> {
        self.direct.configure(vmm, config)
    }

    fn stop<'a>(&'a self, vmm: &'a VmmProcess) -> BoxFuture<'a, Result<(), StopVmmError>> {
        self.direct.stop(vmm)
    }

    fn kill<'a>(&'a self, vmm: &'a VmmProcess) -> BoxFuture<'a, Result<(), KillVmmError>> {
        Box::pin(self.kill_process(vmm, KILL_WAIT))
    }

    fn adopt<'a>(
        &'a self,
        api_socket: &'a Path,
    ) -> BoxFuture<'a, Result<Option<VmmProcess>, FindVmmError>> {
        Box::pin(self.adopt_any(api_socket))
    }

    fn adopt_starting<'a>(
        &'a self,
        api_socket: &'a Path,
    ) -> BoxFuture<'a, Result<Option<VmmProcess>, FindVmmError>> {
        Box::pin(async move {
            match self.direct.adopt_starting(api_socket).await? {
                Some(process) => Ok(Some(process)),
                None => self.adopt_any(api_socket).await,
            }
        })
    }
}
