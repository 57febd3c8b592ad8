//! The narrow seam the daemon drives VMMs through: [`Vmm`], with the real
//! implementation [`ProcessVmm`] and a recording fake [`FakeVmm`] that can
//! inject failures, so rollback paths are unit-tested without root.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use hyper::{Method, StatusCode};
use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

use crate::client::{ApiClient, ApiRequestError};
use crate::launch::{
    self, ConfigureError, ExitNotifier, ExitWatch, FindVmmError, KillVmmError, LaunchError,
    LaunchSpec, StopVmmError, VmConfig, VmmExit, VmmProcess,
};

/// Starts, configures, stops and kills VMM processes.
pub trait Vmm: Send + Sync + std::fmt::Debug {
    /// Starts the VMM and waits until its API answers.
    fn start<'a>(
        &'a self,
        spec: &'a LaunchSpec,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<VmmProcess, LaunchError>>;

    /// Sends the configuration, then `InstanceStart`.
    fn configure<'a>(
        &'a self,
        vmm: &'a VmmProcess,
        config: &'a VmConfig,
    ) -> BoxFuture<'a, Result<(), ConfigureError>>;

    /// Asks the guest to shut down (`SendCtrlAltDel`); the caller waits on
    /// the process's exit watch and kills it after its grace window.
    fn stop<'a>(&'a self, vmm: &'a VmmProcess) -> BoxFuture<'a, Result<(), StopVmmError>>;

    /// SIGKILLs the VMM and waits (bounded) until it is gone.
    fn kill<'a>(&'a self, vmm: &'a VmmProcess) -> BoxFuture<'a, Result<(), KillVmmError>>;

    /// Finds a running VMM by its API socket (re-adoption after a restart).
    fn adopt<'a>(
        &'a self,
        api_socket: &'a Path,
    ) -> BoxFuture<'a, Result<Option<VmmProcess>, FindVmmError>>;

    /// [`Vmm::adopt`], and also a VMM started for `api_socket` that does not
    /// listen yet: for a create or start that a crash interrupted.
    fn adopt_starting<'a>(
        &'a self,
        api_socket: &'a Path,
    ) -> BoxFuture<'a, Result<Option<VmmProcess>, FindVmmError>> {
        self.adopt(api_socket)
    }
}

/// How long [`ProcessVmm::kill`] waits for a SIGKILLed VMM to disappear.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// Real VMM processes: `firecracker` or `banger-simvm`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessVmm;

impl Vmm for ProcessVmm {
    fn start<'a>(
        &'a self,
        spec: &'a LaunchSpec,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<VmmProcess, LaunchError>> {
        Box::pin(launch::launch(spec, cancel))
    }

    fn configure<'a>(
        &'a self,
        vmm: &'a VmmProcess,
        config: &'a VmConfig,
    ) -> BoxFuture<'a, Result<(), ConfigureError>> {
        Box::pin(async move {
            let mut client = ApiClient::connect(vmm.api_socket()).await?;
            launch::configure_and_start(&mut client, config).await
        })
    }

    fn stop<'a>(&'a self, vmm: &'a VmmProcess) -> BoxFuture<'a, Result<(), StopVmmError>> {
        Box::pin(launch::send_ctrl_alt_del(vmm.api_socket()))
    }

    fn kill<'a>(&'a self, vmm: &'a VmmProcess) -> BoxFuture<'a, Result<(), KillVmmError>> {
        Box::pin(launch::kill(vmm, KILL_WAIT))
    }

    fn adopt<'a>(
        &'a self,
        api_socket: &'a Path,
    ) -> BoxFuture<'a, Result<Option<VmmProcess>, FindVmmError>> {
        Box::pin(async move { launch::adopt(api_socket) })
    }

    fn adopt_starting<'a>(
        &'a self,
        api_socket: &'a Path,
    ) -> BoxFuture<'a, Result<Option<VmmProcess>, FindVmmError>> {
        Box::pin(async move { launch::adopt_starting(api_socket) })
    }
}

