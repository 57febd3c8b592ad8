//! `doctor.run`: the readiness checks the daemon is the right process to
//! run. It has the privileges the host work needs (it may run as root while
//! the CLI runs as the user) and it knows the config, the storage probe, the
//! store and the DNS server. The CLI adds the checks about its user.

use std::net::IpAddr;
use std::sync::Arc;

use banger_disk::strategy::Support;
use banger_doctor::checks::{self, DnsFacts, ImageFacts, ResolveProbe, RoutingFacts, StorageFacts};
use banger_doctor::{CatalogLookup, Companion, Host, HostInputs, RealHost};
use banger_model::Name;
use banger_model::defaults::{HostFacts, VmDefaults};
use banger_rpc::response::{DoctorCheck, DoctorResult};

use crate::daemon::Daemon;
use crate::errors::{Doing, ServiceError};
use crate::network::{DnsStatus, RoutingState};

pub async fn run(daemon: &Daemon) -> Result<DoctorResult, ServiceError> {
    run_with(daemon, Arc::new(RealHost)).await
}

/// [`run`] against any host (tests pass a `FakeHost`).
pub async fn run_with(daemon: &Daemon, host: Arc<dyn Host>) -> Result<DoctorResult, ServiceError> {
    let images = image_facts(daemon).await?;
    let companions = companion_facts(daemon);
    let space = space_check(daemon)?;
    let storage = storage_facts(&daemon.storage);
    let dns = dns_facts(daemon);
    let helper = helper_facts(daemon);
    let probe = publish_probe(daemon)?;
    let qemu_seen = crate::vm::qemu::last_probe().or_else(|| recorded_accel(daemon));

    let config = daemon.config.clone();
    let config_path = daemon.layout.config_file();
    let state_dir = daemon.layout.state_dir.clone();
    let own_dirs = daemon.layout.own_dirs();
    let listen = daemon.config.network.dns_listen.to_string();
    let probe_for_check = probe.clone().map(|(probe, _)| probe);
    // The checks block (ioctls, `firecracker --version`, getaddrinfo).
    let checks = tokio::task::spawn_blocking(move || {
        let defaults = VmDefaults::resolve(&config.vm_defaults, HostFacts::detect());
        let inputs = HostInputs {
            config: &config,
            config_path: &config_path,
            state_dir: &state_dir,
            own_dirs: &own_dirs,
            defaults: &defaults,
        };
        let mut all = checks::host_checks(host.as_ref(), &inputs);
        all.push(checks::companions(&companions));
        if config.vmm == banger_model::vm::VmmKind::Qemu {
            all.push(qemu_accel(&config, qemu_seen));
        }
        all.push(checks::storage(&storage));
        all.push(space);
        all.push(checks::default_image(&images));
        all.push(checks::helper(&helper));
        all.push(checks::dns_listener(&dns, &listen));
        all.push(checks::dns_routing(&dns));
        all.push(checks::vm_resolution(
            host.as_ref(),
            probe_for_check.as_ref(),
        ));
        all
    })
    .await;
    if let Some((_, name)) = &probe {
        daemon.network.unpublish(name);
    }
    let checks: Vec<DoctorCheck> = checks.doing("running the checks")?;
    Ok(DoctorResult { checks })
}

/// How the daemon reaches the host network, for the helper check.
fn helper_facts(daemon: &Daemon) -> checks::HelperFacts {
    use crate::network::Via;
    match daemon.network.via() {
        Via::Netlink => checks::HelperFacts::Root,
        Via::Helper(socket) => checks::HelperFacts::Reached(socket.clone()),
        Via::Unprivileged { socket, error, .. } => checks::HelperFacts::Unreached {
            socket: socket.clone(),
            error: error.clone(),
        },
    }
}

/// The binaries bangerd runs or copies besides itself.
fn companion_facts(daemon: &Daemon) -> Vec<Companion> {
    use crate::binaries::{AGENT, SIMVM, find};
    let found = |name: &str| find(name).map_err(|err| format!("{}, PATH", err.searched));
    // The qemu engine is banger-simvm too.
    let sim = matches!(
        daemon.config.vmm,
        banger_model::vm::VmmKind::Sim | banger_model::vm::VmmKind::Qemu
    );
    vec![
        Companion {
            name: AGENT.into(),
            found: found(AGENT),
            role: "copied into every image: VMs are ready when it answers".into(),
            needed: true,
        },
        Companion {
            name: SIMVM.into(),
            found: match &daemon.config.simvm_bin {
                Some(path) if path.is_file() => Ok(path.clone()),
                Some(path) => Err(format!("simvm_bin = {}", path.display())),
                None => found(SIMVM),
            },
            role: "runs sim and qemu VMs (--vmm sim, --vmm qemu)".into(),
            needed: sim,
        },
    ]
}

