//! `vm.create`: validate, allocate an address, make the disks, boot.
//!
//! The first event is the resolved spec (`vm::spec`, with where each setting
//! came from). Stages streamed to the client after it: `prepare_disks`,
//! `start_vmm`, `wait_vsock_agent`, `wait_ssh`, `ready`. A failure before the VMM runs,
//! or a cancellation, rolls everything back (no VM is left). A failure after
//! the VMM started keeps the VM in `error` with its logs, releasing every
//! host resource.

use std::sync::Arc;

use banger_model::defaults::{HostFacts, ResolvedSpec};
use banger_model::image::Image;
use banger_model::kernel::Kernel;
use banger_model::vm::{NetworkAllocation, Vm, VmState, VmmKind};
use banger_model::{Id, Name, VmSpec};
use banger_rpc::Event;
use banger_rpc::request::VmCreateParams;
use tokio_util::sync::CancellationToken;

use crate::daemon::Daemon;
use crate::errors::{Cause, Doing, Hint, ServiceError};
use crate::server::EventSink;
use crate::undo::{Class, Undo};
use crate::vm::boot::{self, BootInput};
use crate::vm::{disks, finish, spec};

/// Lowest guest context id (0–2 are reserved by vsock).
const FIRST_CID: u32 = 3;

/// Everything decided before anything is created.
#[derive(Debug)]
struct Plan {
    name: Name,
    spec: VmSpec,
    nat: bool,
    vmm: VmmKind,
    image: Image,
    kernel: Option<Kernel>,
    ports: Vec<banger_model::publish::PortForward>,
    /// What the work disk starts with beside the image's `/root`.
    work_content: Option<disks::WorkContent>,
}

