//! Create, stop, delete and every failure in between.

use std::time::Duration;

use banger_disk::fake::DiskOp;
use banger_firecracker::launch::VmmExit;
use banger_firecracker::vmm::{VmmCall, VmmOp};
use banger_model::vm::VmState;
use banger_net::fake::Op;
use banger_rpc::ErrorCode;
use bangerd::server::EventSink;
use bangerd::vm::halt::Mode;
use tokio_util::sync::CancellationToken;

use crate::harness::Harness;

#[tokio::test]
async fn create_then_delete_holds_then_releases_everything() {
    let h = Harness::new().await;
    let vm = h.create("web", true).await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    let api = vm.paths().api_socket();
    assert!(h.vmm.is_running(&api));
    assert_eq!(h.vm_taps(), [banger_net::vm_tap_name(&vm.id)]);
    assert!(h.net.nat().contains_key(&vm.id));
    assert!(h.net.ip_forward());
    assert_eq!(h.disk.live_roots().len(), 1);
    assert_eq!(h.disk.live_work_disks().len(), 1);
    assert_eq!(h.daemon.network.records.get("web"), Some(vm.network.ip));

    // What the VMM was told.
    let config = h.vmm.calls().into_iter().find_map(|call| match call {
        VmmCall::Configure { config, .. } => Some(config),
        _ => None,
    });
    let config = config.expect("the VMM was configured");
    let ip = vm.network.ip;
    let boot_args = config.boot_source.boot_args.clone().unwrap();
    assert!(
        boot_args.contains(&format!("ip={ip}::172.30.0.1:255.255.255.0:web:eth0:off")),
        "{boot_args}"
    );
    assert!(
        boot_args.contains("init=/usr/local/libexec/banger-first-boot"),
        "{boot_args}"
    );
    assert_eq!(config.drives.len(), 2);
    assert!(config.drives[0].is_root_device);
    assert_eq!(
        config.network_interfaces[0].host_dev_name,
        banger_net::vm_tap_name(&vm.id)
    );
    assert_eq!(config.vsock.as_ref().unwrap().guest_cid, 3);

    bangerd::services::vm_delete::delete(&h.daemon, "web")
        .await
        .unwrap();
    assert!(h.vm_names().is_empty());
    assert!(h.host_clean(&[api]));
    assert!(h.disk.is_clean(), "{:?}", h.disk.calls());
    assert_eq!(h.daemon.network.records.get("web"), None);
    assert!(!vm.dir.exists());
}

/// Where a failure is injected, and whether the VM should survive it.
#[derive(Debug, Clone, Copy)]
enum Inject {
    Disk(DiskOp),
    Net(Op),
    Vmm(VmmOp),
}

