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

/// A VMM that vanished while no daemon watched is recorded the way a
/// watched death is: an error with the reason, unless its logs show the
/// guest shutting down.
#[tokio::test]
async fn a_running_vm_whose_vmm_vanished_is_recorded_with_the_reason() {
    for (console, state) in [
        ("[    1.0] booted\n", VmState::Error),
        ("[   99.0] reboot: Power down\n", VmState::Stopped),
    ] {
        let h = Harness::new().await;
        let vm = h.create("web", true).await.unwrap();
        h.daemon.take_process(&vm.id);
        std::fs::write(vm.paths().console_log(), console).unwrap();
        // The VMM disappears while no daemon watches (no exit notification).
        h.vmm.exit(
            &vm.paths().api_socket(),
            banger_firecracker::launch::VmmExit::Unknown,
        );
        let report = reconcile(&h.daemon).await;
        assert_eq!(report.gone, [format!("web ({state})")], "{report:?}");
        let stored = h.daemon.store.get_vm(&vm.id).unwrap().unwrap();
        assert_eq!(stored.state, state);
        if state == VmState::Error {
            let reason = stored.last_error.unwrap();
            assert!(reason.contains("exit status is unknown"), "{reason}");
        }
        assert!(h.vm_taps().is_empty());
        assert!(h.net.nat().is_empty());
    }
}

/// An image or kernel moved into place by a daemon that died before
/// recording it is swept; recorded ones stay.
#[tokio::test]
async fn published_but_unrecorded_images_and_kernels_are_swept() {
    let h = Harness::new().await;
    let image = h.daemon.store.default_image().unwrap().unwrap();
    let kept = h.daemon.layout.image_dir(&image.id);
    std::fs::create_dir_all(&kept).unwrap();
    let orphans = [
        h.daemon.layout.image_dir(&Id::generate()),
        h.daemon.layout.kernel_dir(&Id::generate()),
    ];
    for orphan in &orphans {
        std::fs::create_dir_all(orphan).unwrap();
        std::fs::write(orphan.join("rootfs.ext4"), "x").unwrap();
    }
    let report = reconcile(&h.daemon).await;
    assert!(report.problems.is_empty(), "{report:?}");
    assert!(kept.is_dir());
    for orphan in &orphans {
        assert!(!orphan.exists(), "{} kept", orphan.display());
    }
    assert_eq!(
        report
            .swept
            .iter()
            .filter(|line| line.starts_with("unrecorded "))
            .count(),
        2,
        "{report:?}"
    );
}