pub async fn create(
    daemon: &Arc<Daemon>,
    params: VmCreateParams,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<Vm, ServiceError> {
    let existing = daemon.store.list_vms()?;
    let resolved = spec::resolve(&params, &daemon.config, HostFacts::detect(), &existing)?;
    events.emit(Event::Spec {
        spec: resolved.clone(),
    });
    if params.image.is_none() {
        ensure_default_image(daemon, events, cancel).await?;
    }
    let requested_at = std::time::Instant::now();
    let plan = plan(daemon, params, resolved)?;
    // A key ssh would refuse, or a port in use, is refused before anything
    // exists.
    let key = daemon.keys.ensure().await?;
    let ports = crate::forward::bind(&plan.ports)?;
    let mut vm = allocate(daemon, &plan).await?;
    let _lock = daemon.vm_locks.lock(&vm.id).await;
    tracing::info!(vm = %vm.name, id = %vm.id, spec = %vm.spec, vmm = %vm.vmm, "creating VM");

    let mut undo = Undo::default();
    undo.push("delete the VM record", Class::Data, {
        let (store, id) = (Arc::clone(&daemon.store), vm.id.clone());
        async move { store.delete_vm(&id).map_err(Cause::from) }
    });
    daemon.checkpoint("record the VM as creating");
    let outcome = async {
        disks::create_dir(&vm, &mut undo)?;
        let snapshot = vm.clone();
        let prepare = disks::prepare_new(
            daemon,
            &snapshot,
            &plan.image,
            plan.work_content.as_ref(),
            &key,
            events,
        );
        let input = BootInput {
            image: &plan.image,
            kernel: plan.kernel.as_ref(),
            requested_at,
        };
        boot::boot(daemon, &mut vm, input, prepare, events, cancel, &mut undo).await
    }
    .await;
    finish(daemon, vm, outcome, undo, ports, events, true).await
}

/// The rest of the plan around the `resolved` spec: the image, its kernel,
/// room on disk.
fn plan(
    daemon: &Daemon,
    params: VmCreateParams,
    resolved: ResolvedSpec,
) -> Result<Plan, ServiceError> {
    let spec = resolved.spec();
    let (name, vmm) = (resolved.name.value, resolved.vmm.value);
    let host_files = params
        .work_host_files
        .map(|list| read_host_files(&list))
        .transpose()?;
    let work_content = match (params.work_content, host_files) {
        (Some(dir), host_files) => {
            check_work_content(&dir)?;
            Some(disks::WorkContent { dir, host_files })
        }
        (None, Some(_)) => {
            return Err(ServiceError::invalid(
                "work host files are given only with work content",
            ));
        }
        (None, None) => None,
    };
    let image = resolve_image(daemon, params.image.as_deref())?;
    let kernel = match &image.kernel_id {
        Some(id) => daemon.store.get_kernel(id)?,
        None => None,
    };
    if vmm.boots_kernel() && kernel.is_none() {
        return Err(ServiceError::precondition(format!("image {} has no kernel, and {vmm} needs one", image.name),
        )
        .with_hint("import one (`banger kernel import DIR --name K`) and re-import the image with --kernel-ref K, or use --vmm sim"));
    }
    crate::disk_space::check_new_vm(
        daemon,
        name.as_str(),
        &spec,
        &image,
        params.allow_overcommit,
    )?;
    if image.work_seed_path.is_none() {
        return Err(
            ServiceError::precondition(format!("image {} has no work seed", image.name))
                .with_hint("re-import the image"),
        );
    }
    Ok(Plan {
        name,
        spec,
        nat: resolved.nat.value,
        vmm,
        image,
        kernel,
        ports: params.ports,
        work_content,
    })
}

/// The client's work content must be a real directory of its own (the
/// daemon's user: peers of another uid are refused at connect), given by
/// an absolute path.
fn check_work_content(dir: &std::path::Path) -> Result<(), ServiceError> {
    use std::os::unix::fs::MetadataExt;
    let refuse =
        |why: &str| ServiceError::invalid(format!("work content {}: {why}", dir.display()));
    if !dir.is_absolute() {
        return Err(refuse("not an absolute path"));
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|err| refuse(&err.to_string()))?;
    if !meta.is_dir() {
        return Err(refuse("not a directory"));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(refuse("not owned by the daemon's user"));
    }
    Ok(())
}

/// The most a host file list may hold (a repository of about a million
/// files).
const HOST_FILES_MAX: u64 = 256 << 20;

/// Reads the client's list of files the work disk takes from the host: a
/// regular file of its own, given by an absolute path.
fn read_host_files(
    path: &std::path::Path,
) -> Result<banger_model::host_files::HostFiles, ServiceError> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let refuse =
        |why: &str| ServiceError::invalid(format!("work host file list {}: {why}", path.display()));
    if !path.is_absolute() {
        return Err(refuse("not an absolute path"));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|err| refuse(&err.to_string()))?;
    let meta = file.metadata().map_err(|err| refuse(&err.to_string()))?;
    if !meta.is_file() {
        return Err(refuse("not a regular file"));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(refuse("not owned by the daemon's user"));
    }
    if meta.len() > HOST_FILES_MAX {
        return Err(refuse("larger than 256 MiB"));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(HOST_FILES_MAX)
        .read_to_end(&mut bytes)
        .map_err(|err| refuse(&err.to_string()))?;
    banger_model::host_files::HostFiles::decode(&bytes).map_err(|err| refuse(&err.to_string()))
}

fn resolve_image(daemon: &Daemon, reference: Option<&str>) -> Result<Image, ServiceError> {
    match reference {
        Some(reference) => {
            let images = daemon.store.list_images()?;
            let image = banger_store::resolve(&images, reference)
                .map_err(ServiceError::from)
                .hint("`banger image list` shows the images you have")?;
            Ok(image.clone())
        }
        None => daemon
            .store
            .default_image()
            ?
            .ok_or_else(|| {
                ServiceError::NoDefaultImage.with_hint(
                    "`banger image bootstrap` builds one from Debian's packages; \
                     `banger image pull REF` or `image import DIR --name N` make one from elsewhere",
                )
            }),
    }
}

/// First use: without a default image, the configured default (or
/// `debian-bookworm`) is pulled from the catalog with its kernel when the
/// catalog lists it. Otherwise nothing happens and `plan` reports it.
async fn ensure_default_image(
    daemon: &Daemon,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<(), ServiceError> {
    if daemon.store.default_image()?.is_some() {
        return Ok(());
    }
    let name = daemon
        .config
        .default_image
        .clone()
        .unwrap_or_else(|| crate::images::CATALOG_DEFAULT_IMAGE.to_owned());
    let images = daemon.store.list_images()?;
    if let Some(image) = images.iter().find(|image| image.name.as_str() == name) {
        return Ok(daemon.store.set_default_image(&image.id)?);
    }
    let http = crate::images::http()?;
    let catalog = crate::images::catalog(daemon, &http).await;
    let listed = catalog
        .as_ref()
        .is_ok_and(|catalog| catalog.image(&name).is_some());
    if !listed {
        // A configured name that leads nowhere is the user's to fix; an
        // unset one is reported as "no default image" by `plan`.
        if daemon.config.default_image.is_some() {
            let why = match &catalog {
                Ok(_) => "nor in the catalog".to_owned(),
                Err(err) => format!("and the catalog cannot be read ({})", err.message()),
            };
            return Err(ServiceError::invalid(format!(
                "default_image = {name:?} in {} is not a local image {why}",
                daemon.layout.config_file().display()
            ))
            .with_hint("`banger image list` shows your images: set default_image to one of them, or remove the key"));
        }
        return Ok(());
    }
    events.log(
        "info",
        format!("no default image yet: pulling {name} from the catalog"),
    );
    let params = banger_rpc::request::ImagePullParams {
        reference: name,
        name: None,
        kernel_ref: None,
    };
    let image = super::image_pull::pull(daemon, params, events, cancel)
        .await?
        .image;
    Ok(daemon.store.set_default_image(&image.id)?)
}

/// Picks an address and a vsock context id and records the VM as
/// `creating`, under the allocation lock so concurrent creates never pick
/// the same ones.
async fn allocate(daemon: &Daemon, plan: &Plan) -> Result<Vm, ServiceError> {
    let _alloc = daemon.alloc_lock.lock().await;
    let net = &daemon.network.config;
    let used = daemon.store.used_ips()?;
    let ip = banger_net::next_free_ip(net.subnet, net.gateway(), used.iter().copied())
        .unmet()
        .hint("delete VMs you no longer need, or widen [network] subnet")?;
    let cids = daemon.store.used_cids()?;
    let cid = (FIRST_CID..)
        .find(|cid| !cids.contains(cid))
        .expect("a free context id");
    let id = Id::generate();
    let now = jiff::Timestamp::now();
    let vm = Vm {
        dir: daemon.layout.vm_dir(&id),
        tap: None,
        id,
        name: plan.name.clone(),
        image_id: plan.image.id.clone(),
        image_name: plan.image.name.to_string(),
        state: VmState::Creating,
        spec: plan.spec,
        nat: plan.nat,
        vmm: plan.vmm,
        accel: None,
        network: NetworkAllocation {
            ip,
            prefix_len: net.subnet.prefix_len(),
            gateway: net.gateway(),
            mac: NetworkAllocation::mac_for(ip),
        },
        storage: daemon.storage.strategy,
        pid: None,
        vsock_cid: cid,
        created_at: now,
        updated_at: now,
        started_at: None,
        last_error: None,
        workspace: None,
        ports: plan.ports.clone(),
    };
    daemon.store.insert_vm(&vm)?;
    Ok(vm)
}