/// An operation of [`Vmm`], for failure injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmmOp {
    Start,
    Configure,
    Stop,
    Kill,
    Adopt,
}

/// One call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmmCall {
    Start {
        id: String,
        api_socket: PathBuf,
    },
    Configure {
        api_socket: PathBuf,
        config: Box<VmConfig>,
    },
    Stop {
        api_socket: PathBuf,
    },
    Kill {
        api_socket: PathBuf,
        pid: u32,
    },
    Adopt {
        api_socket: PathBuf,
    },
}

#[derive(Debug)]
struct FakeVm {
    pid: u32,
    notifier: ExitNotifier,
    watch: ExitWatch,
}

#[derive(Debug, Default)]
struct FakeState {
    calls: Vec<VmmCall>,
    fail_once: Vec<VmmOp>,
    fail_always: Vec<VmmOp>,
    running: HashMap<PathBuf, FakeVm>,
    next_pid: u32,
    ignore_stop: bool,
}

/// A recording [`Vmm`] that runs nothing. Started VMMs stay "running" until
/// stopped, killed or [`FakeVmm::exit`]ed; injected failures look like the
/// real errors (a spawn error, a 400 fault from the API, a signal error).
#[derive(Debug, Default)]
pub struct FakeVmm {
    state: Mutex<FakeState>,
}

impl FakeVmm {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next call of `op` fails (once).
    pub fn fail_next(&self, op: VmmOp) {
        self.lock().fail_once.push(op);
    }

    /// Every call of `op` fails until [`FakeVmm::clear_failures`].
    pub fn fail_always(&self, op: VmmOp) {
        self.lock().fail_always.push(op);
    }

    pub fn clear_failures(&self) {
        let mut state = self.lock();
        state.fail_once.clear();
        state.fail_always.clear();
    }