/// `vmm = "qemu"`: which accelerator guests get here, the configured one or
/// what the last boot's probe found; software emulation is a warning (slow).
fn qemu_accel(
    config: &banger_model::config::Config,
    seen: Option<(banger_model::vm::Accel, String)>,
) -> DoctorCheck {
    use banger_model::config::QemuAccel;
    use banger_model::vm::Accel;
    let name = "qemu-accel";
    let slow_fix = "on a host whose KVM runs guests, qemu_accel = \"auto\" picks KVM by itself; \
                    or use vmm = \"sim\" for speed (namespaces, not a hypervisor)";
    let judged = |accel: Accel, detail: String| match accel {
        Accel::Kvm => DoctorCheck::pass(name, detail),
        Accel::Tcg => DoctorCheck::warn(name, detail, slow_fix),
    };
    match config.qemu_accel {
        QemuAccel::Kvm => judged(Accel::Kvm, "qemu_accel = \"kvm\"".into()),
        QemuAccel::Tcg => judged(
            Accel::Tcg,
            format!("qemu_accel = \"tcg\": {}", Accel::Tcg.description()),
        ),
        QemuAccel::Auto => match seen {
            Some((accel, reason)) => judged(
                accel,
                format!("qemu guests run on {} ({reason})", accel.description()),
            ),
            None => DoctorCheck::pass(
                name,
                "qemu_accel = \"auto\": the first qemu VM boots its kernel under KVM to check; \
                 if it does not start, guests run under software emulation (slow) and `vm show` \
                 says so",
            ),
        },
    }
}

/// The accelerator a qemu VM recorded (a daemon started since has probed
/// nothing yet).
fn recorded_accel(daemon: &Daemon) -> Option<(banger_model::vm::Accel, String)> {
    let vms = daemon.store.list_vms().ok()?;
    let vm = vms
        .iter()
        .filter(|vm| vm.accel.is_some())
        .max_by_key(|vm| vm.started_at)?;
    Some((
        vm.accel?,
        format!("as recorded by VM {} when it booted", vm.name),
    ))
}

/// What the VMs' sparse disks may still grow into against the free space
/// (the host check `disk-space` judges the free space itself).
fn space_check(daemon: &Daemon) -> Result<DoctorCheck, ServiceError> {
    use banger_model::ByteSize;
    use banger_rpc::response::CheckStatus;
    let dir = &daemon.layout.state_dir;
    let Ok(fs) = crate::disk_space::filesystem(dir) else {
        return Ok(DoctorCheck {
            name: "vm-disks".into(),
            status: CheckStatus::Pass,
            detail: format!("{} does not exist yet", dir.display()),
            fix: None,
        });
    };
    let vms = daemon.store.list_vms()?;
    let (mut provisioned, mut allocated) = (0, 0);
    for vm in &vms {
        let image = daemon.store.get_image(&vm.image_id)?;
        let disks = crate::disk_space::vm_disks(vm, image.as_ref());
        provisioned += disks.provisioned().0;
        allocated += disks.allocated().0;
    }
    let growth = ByteSize(provisioned.saturating_sub(allocated));
    let detail = format!(
        "{} VMs: disks provisioned {}, allocated {}; they may still grow by {} ({} free)",
        vms.len(),
        ByteSize(provisioned).human(),
        ByteSize(allocated).human(),
        growth.human(),
        fs.free.human()
    );
    let (status, fix) = if growth > fs.free {
        (
            CheckStatus::Warn,
            Some("the VMs' disks may outgrow the free space (overcommitted): delete VMs you no longer need, or free space".into()),
        )
    } else {
        (CheckStatus::Pass, None)
    };
    Ok(DoctorCheck {
        name: "vm-disks".into(),
        status,
        detail,
        fix,
    })
}

