//! Bringing the store and the host back into agreement when the daemon
//! starts, whatever the previous daemon was doing when it died.
//!
//! - A VM still `creating` never finished: everything of it is removed.
//! - A VM caught `deleting` is deleted: the interrupted delete's steps are
//!   run again (each tolerates its work already done).
//! - A running VM whose VMM is alive (found by its API socket) is
//!   re-adopted: watched, published in DNS. One whose VMM is gone has its
//!   host resources released and is recorded as a watched death would be
//!   (`vm::watch::record_unasked_exit`).
//! - A VM caught `starting` or `stopping` ends stopped (its command failed).
//! - Then the host is swept for banger's leftovers that no running VM owns:
//!   TAPs (`btap-*`, idle pool TAPs excepted), banger-simvm veths (`bsv*`),
//!   tagged NAT rules, dm and loop
//!   devices over files in the state dir, VM directories without a record,
//!   image and kernel directories without a record (published, then the
//!   daemon died before recording them), and interrupted builds in the
//!   staging dir.

use std::collections::HashSet;
use std::sync::Arc;

use banger_model::Id;
use banger_model::vm::{Vm, VmState};
use tracing::{info, warn};

use crate::daemon::Daemon;
use crate::errors::blocking;
use crate::vm::halt::{self, Mode};
use crate::vm::{disks, save, watch};

/// What reconcile did, for the log.
#[derive(Debug, Default)]
pub struct Report {
    pub adopted: Vec<String>,
    pub stopped: Vec<String>,
    /// Running VMs whose VMM was gone, with the state they got.
    pub gone: Vec<String>,
    pub removed: Vec<String>,
    /// Deletes a crash interrupted, finished now.
    pub deleted: Vec<String>,
    pub swept: Vec<String>,
    pub problems: Vec<String>,
}

pub async fn reconcile(daemon: &Arc<Daemon>) -> Report {
    let mut report = Report::default();
    let vms = match daemon.store.list_vms() {
        Ok(vms) => vms,
        Err(err) => {
            report.problems.push(format!("listing VMs: {err}"));
            return report;
        }
    };
    for vm in vms {
        let _lock = daemon.vm_locks.lock(&vm.id).await;
        reconcile_vm(daemon, vm, &mut report).await;
    }
    sweep(daemon, &mut report).await;
    info!(
        adopted = ?report.adopted,
        stopped = ?report.stopped,
        gone = ?report.gone,
        removed = ?report.removed,
        deleted = ?report.deleted,
        swept = ?report.swept,
        problems = ?report.problems,
        "reconciled"
    );
    report
}

