//! A crash after every step of delete, create and start: the operation is
//! stopped where a crash would stop it (an injected panic at the step's
//! checkpoint; nothing after it runs), a new daemon starts over the same
//! store and host, and its reconcile must leave store and host agreeing —
//! the VM finished or undone, never half-done.

use std::path::PathBuf;

use banger_model::vm::{Vm, VmState};
use bangerd::reconcile::{Report, reconcile};
use bangerd::server::EventSink;
use tokio_util::sync::CancellationToken;

use crate::harness::Harness;

/// How an operation run with a crash armed ended.
enum Outcome {
    Crashed,
    Finished,
}

/// Runs `operation` on the daemon with a crash armed at step `step`.
async fn with_crash_at<F, T>(h: &Harness, step: usize, operation: F) -> Outcome
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    h.daemon.crash_after_steps(step);
    let joined = tokio::spawn(operation).await;
    h.daemon.crash_after_steps(0);
    match joined {
        Err(err) if err.is_panic() => Outcome::Crashed,
        Err(err) => panic!("the operation did not run: {err}"),
        Ok(_) => Outcome::Finished,
    }
}

/// Restarts the daemon and reconciles; the report has no problems.
async fn restart_and_reconcile(h: &mut Harness, step: usize) -> Report {
    h.restart().await;
    let report = reconcile(&h.daemon).await;
    assert!(report.problems.is_empty(), "step {step}: {report:?}");
    report
}

fn api_socket(vm: &Vm) -> PathBuf {
    vm.paths().api_socket()
}

/// Store and host agree about a VM that must be gone.
fn assert_gone(h: &Harness, vm: &Vm, step: usize) {
    assert!(h.vm_names().is_empty(), "step {step}: {:?}", h.vm_names());
    assert!(
        h.host_clean(&[api_socket(vm)]),
        "step {step}: host not clean"
    );
    assert!(
        h.disk.is_clean(),
        "step {step}: disks left: {:?}",
        h.disk.calls()
    );
    assert!(!vm.dir.exists(), "step {step}: {} left", vm.dir.display());
}

/// Store and host agree about a VM that must be stopped with its disks.
fn assert_stopped_with_disks(h: &Harness, vm: &Vm, step: usize) {
    let stored = h
        .daemon
        .store
        .get_vm(&vm.id)
        .unwrap()
        .expect("the VM is kept");
    assert_eq!(stored.state, VmState::Stopped, "step {step}");
    assert!(
        h.host_clean(&[api_socket(vm)]),
        "step {step}: host not clean"
    );
    assert_eq!(h.disk.live_roots().len(), 1, "step {step}: root disk");
    assert_eq!(h.disk.live_work_disks().len(), 1, "step {step}: work disk");
}

/// Store and host agree about a VM that must be running.
fn assert_running(h: &Harness, vm: &Vm, step: usize) {
    let stored = h
        .daemon
        .store
        .get_vm(&vm.id)
        .unwrap()
        .expect("the VM is kept");
    assert_eq!(stored.state, VmState::Running, "step {step}");
    assert!(h.vmm.is_running(&api_socket(vm)), "step {step}: no VMM");
    assert_eq!(
        h.vm_taps(),
        [banger_net::vm_tap_name(&vm.id)],
        "step {step}"
    );
}

#[tokio::test]
async fn a_delete_crashed_after_any_step_is_finished_by_the_next_daemon() {
    let mut crashes = 0;
    for step in 1.. {
        let mut h = Harness::new().await;
        let vm = h.create("web", true).await.unwrap();
        let daemon = h.daemon.clone();
        let outcome = with_crash_at(&h, step, async move {
            bangerd::services::vm_delete::delete(&daemon, "web").await
        })
        .await;
        if let Outcome::Finished = outcome {
            assert_gone(&h, &vm, step);
            break;
        }
        crashes += 1;
        // What the crash left is never a usable-looking VM without disks.
        let left = h.daemon.store.get_vm(&vm.id).unwrap();
        if let Some(left) = &left {
            assert_eq!(left.state, VmState::Deleting, "step {step}");
        }
        let report = restart_and_reconcile(&mut h, step).await;
        let finished: &[&str] = if left.is_some() { &["web"] } else { &[] };
        assert_eq!(report.deleted, finished, "step {step}: {report:?}");
        assert_gone(&h, &vm, step);
    }
    println!(
        "delete: crashed after each of its {crashes} steps; the next daemon finished every one"
    );
    assert!(crashes >= 4, "only {crashes} steps");
}

#[tokio::test]
async fn a_create_crashed_after_any_step_is_undone_or_kept_running() {
    let mut crashes = 0;
    for step in 1.. {
        let mut h = Harness::new().await;
        let daemon = h.daemon.clone();
        let outcome = with_crash_at(&h, step, async move {
            let params = banger_rpc::request::VmCreateParams {
                name: Some("web".into()),
                nat: Some(true),
                ..Default::default()
            };
            bangerd::services::vm_create::create(
                &daemon,
                params,
                &EventSink::discard(),
                &CancellationToken::new(),
            )
            .await
        })
        .await;
        let vm = h.daemon.store.list_vms().unwrap().pop();
        if let Outcome::Finished = outcome {
            assert_running(&h, &vm.expect("created"), step);
            break;
        }
        crashes += 1;
        let report = restart_and_reconcile(&mut h, step).await;
        match vm {
            // Crashed after it was recorded running: adopted as it is.
            Some(vm) if report.adopted == ["web"] => assert_running(&h, &vm, step),
            Some(vm) => {
                assert_eq!(report.removed, ["web"], "step {step}: {report:?}");
                assert_gone(&h, &vm, step);
            }
            None => assert!(h.host_clean(&[]) && h.disk.is_clean(), "step {step}"),
        }
    }
    println!("create: crashed after each of its {crashes} steps; every one undone or adopted");
    assert!(crashes >= 6, "only {crashes} steps");
}

#[tokio::test]
async fn a_start_crashed_after_any_step_ends_stopped_or_running() {
    let mut crashes = 0;
    for step in 1.. {
        let mut h = Harness::new().await;
        let vm = h.create("web", true).await.unwrap();
        bangerd::services::vm_stop::stop(&h.daemon, "web", bangerd::vm::halt::Mode::Kill)
            .await
            .unwrap();
        let daemon = h.daemon.clone();
        let outcome = with_crash_at(&h, step, async move {
            bangerd::services::vm_start::start(
                &daemon,
                "web",
                &EventSink::discard(),
                &CancellationToken::new(),
            )
            .await
        })
        .await;
        if let Outcome::Finished = outcome {
            assert_running(&h, &vm, step);
            break;
        }
        crashes += 1;
        let report = restart_and_reconcile(&mut h, step).await;
        if report.adopted == ["web"] {
            assert_running(&h, &vm, step);
        } else {
            assert_stopped_with_disks(&h, &vm, step);
        }
    }
    println!(
        "start: crashed after each of its {crashes} steps; every one ended stopped or running"
    );
    assert!(crashes >= 4, "only {crashes} steps");
}