#[tokio::test]
async fn every_failure_rolls_back_what_was_acquired() {
    // (injection, kept in `error` because the VMM had run)
    let cases = [
        (Inject::Disk(DiskOp::CreateRoot), false),
        (Inject::Disk(DiskOp::MakeWorkDisk), false),
        (Inject::Disk(DiskOp::ApplyEdits), false),
        (Inject::Net(Op::EnsureBridge), false),
        (Inject::Net(Op::CreateTap), false),
        (Inject::Net(Op::AddVmNat), false),
        (Inject::Net(Op::EnableIpForward), false),
        (Inject::Vmm(VmmOp::Start), false),
        (Inject::Vmm(VmmOp::Configure), true),
    ];
    for (inject, kept) in cases {
        let h = Harness::new().await;
        match inject {
            Inject::Disk(op) => {
                h.disk.fail_always(op);
            }
            Inject::Net(op) => h.net.fail_always(op),
            Inject::Vmm(op) => h.vmm.fail_always(op),
        }
        let err = h
            .create("web", true)
            .await
            .expect_err("the injected failure must fail the create");
        let sockets = vec![
            h.daemon
                .layout
                .vm_dir(&banger_model::Id::from_stored("x"))
                .join("api.sock"),
        ];
        assert!(
            h.vm_taps().is_empty(),
            "{inject:?}: TAPs left: {:?}",
            h.vm_taps()
        );
        assert!(h.net.nat().is_empty(), "{inject:?}: NAT rules left");
        assert!(h.host_clean(&sockets), "{inject:?}");
        for call in h.vmm.calls() {
            if let VmmCall::Start { api_socket, .. } = call {
                assert!(
                    !h.vmm.is_running(&api_socket),
                    "{inject:?}: the VMM still runs"
                );
            }
        }
        if kept {
            let vms = h.daemon.store.list_vms().unwrap();
            assert_eq!(
                vms.len(),
                1,
                "{inject:?}: the VM should be kept for its logs"
            );
            assert_eq!(vms[0].state, VmState::Error, "{inject:?}");
            assert!(vms[0].last_error.is_some());
            assert!(vms[0].pid.is_none());
            assert!(err.hint.is_some(), "{inject:?}: {err:?}");
            // And deleting it afterwards releases the disks too.
            bangerd::services::vm_delete::delete(&h.daemon, "web")
                .await
                .unwrap();
        } else {
            assert!(
                h.vm_names().is_empty(),
                "{inject:?}: the VM record should be gone: {err:?}"
            );
        }
        assert!(
            h.disk.is_clean(),
            "{inject:?}: disks left: {:?}",
            h.disk.live_roots()
        );
        assert!(
            std::fs::read_dir(h.daemon.layout.vms_dir())
                .map(|mut d| d.next().is_none())
                .unwrap_or(true)
        );
    }
}

/// A guest that never answers within the boot timeout keeps running (its
/// TAP, NAT rules and VMM stay), recorded as running with the timeout as
/// its last error; the error says how to look and how to delete, and
/// deleting releases everything.
#[tokio::test]
async fn a_guest_that_never_answers_keeps_running() {
    let h = Harness::new().await;
    h.ready
        .never
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = h
        .create("web", true)
        .await
        .expect_err("a boot timeout fails the create");
    assert_eq!(err.code, ErrorCode::Timeout);
    let hint = err.hint.unwrap();
    for wanted in [
        "keeps running",
        "banger vm logs web",
        "banger vm ssh web",
        "banger vm delete web",
    ] {
        assert!(hint.contains(wanted), "{wanted}: {hint}");
    }
    let vms = h.daemon.store.list_vms().unwrap();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].state, VmState::Running);
    assert!(
        vms[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("boot timeout")
    );
    assert!(vms[0].tap.is_some());
    assert_eq!(h.vm_taps().len(), 1);
    assert!(!h.net.nat().is_empty());
    let running = h.vmm.calls().into_iter().any(|call| match call {
        VmmCall::Start { api_socket, .. } => h.vmm.is_running(&api_socket),
        _ => false,
    });
    assert!(running, "the VMM was stopped");
    assert!(h.daemon.network.records.get("web").is_some());

    bangerd::services::vm_delete::delete(&h.daemon, "web")
        .await
        .unwrap();
    assert!(h.vm_names().is_empty());
    assert!(h.vm_taps().is_empty());
    assert!(h.net.nat().is_empty());
    assert!(h.disk.is_clean());
}

#[tokio::test]
async fn cancelling_a_create_removes_everything() {
    let h = Harness::new().await;
    h.ready
        .never
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let cancel = CancellationToken::new();
    let params = banger_rpc::request::VmCreateParams {
        name: Some("web".into()),
        nat: Some(true),
        ..Default::default()
    };
    let events = EventSink::discard();
    let create = bangerd::services::vm_create::create(&h.daemon, params, &events, &cancel);
    let canceller = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
    };
    let (outcome, ()) = tokio::join!(create, canceller);
    assert_eq!(outcome.unwrap_err().to_wire().code, ErrorCode::Cancelled);
    assert!(h.vm_names().is_empty());
    assert!(h.vm_taps().is_empty());
    assert!(h.net.nat().is_empty());
    assert!(h.disk.is_clean());
}

