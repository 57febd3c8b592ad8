//! Reconcile against the fakes: what a dead daemon left behind.

use banger_model::Id;
use banger_model::vm::VmState;
use bangerd::reconcile::reconcile;

use crate::harness::Harness;

#[tokio::test]
async fn leftovers_of_unknown_vms_are_swept_and_running_vms_adopted() {
    let h = Harness::new().await;
    let vm = h.create("web", true).await.unwrap();
    // What a previous daemon could have left: a TAP and NAT rules of a VM
    // that never got recorded, and a directory without a record.
    let ghost = Id::generate();
    h.net
        .insert_tap(&banger_net::vm_tap_name(&ghost), "br-banger");
    h.net
        .insert_nat(ghost.clone(), "172.30.0.99".parse().unwrap(), "br-banger");
    let stray_dir = h.daemon.layout.vm_dir(&ghost);
    std::fs::create_dir_all(&stray_dir).unwrap();
    // The daemon forgets its process handles, as a restart would.
    h.daemon.take_process(&vm.id);

    let report = reconcile(&h.daemon).await;
    assert_eq!(report.adopted, ["web"], "{report:?}");
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!(h.vm_taps(), [banger_net::vm_tap_name(&vm.id)]);
    assert_eq!(h.net.nat().keys().collect::<Vec<_>>(), [&vm.id]);
    assert!(!stray_dir.exists());
    assert_eq!(
        h.daemon.store.get_vm(&vm.id).unwrap().unwrap().state,
        VmState::Running
    );
}

#[tokio::test]
async fn a_running_vm_whose_vmm_vanished_becomes_stopped() {
    let h = Harness::new().await;
    let vm = h.create("web", true).await.unwrap();
    h.daemon.take_process(&vm.id);
    // The VMM disappears while no daemon watches (no exit notification).
    h.vmm.exit(
        &vm.paths().api_socket(),
        banger_firecracker::launch::VmmExit::Unknown,
    );
    let report = reconcile(&h.daemon).await;
    assert_eq!(report.stopped, ["web"], "{report:?}");
    let stored = h.daemon.store.get_vm(&vm.id).unwrap().unwrap();
    assert_eq!(stored.state, VmState::Stopped);
    assert!(h.vm_taps().is_empty());
    assert!(h.net.nat().is_empty());
}