    /// When set, `stop` is recorded but the guest does not shut down, so
    /// the caller's grace window and kill path run.
    pub fn ignore_stop(&self, ignore: bool) {
        self.lock().ignore_stop = ignore;
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<VmmCall> {
        self.lock().calls.clone()
    }

    /// Whether a VMM is running on `api_socket`.
    pub fn is_running(&self, api_socket: &Path) -> bool {
        self.lock().running.contains_key(api_socket)
    }

    /// Simulates the VMM on `api_socket` dying.
    pub fn exit(&self, api_socket: &Path, exit: VmmExit) {
        if let Some(vm) = self.lock().running.remove(api_socket) {
            vm.notifier.notify(exit);
        }
    }

    /// Registers a VMM as already running (as if started before a daemon
    /// restart), for adoption tests. Returns its pid.
    pub fn add_running(&self, api_socket: &Path) -> u32 {
        let mut state = self.lock();
        let pid = state.allocate_pid();
        let (notifier, watch) = ExitWatch::channel();
        state.running.insert(
            api_socket.to_owned(),
            FakeVm {
                pid,
                notifier,
                watch,
            },
        );
        pid
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `call` and says whether `op` should fail.
    fn record(&self, op: VmmOp, call: VmmCall) -> bool {
        let mut state = self.lock();
        state.calls.push(call);
        if let Some(i) = state.fail_once.iter().position(|o| *o == op) {
            state.fail_once.remove(i);
            return true;
        }
        state.fail_always.contains(&op)
    }
}

impl FakeState {
    fn allocate_pid(&mut self) -> u32 {
        self.next_pid += 1;
        100_000 + self.next_pid
    }
}

fn injected_fault(method: Method, path: &str) -> ApiRequestError {
    ApiRequestError::Fault {
        method,
        path: path.to_owned(),
        status: StatusCode::BAD_REQUEST,
        fault_message: "injected failure".to_owned(),
    }
}

impl Vmm for FakeVmm {
    fn start<'a>(
        &'a self,
        spec: &'a LaunchSpec,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<VmmProcess, LaunchError>> {
        Box::pin(async move {
            let call = VmmCall::Start {
                id: spec.id.clone(),
                api_socket: spec.api_socket.clone(),
            };
            if self.record(VmmOp::Start, call) {
                return Err(LaunchError::Spawn {
                    binary: spec.binary.clone(),
                    source: banger_exec::ExecError::Spawn {
                        program: spec.binary.display().to_string(),
                        source: io::Error::other("injected failure"),
                    },
                });
            }
            if cancel.is_cancelled() {
                return Err(LaunchError::Cancelled);
            }
            launch::validate_id(&spec.id)?;
            let mut state = self.lock();
            if state.running.contains_key(&spec.api_socket) {
                return Err(LaunchError::SocketInUse {
                    path: spec.api_socket.clone(),
                });
            }
            let pid = state.allocate_pid();
            let (notifier, watch) = ExitWatch::channel();
            let process = VmmProcess::detached(pid, spec.api_socket.clone(), watch.clone());
            state.running.insert(
                spec.api_socket.clone(),
                FakeVm {
                    pid,
                    notifier,
                    watch,
                },
            );
            Ok(process)
        })
    }

    fn configure<'a>(
        &'a self,
        vmm: &'a VmmProcess,
        config: &'a VmConfig,
    ) -> BoxFuture<'a, Result<(), ConfigureError>> {
        Box::pin(async move {
            let call = VmmCall::Configure {
                api_socket: vmm.api_socket().to_owned(),
                config: Box::new(config.clone()),
            };
            if self.record(VmmOp::Configure, call) {
                return Err(ConfigureError::Request {
                    step: "InstanceStart".to_owned(),
                    source: injected_fault(Method::PUT, "/actions"),
                });
            }
            Ok(())
        })
    }

    fn stop<'a>(&'a self, vmm: &'a VmmProcess) -> BoxFuture<'a, Result<(), StopVmmError>> {
        Box::pin(async move {
            let call = VmmCall::Stop {
                api_socket: vmm.api_socket().to_owned(),
            };
            if self.record(VmmOp::Stop, call) {
                return Err(StopVmmError::Request(injected_fault(
                    Method::PUT,
                    "/actions",
                )));
            }
            if !self.lock().ignore_stop {
                self.exit(vmm.api_socket(), VmmExit::Code(0));
            }
            Ok(())
        })
    }

    fn kill<'a>(&'a self, vmm: &'a VmmProcess) -> BoxFuture<'a, Result<(), KillVmmError>> {
        Box::pin(async move {
            let call = VmmCall::Kill {
                api_socket: vmm.api_socket().to_owned(),
                pid: vmm.pid(),
            };
            if self.record(VmmOp::Kill, call) {
                return Err(KillVmmError::Signal {
                    pid: vmm.pid(),
                    signal: Signal::SIGKILL,
                    source: io::Error::other("injected failure"),
                });
            }
            self.exit(vmm.api_socket(), VmmExit::Signal(Signal::SIGKILL as i32));
            Ok(())
        })
    }

    fn adopt<'a>(
        &'a self,
        api_socket: &'a Path,
    ) -> BoxFuture<'a, Result<Option<VmmProcess>, FindVmmError>> {
        Box::pin(async move {
            let call = VmmCall::Adopt {
                api_socket: api_socket.to_owned(),
            };
            if self.record(VmmOp::Adopt, call) {
                return Err(FindVmmError::Read {
                    path: PathBuf::from("/proc/net/unix"),
                    source: io::Error::other("injected failure"),
                });
            }
            let state = self.lock();
            Ok(state
                .running
                .get(api_socket)
                .map(|vm| VmmProcess::detached(vm.pid, api_socket.to_owned(), vm.watch.clone())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> LaunchSpec {
        LaunchSpec::new(
            "banger-simvm",
            name,
            format!("/vms/{name}/api.sock"),
            format!("/vms/{name}/console.log"),
        )
    }

    #[tokio::test]
    async fn fake_records_and_simulates_lifecycle() {
        let fake = FakeVmm::new();
        let cancel = CancellationToken::new();
        let vm = fake.start(&spec("a"), &cancel).await.unwrap();
        assert!(fake.is_running(vm.api_socket()));
        fake.configure(&vm, &VmConfig::default()).await.unwrap();
        fake.stop(&vm).await.unwrap();
        assert_eq!(vm.exit_watch().wait().await, VmmExit::Code(0));
        assert!(!fake.is_running(vm.api_socket()));
        assert!(matches!(
            fake.calls().as_slice(),
            [
                VmmCall::Start { .. },
                VmmCall::Configure { .. },
                VmmCall::Stop { .. }
            ]
        ));
    }

    #[tokio::test]
    async fn fake_injects_failures() {
        let fake = FakeVmm::new();
        let cancel = CancellationToken::new();
        fake.fail_next(VmmOp::Start);
        let err = fake.start(&spec("a"), &cancel).await.unwrap_err();
        assert!(matches!(err, LaunchError::Spawn { .. }), "{err:?}");
        let vm = fake.start(&spec("a"), &cancel).await.unwrap();

        fake.fail_always(VmmOp::Configure);
        for _ in 0..2 {
            let err = fake.configure(&vm, &VmConfig::default()).await.unwrap_err();
            let ConfigureError::Request { source, .. } = err else {
                panic!("unexpected {err:?}");
            };
            assert_eq!(source.status(), Some(StatusCode::BAD_REQUEST));
        }
        fake.clear_failures();

        fake.ignore_stop(true);
        fake.stop(&vm).await.unwrap();
        assert!(vm.exited().is_none(), "guest ignored ctrl-alt-del");
        fake.kill(&vm).await.unwrap();
        assert_eq!(vm.exited(), Some(VmmExit::Signal(9)));
    }

    #[tokio::test]
    async fn fake_adopts_running_vmms() {
        let fake = FakeVmm::new();
        let socket = PathBuf::from("/vms/x/api.sock");
        assert!(fake.adopt(&socket).await.unwrap().is_none());
        let pid = fake.add_running(&socket);
        let vm = fake.adopt(&socket).await.unwrap().unwrap();
        assert_eq!(vm.pid(), pid);
        fake.exit(&socket, VmmExit::Unknown);
        assert_eq!(vm.exit_watch().wait().await, VmmExit::Unknown);
    }

    /// Kills a test process if the test fails half-way.
    struct KillOnDrop(u32);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0 as i32), Signal::SIGKILL);
        }
    }

    /// The real implementation against a real process: `adopt` finds it by
    /// its socket and `kill` takes it down through the pidfd.
    #[tokio::test]
    async fn process_vmm_adopts_and_kills_a_real_process() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let script = dir.path().join("listener.py");
        fs_err::write(
            &script,
            "import socket,sys,time\ns=socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\ns.listen()\ntime.sleep(600)\n",
        )
        .unwrap();
        // Started detached, like a VMM.
        let console = fs_err::File::create(dir.path().join("console.log"))
            .unwrap()
            .into_parts()
            .0;
        let mut child = banger_exec::Cmd::new("python3")
            .arg(&script)
            .arg(&socket)
            .spawn_detached_async(Some(console))
            .unwrap();
        let pid = child.id().unwrap();
        let _kill = KillOnDrop(pid);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::UnixStream::connect(&socket).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "listener never came up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let vmm = ProcessVmm;
        let adopted = vmm.adopt(&socket).await.unwrap().expect("listener found");
        assert_eq!(adopted.pid(), pid);
        let waiter = tokio::spawn(async move { child.wait().await.unwrap() });
        vmm.kill(&adopted).await.unwrap();
        let status = waiter.await.unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(vmm.adopt(&socket).await.unwrap().is_none());
    }
}
