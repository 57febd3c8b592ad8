//! `banger vm list` and `banger vm show`

use banger_rpc::{NoParams, method};
use std::process::ExitCode;

use banger_model::layout::Layout;
use banger_model::vm::{Accel, Vm, VmmKind};
use banger_rpc::request::RefParams;
use banger_rpc::response::{VmDetails, VmListResult};

use crate::args::{JsonFlag, RefJsonArgs};
use crate::daemon_client;
use crate::output::{ago, print_json, print_table, table};

pub(super) async fn list(layout: &Layout, args: &JsonFlag) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let result: VmListResult = client.call::<method::VmList>(NoParams {}, |_| {}).await?;
    for warning in &result.warnings {
        eprintln!("warning: {warning}");
    }
    if args.json {
        print_json(&result.vms)?;
        return Ok(ExitCode::SUCCESS);
    }
    if result.vms.is_empty() {
        eprintln!("no VMs yet; start one with `banger vm run`");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = table(&[
        "NAME", "ID", "STATE", "IMAGE", "VMM", "IP", "VCPU", "MEMORY", "DISK", "CREATED",
    ]);
    for vm in &result.vms {
        rows.add_row(vec![
            vm.name.to_string(),
            vm.id.short().to_owned(),
            vm.state.to_string(),
            vm.image_name.clone(),
            vmm_label(vm),
            vm.network.ip.to_string(),
            vm.spec.vcpu.to_string(),
            format!("{} MiB", vm.spec.memory_mib),
            vm.spec.disk_size.to_string(),
            ago(vm.created_at),
        ]);
    }
    print_table(&mut rows);
    if result.vms.iter().any(|vm| vm.vmm == VmmKind::Sim) {
        eprintln!("note: sim VMs are isolated by Linux namespaces, not by a hypervisor");
    }
    if result.vms.iter().any(|vm| vm.accel == Some(Accel::Tcg)) {
        eprintln!("note: qemu (tcg) VMs run under software emulation, which is slow");
    }
    Ok(ExitCode::SUCCESS)
}

/// `root 1.2G of 4.5G · work 300M of 8G allocated on the host`
pub(super) fn disks_line(disks: &banger_model::vm::VmDisks) -> String {
    format!(
        "root {} of {} · work {} of {} allocated on the host",
        disks.root.allocated.human(),
        disks.root.provisioned.human(),
        disks.work.allocated.human(),
        disks.work.provisioned.human()
    )
}

/// `sim*` marks namespace-isolated VMs in tables; qemu VMs show their
/// accelerator.
fn vmm_label(vm: &Vm) -> String {
    match (vm.vmm, vm.accel) {
        (VmmKind::Firecracker, _) => "firecracker".into(),
        (VmmKind::Sim, _) => "sim*".into(),
        (VmmKind::Qemu, Some(accel)) => format!("qemu ({accel})"),
        (VmmKind::Qemu, None) => "qemu".into(),
    }
}

pub(super) async fn show(layout: &Layout, args: &RefJsonArgs) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let details: VmDetails = client
        .call::<method::VmShow>(RefParams::new(&args.reference), |_| {})
        .await?;
    if args.json {
        print_json(&details)?;
    } else {
        print_vm(&details.vm);
        println!("disks       {}", disks_line(&details.disks));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_vm(vm: &Vm) {
    let paths = vm.paths();
    println!("name        {}", vm.name);
    println!("id          {}", vm.id);
    println!("state       {}", vm.state);
    if let Some(error) = &vm.last_error {
        println!("last error  {error}");
    }
    println!("image       {} ({})", vm.image_name, vm.image_id.short());
    println!("spec        {}", vm.spec);
    let isolation = match (vm.vmm, vm.accel) {
        (VmmKind::Firecracker, _) => "firecracker (hypervisor isolation)".to_owned(),
        (VmmKind::Sim, _) => "sim (Linux namespaces, NOT a hypervisor)".to_owned(),
        (VmmKind::Qemu, Some(accel)) => format!(
            "qemu (a real guest kernel in QEMU microvm; {})",
            accel.description()
        ),
        (VmmKind::Qemu, None) => "qemu (a real guest kernel in QEMU microvm)".to_owned(),
    };
    println!("vmm         {isolation}");
    let net = &vm.network;
    println!(
        "address     {}/{} via {} ({})",
        net.ip, net.prefix_len, net.gateway, net.mac
    );
    println!("dns         {}", vm.dns_name());
    println!("nat         {}", if vm.nat { "on" } else { "off" });
    for forward in &vm.ports {
        println!(
            "published   {}",
            super::vm_ports::published_line(vm, forward)
        );
    }
    if let Some(tap) = &vm.tap {
        println!("tap         {tap}");
    }
    println!("storage     {}", vm.storage);
    if let Some(pid) = vm.pid {
        println!("vmm pid     {pid}");
    }
    println!("created     {} ({})", vm.created_at, ago(vm.created_at));
    if let Some(started) = vm.started_at {
        println!("started     {} ({})", started, ago(started));
    }
    println!("dir         {}", vm.dir.display());
    println!("console     {}", paths.console_log().display());
    if let Some(ws) = &vm.workspace {
        println!(
            "workspace   {} → {} (base {})",
            ws.host_path.display(),
            ws.guest_path.display(),
            ws.base_commit
        );
    }
}