#[tokio::test]
async fn a_guest_ignoring_ctrl_alt_del_is_killed_after_the_grace_window() {
    let h = Harness::new().await;
    let vm = h.create("web", false).await.unwrap();
    h.vmm.ignore_stop(true);
    let stopped = bangerd::services::vm_stop::stop(&h.daemon, "web", Mode::Graceful)
        .await
        .unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    let ops: Vec<&'static str> = h
        .vmm
        .calls()
        .iter()
        .map(|call| match call {
            VmmCall::Start { .. } => "start",
            VmmCall::Configure { .. } => "configure",
            VmmCall::Stop { .. } => "stop",
            VmmCall::Kill { .. } => "kill",
            VmmCall::Adopt { .. } => "adopt",
        })
        .collect();
    assert_eq!(ops, ["start", "configure", "stop", "kill"]);
    assert!(h.host_clean(&[vm.paths().api_socket()]));
    // Stopping again is a no-op; starting brings it back.
    bangerd::services::vm_stop::stop(&h.daemon, "web", Mode::Graceful)
        .await
        .unwrap();
    let started = bangerd::services::vm_start::start(
        &h.daemon,
        "web",
        &EventSink::discard(),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(started.state, VmState::Running);
    assert_eq!(
        started.network, vm.network,
        "the address is kept across restarts"
    );
}

#[tokio::test]
async fn a_vmm_that_dies_is_noticed_and_its_resources_released() {
    let h = Harness::new().await;
    let vm = h.create("web", true).await.unwrap();
    h.vmm.exit(&vm.paths().api_socket(), VmmExit::Signal(9));
    let mut state = VmState::Running;
    for _ in 0..100 {
        state = h.daemon.store.get_vm(&vm.id).unwrap().unwrap().state;
        if state != VmState::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state, VmState::Error);
    let stored = h.daemon.store.get_vm(&vm.id).unwrap().unwrap();
    assert!(stored.last_error.unwrap().contains("signal 9"));
    assert!(h.vm_taps().is_empty());
    assert!(h.net.nat().is_empty());
    assert_eq!(h.daemon.network.records.get("web"), None);
}

#[tokio::test]
async fn failed_start_keeps_the_vm_and_frees_the_host() {
    let h = Harness::new().await;
    let vm = h.create("web", true).await.unwrap();
    bangerd::services::vm_stop::stop(&h.daemon, "web", Mode::Kill)
        .await
        .unwrap();
    h.vmm.fail_always(VmmOp::Configure);
    let err = bangerd::services::vm_start::start(
        &h.daemon,
        "web",
        &EventSink::discard(),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err()
    .to_wire();
    assert!(err.message.contains("configuring the VMM"), "{err:?}");
    let stored = h.daemon.store.get_vm(&vm.id).unwrap().unwrap();
    assert_eq!(stored.state, VmState::Error);
    assert!(h.vm_taps().is_empty());
    assert!(h.net.nat().is_empty());
    assert_eq!(
        h.disk.live_roots().len(),
        1,
        "a failed start keeps the VM's disks"
    );
    // After fixing the cause, start works from the error state.
    h.vmm.clear_failures();
    let started = bangerd::services::vm_start::start(
        &h.daemon,
        "web",
        &EventSink::discard(),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(started.state, VmState::Running);
    assert!(started.last_error.is_none());
}

/// The store refuses writes (as on a full disk) while a VM is stopped: the
/// stop fails instead of reporting success, the host is stopped anyway, a
/// start fails clearly instead of answering "running", and once writes go
/// through again the record catches up by itself and the VM starts.
#[tokio::test]
async fn a_stop_that_cannot_be_recorded_fails_and_the_record_catches_up() {
    let h = Harness::new().await;
    let vm = h.create("web", true).await.unwrap();
    h.daemon.store.refuse_writes(true).unwrap();

    let err = bangerd::services::vm_stop::stop(&h.daemon, "web", Mode::Graceful)
        .await
        .expect_err("an unrecorded stop must not succeed")
        .to_wire();
    assert!(err.message.contains("recording the change"), "{err:?}");
    assert!(!h.vmm.is_running(&vm.paths().api_socket()));
    assert!(h.vm_taps().is_empty() && h.net.nat().is_empty());
    let start = bangerd::services::vm_start::start(
        &h.daemon,
        "web",
        &EventSink::discard(),
        &CancellationToken::new(),
    )
    .await;
    assert!(start.is_err(), "start answered {start:?} with no VMM");
    assert!(h.vm_taps().is_empty(), "a failed start left a TAP");
    let stale = h.daemon.store.get_vm(&vm.id).unwrap().unwrap();
    assert_eq!(stale.state, VmState::Running, "the store took a write");

    h.daemon.store.refuse_writes(false).unwrap();
    let since = std::time::Instant::now();
    let caught_up = async {
        loop {
            let stored = h.daemon.store.get_vm(&vm.id).unwrap().unwrap();
            if stored.state == VmState::Stopped {
                return stored;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let stored = tokio::time::timeout(Duration::from_secs(10), caught_up)
        .await
        .expect("the record caught up within 10 s");
    println!(
        "the record caught up {:?} after writes went through",
        since.elapsed()
    );
    assert_eq!(stored.pid, None);
    let started = bangerd::services::vm_start::start(
        &h.daemon,
        "web",
        &EventSink::discard(),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(started.state, VmState::Running);
    assert!(h.vmm.is_running(&vm.paths().api_socket()));
}

/// `default_image` naming nothing (not local, not in the catalog) is an
/// error naming the key, not a silent fallback to another image.
#[tokio::test]
async fn a_configured_default_image_that_names_nothing_is_an_error() {
    let config = banger_model::config::Config {
        default_image: Some("nope".into()),
        ..Default::default()
    };
    let h = Harness::with_config(config).await;
    // No image is the default yet.
    let mut image = h.daemon.store.default_image().unwrap().unwrap();
    h.daemon.store.delete_image(&image.id).unwrap();
    image.is_default = false;
    h.daemon.store.insert_image(&image).unwrap();

    let err = h.create("web", false).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err:?}");
    assert!(err.message.contains("default_image = \"nope\""), "{err:?}");
    assert!(err.hint.unwrap().contains("banger image list"));
    assert!(h.vm_names().is_empty());
}

/// The first event of a create is the spec the daemon resolved: sizes a
/// request leaves out come from `[vm_defaults]`, and the VM gets exactly
/// that spec.
#[tokio::test]
async fn a_create_announces_its_resolved_spec_first() {
    use banger_model::defaults::Provenance;
    use banger_rpc::Event;
    use banger_rpc::frame::ResponseBody;

    let mut config = banger_model::config::Config::default();
    config.vm_defaults.vcpu = Some(3);
    let h = Harness::with_config(config).await;
    let (events, mut rx) = EventSink::recording();
    let params = banger_rpc::request::VmCreateParams {
        memory_mib: Some(512),
        ..Default::default()
    };
    let vm =
        bangerd::services::vm_create::create(&h.daemon, params, &events, &CancellationToken::new())
            .await
            .unwrap();
    let mut seen = Vec::new();
    while let Ok(frame) = rx.try_recv() {
        if let ResponseBody::Event(event) = frame.body {
            seen.push(event);
        }
    }
    let Some(Event::Spec { spec }) = seen.first() else {
        panic!("the first event is not the spec: {seen:?}");
    };
    assert_eq!(spec.name.value, vm.name);
    assert_eq!(spec.name.provenance, Provenance::Builtin);
    assert_eq!(
        (spec.vcpu.value, spec.vcpu.provenance),
        (3, Provenance::Config)
    );
    assert_eq!(
        (spec.memory_mib.value, spec.memory_mib.provenance),
        (512, Provenance::Flag)
    );
    assert_eq!(
        (spec.nat.value, spec.nat.provenance),
        (true, Provenance::Builtin)
    );
    // The harness's config runs `sim`.
    assert_eq!(spec.vmm.provenance, Provenance::Config);
    assert_eq!(vm.spec, spec.spec());
    assert_eq!((vm.nat, vm.vmm), (spec.nat.value, spec.vmm.value));
    assert_eq!(
        seen.iter()
            .filter(|event| matches!(event, Event::Spec { .. }))
            .count(),
        1
    );
}