async fn reconcile_vm(daemon: &Arc<Daemon>, mut vm: Vm, report: &mut Report) {
    if matches!(vm.state, VmState::Creating | VmState::Starting) {
        // A VMM started just before the crash may not listen yet: found
        // by its arguments, it is stopped below like any other.
        if let Ok(Some(process)) = daemon.vmm.adopt_starting(&vm.paths().api_socket()).await {
            daemon.put_process(&vm.id, process);
        }
    }
    match vm.state {
        VmState::Creating => {
            let released = halt::stop_and_release_checked(daemon, &mut vm, Mode::Kill).await;
            if let Some(left) = released.vmm_left {
                // Kept for the next reconcile: forgetting it could orphan
                // its VMM (one banger-helper started, with the helper down).
                report.problems.extend(released.problems);
                report
                    .problems
                    .push(format!("{}: {left}; kept until the next start", vm.name));
                return;
            }
            let mut problems = released.problems;
            let image = daemon.store.get_image(&vm.image_id).ok().flatten();
            problems.extend(disks::destroy(daemon, &vm, image.as_ref()).await);
            if let Err(err) = daemon.store.delete_vm(&vm.id) {
                problems.push(err.to_string());
            }
            report.problems.extend(problems);
            report.removed.push(vm.name.to_string());
        }
        VmState::Deleting => match crate::services::vm_delete::finish(daemon, &mut vm).await {
            Ok(problems) => {
                report.problems.extend(problems);
                report.deleted.push(vm.name.to_string());
            }
            Err(err) => report.problems.push(format!(
                "finishing the delete of {}: {}",
                vm.name,
                err.message()
            )),
        },
        VmState::Running => match daemon.vmm.adopt(&vm.paths().api_socket()).await {
            Ok(Some(process)) => {
                vm.state = VmState::Running;
                vm.pid = Some(process.pid());
                vm.tap = Some(banger_net::vm_tap_name(&vm.id));
                if let Err(err) = save(daemon, &mut vm) {
                    report.problems.push(err.message());
                }
                daemon.network.publish(&vm.name, vm.network.ip);
                match crate::forward::bind(&vm.ports) {
                    Ok(ports) => daemon.forwards.start(&vm.id, vm.network.ip, ports),
                    Err(err) => report.problems.push(format!(
                        "publishing the ports of {}: {}",
                        vm.name,
                        err.message()
                    )),
                }
                daemon.put_process(&vm.id, process.clone());
                watch::spawn(daemon, vm.id.clone(), process);
                report.adopted.push(vm.name.to_string());
            }
            Ok(None) => {
                // Its VMM died while no daemon watched: recorded as a
                // watched death would be (stopped after a guest shutdown,
                // else error with the reason).
                let problems = halt::stop_and_release(daemon, &mut vm, Mode::Kill).await;
                report.problems.extend(problems);
                watch::record_unasked_exit(&mut vm, None);
                if let Err(err) = save(daemon, &mut vm) {
                    report.problems.push(err.message());
                }
                report.gone.push(format!("{} ({})", vm.name, vm.state));
            }
            Err(err) => report
                .problems
                .push(format!("looking for {}'s VMM: {err}", vm.name)),
        },
        VmState::Starting | VmState::Stopping => {
            // An interrupted start or stop: the command failed, so the VM
            // ends stopped, whatever state its VMM reached.
            halt_into(daemon, &mut vm, report).await;
            report.stopped.push(vm.name.to_string());
        }
        VmState::Stopped | VmState::Error => {
            if let Ok(Some(process)) = daemon.vmm.adopt(&vm.paths().api_socket()).await {
                warn!(vm = %vm.name, pid = process.pid(), "a VMM runs for a VM that is not running; killing it");
                if let Err(err) = daemon.vmm.kill(&process).await {
                    report
                        .problems
                        .push(format!("killing {}'s stray VMM: {err}", vm.name));
                }
                report
                    .problems
                    .extend(halt::release_host(daemon, &vm).await);
            }
        }
    }
}

/// Halts a VM whose VMM is gone or whose operation was interrupted.
async fn halt_into(daemon: &Arc<Daemon>, vm: &mut Vm, report: &mut Report) {
    match halt::halt(daemon, vm, Mode::Kill).await {
        Ok(problems) => report.problems.extend(problems),
        Err(err) => report.problems.push(format!(
            "recording {} as stopped: {}",
            vm.name,
            err.message()
        )),
    }
}