fn storage_facts(probe: &banger_disk::StrategyProbe) -> StorageFacts {
    let reason = |support: &Support| match support {
        Support::Yes => None,
        Support::No(reason) => Some(reason.clone()),
    };
    StorageFacts {
        dir: probe.dir.clone(),
        strategy: probe.strategy,
        reflink_problem: reason(&probe.reflink),
        dm_problem: probe.device_mapper.as_ref().and_then(reason),
    }
}

/// How long doctor waits for the catalog (a remote `catalog_url`).
const CATALOG_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The default image as `vm create` resolves it (see its
/// `ensure_default_image`): the store's default, else the configured name
/// (or the catalog default) locally, else in the catalog.
async fn image_facts(daemon: &Daemon) -> Result<ImageFacts, ServiceError> {
    let local: Vec<String> = daemon
        .store
        .list_images()?
        .iter()
        .map(|image| image.name.to_string())
        .collect();
    let default = daemon.store.default_image()?;
    let store_default = default.as_ref().map(|image| image.name.to_string());
    let store_default_origin = default
        .as_ref()
        .map(|image| banger_bootstrap::default_image::origin(&image.source));
    let configured = daemon.config.default_image.clone();
    let wanted = configured
        .clone()
        .unwrap_or_else(|| crate::images::CATALOG_DEFAULT_IMAGE.to_owned());
    let catalog = if store_default.is_some() || local.contains(&wanted) {
        // Not consulted: the catalog only matters without a local image.
        CatalogLookup::NotFound
    } else {
        catalog_lookup(daemon, &wanted).await
    };
    Ok(ImageFacts {
        configured,
        wanted,
        store_default,
        store_default_origin,
        local,
        catalog,
    })
}

/// Whether the catalog (built in, or `catalog_url`) lists image `name`.
async fn catalog_lookup(daemon: &Daemon, name: &str) -> CatalogLookup {
    let lookup = async {
        let http = crate::images::http()?;
        let catalog = crate::images::catalog(daemon, &http).await?;
        Ok::<_, ServiceError>(catalog.image(name).is_some())
    };
    match tokio::time::timeout(CATALOG_TIMEOUT, lookup).await {
        Ok(Ok(true)) => CatalogLookup::Found,
        Ok(Ok(false)) => CatalogLookup::NotFound,
        Ok(Err(err)) => CatalogLookup::Unavailable(err.message()),
        Err(_) => {
            CatalogLookup::Unavailable(format!("no answer within {}s", CATALOG_TIMEOUT.as_secs()))
        }
    }
}

fn dns_facts(daemon: &Daemon) -> DnsFacts {
    let network = &daemon.network;
    let listener = match network.dns_status() {
        DnsStatus::Serving { .. } => Ok(network.dns_listeners()),
        DnsStatus::Failed(err) => Err(err.clone()),
    };
    let link = network.config.bridge.clone();
    let routing = match network.routing_state() {
        RoutingState::Inactive => RoutingFacts::ResolvedInactive,
        RoutingState::Skipped(reason) => RoutingFacts::Skipped { reason },
        RoutingState::Pending => RoutingFacts::Pending { link },
        RoutingState::Applied { dns } => RoutingFacts::Applied {
            link,
            dns: dns.to_string(),
        },
        RoutingState::Failed(error) => RoutingFacts::Failed { link, error },
    };
    DnsFacts { listener, routing }
}

/// Publishes a throwaway record (`doctor-<hex>.vm` → the bridge address) so
/// the resolution check has a name whose answer only banger's DNS server
/// knows. `None` when the server is not serving.
fn publish_probe(daemon: &Daemon) -> Result<Option<(ResolveProbe, Name)>, ServiceError> {
    if daemon.network.dns_server_addr().is_none() {
        return Ok(None);
    }
    let vms = daemon.store.list_vms()?;
    let name = loop {
        let candidate = format!("doctor-{}", &banger_model::Id::generate().as_str()[..8]);
        if !vms.iter().any(|vm| vm.name.as_str() == candidate) {
            break Name::parse(&candidate).doing("probe name")?;
        }
    };
    let gateway = daemon.network.config.gateway();
    daemon.network.records.set(&name, gateway);
    Ok(Some((
        ResolveProbe {
            name: format!("{name}.vm"),
            expected: IpAddr::V4(gateway),
        },
        name,
    )))
}
