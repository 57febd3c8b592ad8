//! `daemon.ping`, `daemon.status`, `daemon.shutdown`, `daemon.sleep`.

use std::time::Duration;

use banger_model::vm::VmState;
use banger_rpc::request::SleepParams;
use banger_rpc::response::{Empty, NetworkStatus, PingResult, SleepResult, StatusResult};
use banger_rpc::{Event, PROTOCOL_VERSION};
use tokio_util::sync::CancellationToken;

use crate::daemon::Daemon;
use crate::errors::ServiceError;
use crate::server::EventSink;

pub fn ping(daemon: &Daemon) -> PingResult {
    PingResult {
        build: daemon.build.clone(),
        pid: std::process::id(),
        protocol: PROTOCOL_VERSION,
        config: daemon.config.fingerprint,
    }
}

pub fn status(daemon: &Daemon) -> StatusResult {
    let vms = daemon.store.list_vms().unwrap_or_default();
    StatusResult {
        build: daemon.build.clone(),
        pid: std::process::id(),
        started_at: daemon.started_at.to_string(),
        socket: daemon.layout.socket(),
        log_path: daemon.layout.daemon_log(),
        state_dir: daemon.layout.state_dir.clone(),
        config_path: daemon.layout.config_file(),
        log_level: daemon.config.log_level.as_str().to_owned(),
        dns_listeners: daemon.network.dns_listeners(),
        network: NetworkStatus {
            bridge: daemon.network.config.bridge.clone(),
            subnet: daemon.network.config.subnet.to_string(),
            via: daemon.network.via().to_string(),
        },
        vms_total: vms.len(),
        vms_running: vms.iter().filter(|vm| vm.state == VmState::Running).count(),
        active_requests: daemon.active_requests(),
    }
}

/// Answers, then stops the daemon: the shutdown token fires after the
/// reply has been queued.
pub fn shutdown(daemon: &Daemon) -> Empty {
    tracing::info!("shutdown requested");
    let token = daemon.shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        token.cancel();
    });
    Empty {}
}

/// Sleeps for `millis`, emitting a progress event per tick; stops early
/// when cancelled. Exercises events and cancellation end to end.
pub async fn sleep(
    params: SleepParams,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<SleepResult, ServiceError> {
    let tick = Duration::from_millis(params.tick_millis.unwrap_or(100).max(1));
    let total = Duration::from_millis(params.millis);
    let started = tokio::time::Instant::now();
    loop {
        let elapsed = started.elapsed();
        events.emit(Event::Progress {
            task: "sleep".into(),
            current: elapsed.as_millis() as u64,
            total: Some(params.millis),
            unit: "ms".into(),
            detail: None,
        });
        if elapsed >= total {
            return Ok(SleepResult {
                slept_ms: elapsed.as_millis() as u64,
            });
        }
        tokio::select! {
            () = cancel.cancelled() => return Err(ServiceError::Cancelled),
            () = tokio::time::sleep(tick.min(total - elapsed)) => {}
        }
    }
}