async fn sweep(daemon: &Arc<Daemon>, report: &mut Report) {
    let vms = daemon.store.list_vms().unwrap_or_default();
    let running: Vec<&Vm> = vms
        .iter()
        .filter(|vm| vm.state == VmState::Running)
        .collect();
    let known: HashSet<&Id> = vms.iter().map(|vm| &vm.id).collect();

    // TAPs no running VM owns.
    let live_taps: HashSet<String> = running
        .iter()
        .map(|vm| banger_net::vm_tap_name(&vm.id))
        .collect();
    match daemon.network.ops.list_links("btap-").await {
        Ok(links) => {
            for link in links {
                if banger_net::names::is_pool_tap(&link) || live_taps.contains(&link) {
                    continue;
                }
                match daemon.network.ops.delete_tap(&link).await {
                    Ok(_) => report.swept.push(format!("TAP {link}")),
                    Err(err) => report.problems.push(format!("deleting TAP {link}: {err}")),
                }
            }
        }
        Err(err) => report.problems.push(format!("listing TAPs: {err}")),
    }

    // banger-simvm veths whose VM is not running.
    let live_veths: HashSet<String> = running
        .iter()
        .filter(|vm| vm.vmm == banger_model::vm::VmmKind::Sim)
        .map(|vm| banger_net::names::sim_veth_name(vm.id.as_str()))
        .collect();
    match daemon
        .network
        .ops
        .list_links(banger_net::names::SIM_VETH_PREFIX)
        .await
    {
        Ok(links) => {
            for link in links.iter().filter(|link| !live_veths.contains(*link)) {
                match daemon.network.ops.delete_sim_veth(link).await {
                    Ok(_) => report.swept.push(format!("veth {link}")),
                    Err(err) => report.problems.push(format!("deleting veth {link}: {err}")),
                }
            }
        }
        Err(err) => report.problems.push(format!("listing veths: {err}")),
    }

    // NAT rules tagged for VMs that are not running with NAT.
    let live_nat: HashSet<&Id> = running
        .iter()
        .filter(|vm| vm.nat)
        .map(|vm| &vm.id)
        .collect();
    match daemon.network.ops.list_nat_tagged().await {
        Ok(tagged) => {
            for id in tagged.iter().filter(|id| !live_nat.contains(id)) {
                match daemon.network.ops.remove_vm_nat(id).await {
                    Ok(count) => report.swept.push(format!("{count} NAT rules of {id}")),
                    Err(err) => report
                        .problems
                        .push(format!("removing NAT rules of {id}: {err}")),
                }
            }
        }
        Err(err) => report.problems.push(format!("listing NAT rules: {err}")),
    }

    // dm and loop devices over our files that no running VM uses.
    let disk = Arc::clone(&daemon.disk);
    let state_dir = daemon.layout.state_dir.clone();
    // A running VM uses devices over its own dir and (dm) over its image.
    let mut live_dirs: Vec<std::path::PathBuf> = running.iter().map(|vm| vm.dir.clone()).collect();
    live_dirs.extend(
        running
            .iter()
            .filter_map(|vm| daemon.store.get_image(&vm.image_id).ok().flatten())
            .map(|image| image.rootfs_path),
    );
    let live_ids: Vec<String> = running.iter().map(|vm| vm.id.to_string()).collect();
    let swept = blocking(move || {
        let mut swept = Vec::new();
        let mut problems = Vec::new();
        match disk.list_orphans(&state_dir) {
            Ok(orphans) => {
                for orphan in orphans {
                    let text = orphan.to_string();
                    let in_use = live_ids.iter().any(|id| text.contains(&id[..12]))
                        || live_dirs
                            .iter()
                            .any(|dir| text.contains(&dir.display().to_string()));
                    if in_use {
                        continue;
                    }
                    match disk.release_orphan(&orphan) {
                        Ok(()) => swept.push(text),
                        Err(err) => problems.push(format!("releasing {text}: {err}")),
                    }
                }
            }
            Err(err) => problems.push(format!("listing dm/loop devices: {err}")),
        }
        (swept, problems)
    })
    .await;
    match swept {
        Ok((swept, problems)) => {
            report.swept.extend(swept);
            report.problems.extend(problems);
        }
        Err(err) => report.problems.push(err.message()),
    }

    // VM directories without a record (a create that died before recording).
    if let Ok(entries) = fs_err::read_dir(daemon.layout.vms_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if known.iter().any(|id| id.as_str() == name) {
                continue;
            }
            let dir = entry.path();
            if let Ok(Some(process)) = daemon.vmm.adopt(&dir.join("api.sock")).await {
                let _ = daemon.vmm.kill(&process).await;
            }
            match fs_err::remove_dir_all(&dir) {
                Ok(()) => report.swept.push(format!("directory {}", dir.display())),
                Err(err) => report.problems.push(err.to_string()),
            }
        }
    }

    // Images and kernels published but never recorded (a crash between
    // moving them into place and recording them). Only with both lists in
    // hand: an unreadable store must not look empty.
    let recorded = daemon
        .store
        .list_images()
        .and_then(|images| Ok((images, daemon.store.list_kernels()?)));
    match recorded {
        Ok((images, kernels)) => {
            let images = images.iter().map(|image| image.id.to_string()).collect();
            let kernels = kernels.iter().map(|kernel| kernel.id.to_string()).collect();
            sweep_unrecorded(&daemon.layout.images_dir(), &images, "image", report);
            sweep_unrecorded(&daemon.layout.kernels_dir(), &kernels, "kernel", report);
        }
        Err(err) => report
            .problems
            .push(format!("listing images and kernels: {err}")),
    }

    // Interrupted image builds.
    let staging = daemon.layout.staging_dir();
    if staging.exists() {
        match fs_err::remove_dir_all(&staging) {
            Ok(()) => report.swept.push(format!("staging {}", staging.display())),
            Err(err) => report.problems.push(err.to_string()),
        }
    }
}

/// Removes the entries of `dir` whose names are not `recorded` ids.
fn sweep_unrecorded(
    dir: &std::path::Path,
    recorded: &HashSet<String>,
    what: &str,
    report: &mut Report,
) {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if recorded.contains(entry.file_name().to_string_lossy().as_ref()) {
            continue;
        }
        let path = entry.path();
        match fs_err::remove_dir_all(&path) {
            Ok(()) => report
                .swept
                .push(format!("unrecorded {what} {}", path.display())),
            Err(err) => report.problems.push(err.to_string()),
        }
    }
}
