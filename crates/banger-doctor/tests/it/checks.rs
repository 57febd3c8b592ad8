//! Each check judged against [`FakeHost`]: pass, warn and fail.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use banger_doctor::checks::{self, *};
use banger_doctor::{
    CheckStatus, DeviceProbe, DoctorCheck, FakeHost, HelperFacts, KvmProbe, Privileges, Space,
};
use banger_model::config::Config;
use banger_model::defaults::{HostFacts, VmDefaults};
use banger_model::vm::{StorageStrategy, VmmKind};

#[track_caller]
fn assert_status(check: &DoctorCheck, status: CheckStatus, needle: &str) {
    assert_eq!(check.status, status, "{check:?}");
    assert!(
        check.detail.contains(needle),
        "{:?} lacks {needle:?}",
        check.detail
    );
    // Every non-pass says how to fix it; a pass carries no fix.
    match status {
        CheckStatus::Pass => assert!(check.fix.is_none(), "{check:?}"),
        _ => assert!(
            check.fix.as_deref().is_some_and(|fix| !fix.is_empty()),
            "{check:?} has no fix"
        ),
    }
}

fn sim_config() -> Config {
    Config {
        vmm: VmmKind::Sim,
        ..Config::default()
    }
}

#[test]
fn arch_passes_on_x86_64_and_fails_elsewhere_naming_the_assumptions() {
    assert_status(&arch(&FakeHost::default()), CheckStatus::Pass, "x86_64");
    let host = FakeHost {
        arch: "aarch64".into(),
        ..FakeHost::default()
    };
    let check = arch(&host);
    assert_status(&check, CheckStatus::Fail, "aarch64");
    for place in ["kernels", "catalogs", "agent"] {
        assert!(check.detail.contains(place), "{check:?} lacks {place}");
    }
}

#[test]
fn vmm_warns_that_sim_is_not_a_hypervisor() {
    assert_status(&vmm(&Config::default()), CheckStatus::Pass, "firecracker");
    let check = vmm(&sim_config());
    assert_status(&check, CheckStatus::Warn, "namespaces");
    assert!(check.detail.contains("NOT under a hypervisor"), "{check:?}");
}

#[test]
fn kvm_pass_and_each_failure() {
    let firecracker = VmmKind::Firecracker;
    assert_status(
        &kvm(&FakeHost::default(), firecracker),
        CheckStatus::Pass,
        "API 12",
    );
    let cases = [
        (KvmProbe::Missing, "does not exist", "modprobe"),
        (
            KvmProbe::Open("Permission denied".into()),
            "Permission denied",
            "kvm group",
        ),
        (
            KvmProbe::ApiVersion("Inappropriate ioctl".into()),
            "KVM_GET_API_VERSION",
            "char 10,232",
        ),
        (KvmProbe::UnexpectedApi(11), "API 11", "kernel"),
        (
            KvmProbe::CreateVm("Device or resource busy".into()),
            "cannot create a VM",
            "firmware",
        ),
    ];
    for (probe, detail, fix) in cases {
        let host = FakeHost {
            kvm: probe.clone(),
            ..FakeHost::default()
        };
        let check = kvm(&host, firecracker);
        assert_status(&check, CheckStatus::Fail, detail);
        assert!(check.fix.as_deref().unwrap().contains(fix), "{check:?}");
        // The sim does not need KVM: the same finding only warns.
        assert_status(
            &kvm(&host, VmmKind::Sim),
            CheckStatus::Warn,
            "does not need it",
        );
    }
}

#[test]
fn vhost_vsock_pass_and_warn() {
    assert_status(
        &vhost_vsock(&FakeHost::default()),
        CheckStatus::Pass,
        "usable",
    );
    let mut host = FakeHost::default();
    host.devices.clear();
    let check = vhost_vsock(&host);
    assert_status(&check, CheckStatus::Warn, "absent");
    assert_eq!(check.fix.as_deref(), Some("sudo modprobe vhost_vsock"));
    host.devices.insert(
        PathBuf::from("/dev/vhost-vsock"),
        DeviceProbe::Unusable("Permission denied".into()),
    );
    assert_status(&vhost_vsock(&host), CheckStatus::Warn, "Permission denied");
}

#[test]
fn firecracker_found_versioned_missing_and_old() {
    let config = Config::default();
    assert_status(
        &firecracker(&FakeHost::default(), &config),
        CheckStatus::Pass,
        "Firecracker v1.16.0",
    );

    let missing = FakeHost::default().without_program("firecracker");
    assert_status(
        &firecracker(&missing, &config),
        CheckStatus::Fail,
        "not in PATH",
    );
    assert_status(
        &firecracker(&missing, &sim_config()),
        CheckStatus::Warn,
        "does not need it",
    );

    let mut old = FakeHost::default();
    old.versions.insert(
        PathBuf::from("/usr/local/bin/firecracker"),
        Ok("Firecracker v1.4.1".into()),
    );
    assert_status(
        &firecracker(&old, &config),
        CheckStatus::Warn,
        "tested with v1.16",
    );

    let mut broken = FakeHost::default();
    broken.versions.insert(
        PathBuf::from("/usr/local/bin/firecracker"),
        Err("cannot run /usr/local/bin/firecracker: Exec format error".into()),
    );
    assert_status(
        &firecracker(&broken, &config),
        CheckStatus::Fail,
        "Exec format error",
    );

    // firecracker_bin wins over PATH, and must be executable.
    let configured = Config {
        firecracker_bin: Some("/opt/fc/firecracker".into()),
        ..Config::default()
    };
    assert_status(
        &firecracker(&FakeHost::default(), &configured),
        CheckStatus::Fail,
        "firecracker_bin = /opt/fc/firecracker",
    );
    let mut host = FakeHost::default();
    host.executables.insert("/opt/fc/firecracker".into());
    host.versions.insert(
        "/opt/fc/firecracker".into(),
        Ok("Firecracker v1.17.2".into()),
    );
    assert_status(
        &firecracker(&host, &configured),
        CheckStatus::Pass,
        "/opt/fc/firecracker",
    );
}

#[test]
fn firecracker_versions_parse() {
    assert_eq!(
        parse_firecracker_version("Firecracker v1.16.0"),
        Some((1, 16))
    );
    assert_eq!(
        parse_firecracker_version("Firecracker v1.7.0-dev"),
        Some((1, 7))
    );
    assert_eq!(parse_firecracker_version("firecracker 1.16"), None);
}

#[test]
fn tools_name_what_is_missing_and_the_packages() {
    assert_status(&tools(&FakeHost::default()), CheckStatus::Pass, "mkfs.ext4");
    let host = FakeHost::default()
        .without_program("debugfs")
        .without_program("resize2fs")
        .without_program("iptables");
    let check = tools(&host);
    assert_status(&check, CheckStatus::Fail, "debugfs, resize2fs, iptables");
    assert_eq!(
        check.fix.as_deref(),
        Some("sudo apt install e2fsprogs iptables")
    );
}

#[test]
fn privileges_say_who_does_the_privileged_work() {
    let root = privileges(&FakeHost::default());
    assert_status(&root, CheckStatus::Pass, "root: bangerd makes");
    let user = FakeHost {
        privileges: Privileges { euid: 1000 },
        ..FakeHost::default()
    };
    let check = privileges(&user);
    assert_status(&check, CheckStatus::Pass, "uid 1000: bangerd runs as you");
    assert!(check.detail.contains("banger-helper"), "{check:?}");
}

#[test]
fn disk_space_thresholds() {
    let with = |available: u64| FakeHost {
        space: Ok(Space {
            available,
            total: 100 << 30,
        }),
        ..FakeHost::default()
    };
    let dir = Path::new("/home/me/.local/state/banger");
    assert_status(
        &disk_space(&with(50 << 30), dir),
        CheckStatus::Pass,
        "50.0 GiB free",
    );
    assert_status(
        &disk_space(&with(2 << 30), dir),
        CheckStatus::Warn,
        "2.0 GiB free",
    );
    assert_status(
        &disk_space(&with(300 << 20), dir),
        CheckStatus::Fail,
        "300 MiB free",
    );
    let broken = FakeHost {
        space: Err("statvfs /x: Permission denied".into()),
        ..FakeHost::default()
    };
    assert_status(
        &disk_space(&broken, dir),
        CheckStatus::Warn,
        "Permission denied",
    );
}

#[test]
fn defaults_show_provenance() {
    let config = Config::parse("[vm_defaults]\nvcpu = 3\n", Path::new("c.toml")).unwrap();
    let defaults = VmDefaults::resolve(
        &config.vm_defaults,
        Some(HostFacts {
            cpus: 8,
            memory_bytes: 32 << 30,
        }),
    );
    let check = vm_defaults(&defaults, Path::new("/home/me/.config/banger/config.toml"));
    assert_status(&check, CheckStatus::Pass, "3 vcpu (config)");
    assert!(check.detail.contains("4096 MiB (host)"), "{check:?}");
    assert!(check.detail.contains("8G disk (builtin)"), "{check:?}");
    assert!(check.detail.contains("/home/me/.config/banger/config.toml"));
}

#[test]
fn storage_reflink_dm_and_copy() {
    let facts = |strategy| StorageFacts {
        dir: "/state".into(),
        strategy,
        reflink_problem: (strategy != StorageStrategy::Reflink)
            .then(|| "ext4 cannot share extents".to_owned()),
        dm_problem: (strategy == StorageStrategy::Copy)
            .then(|| "dmsetup is not installed".to_owned()),
    };
    assert_status(
        &storage(&facts(StorageStrategy::Reflink)),
        CheckStatus::Pass,
        "reflink",
    );
    assert_status(
        &storage(&facts(StorageStrategy::DmSnapshot)),
        CheckStatus::Pass,
        "device-mapper",
    );
    let check = storage(&facts(StorageStrategy::Copy));
    assert_status(&check, CheckStatus::Warn, "dmsetup is not installed");
    assert!(check.fix.unwrap().contains("btrfs or xfs"));
}

#[test]
fn default_image_local_catalog_and_missing() {
    let facts = |configured: Option<&str>, store_default: Option<&str>, local: &[&str], catalog| {
        ImageFacts {
            configured: configured.map(str::to_owned),
            wanted: configured.unwrap_or("debian-bookworm").to_owned(),
            store_default: store_default.map(str::to_owned),
            store_default_origin: None,
            local: local.iter().map(|name| (*name).to_owned()).collect(),
            catalog,
        }
    };
    use CatalogLookup::*;
    let check = |facts: ImageFacts| default_image(&facts);
    assert_status(
        &check(facts(None, Some("debian"), &["debian"], NotFound)),
        CheckStatus::Pass,
        "debian (local default)",
    );
    assert_status(
        &check(facts(Some("arch"), Some("debian"), &["debian"], NotFound)),
        CheckStatus::Pass,
        "only applies while no image is promoted",
    );
    assert_status(
        &check(facts(Some("arch"), None, &["arch"], NotFound)),
        CheckStatus::Pass,
        "becomes the default on first use",
    );
    assert_status(
        &check(facts(None, None, &[], Found)),
        CheckStatus::Pass,
        "debian-bookworm (in the catalog",
    );
    assert_status(
        &check(facts(None, None, &[], NotFound)),
        CheckStatus::Warn,
        "bootstraps debian:bookworm (developer profile)",
    );
    let mut bootstrapped = facts(
        None,
        Some("debian-bookworm"),
        &["debian-bookworm"],
        NotFound,
    );
    bootstrapped.store_default_origin = Some("developer profile, bootstrapped from debian:bookworm packages (http://deb.debian.org/debian)".into());
    assert_status(
        &check(bootstrapped),
        CheckStatus::Pass,
        "debian-bookworm, developer profile, bootstrapped from debian:bookworm",
    );
    assert_status(
        &check(facts(Some("arch"), None, &["debian"], NotFound)),
        CheckStatus::Fail,
        "neither a local image nor in the catalog",
    );
    assert_status(
        &check(facts(
            None,
            None,
            &[],
            Unavailable("connection refused".into()),
        )),
        CheckStatus::Warn,
        "connection refused",
    );
}

#[test]
fn dns_listener_and_routing() {
    let serving = DnsFacts {
        listener: Ok(vec![
            "udp://127.0.0.1:42069".into(),
            "tcp://127.0.0.1:42069".into(),
        ]),
        routing: RoutingFacts::ResolvedInactive,
    };
    assert_status(
        &dns_listener(&serving, "127.0.0.1:42069"),
        CheckStatus::Pass,
        "udp://127.0.0.1:42069",
    );
    assert_status(&dns_routing(&serving), CheckStatus::Pass, "dns-routing.md");
    let failed = DnsFacts {
        listener: Err("Address already in use".into()),
        routing: RoutingFacts::Failed {
            link: "br-banger".into(),
            error: "Access denied".into(),
        },
    };
    assert_status(
        &dns_listener(&failed, "127.0.0.1:42069"),
        CheckStatus::Warn,
        "Address already in use",
    );
    let check = dns_routing(&failed);
    assert_status(&check, CheckStatus::Warn, "Access denied");
    assert!(check.fix.unwrap().contains("resolvectl status br-banger"));
    let applied = DnsFacts {
        routing: RoutingFacts::Applied {
            link: "br-banger".into(),
            dns: "127.0.0.1:42069".into(),
        },
        ..serving.clone()
    };
    assert_status(
        &dns_routing(&applied),
        CheckStatus::Pass,
        "routes ~vm to 127.0.0.1:42069 on br-banger",
    );
    let pending = DnsFacts {
        routing: RoutingFacts::Pending {
            link: "br-banger".into(),
        },
        ..serving
    };
    assert_status(
        &dns_routing(&pending),
        CheckStatus::Pass,
        "once the bridge is up",
    );
}

#[test]
fn vm_resolution_through_the_system_resolver() {
    let probe = ResolveProbe {
        name: "doctor-1a2b.vm".into(),
        expected: "172.30.0.1".parse().unwrap(),
    };
    let mut host = FakeHost::default();
    let check = vm_resolution(&host, Some(&probe));
    assert_status(&check, CheckStatus::Warn, "do not resolve");
    assert!(check.fix.unwrap().contains("dns-routing.md"));
    host.names.insert(
        probe.name.clone(),
        Ok(vec!["172.30.0.1".parse::<IpAddr>().unwrap()]),
    );
    assert_status(
        &vm_resolution(&host, Some(&probe)),
        CheckStatus::Pass,
        "resolves",
    );
    host.names
        .insert(probe.name.clone(), Ok(vec!["10.0.0.9".parse().unwrap()]));
    assert_status(
        &vm_resolution(&host, Some(&probe)),
        CheckStatus::Warn,
        "another resolver",
    );
    assert_status(
        &vm_resolution(&host, None),
        CheckStatus::Warn,
        "not checked",
    );
}

#[test]
fn ssh_include_only_ever_warns() {
    let path = Path::new("/home/me/.ssh/config");
    assert_status(
        &ssh_include(&IncludeState::Installed, path),
        CheckStatus::Pass,
        "includes",
    );
    assert_status(
        &ssh_include(&IncludeState::Missing, path),
        CheckStatus::Warn,
        "does not include",
    );
    assert_status(
        &ssh_include(&IncludeState::Legacy, path),
        CheckStatus::Warn,
        "old inline",
    );
    assert_status(
        &ssh_include(&IncludeState::Unreadable("Permission denied".into()), path),
        CheckStatus::Warn,
        "Permission denied",
    );
}

#[test]
fn daemon_reachable_or_not() {
    assert_status(
        &checks::daemon(Ok("pid 7".into())),
        CheckStatus::Pass,
        "pid 7",
    );
    assert_status(
        &checks::daemon(Err("bangerd exited".into())),
        CheckStatus::Fail,
        "bangerd exited",
    );
}

#[test]
fn helper_is_needed_only_by_a_daemon_that_is_not_root() {
    let check = checks::helper(&HelperFacts::Root);
    assert_eq!(check.status, CheckStatus::Pass, "{check:?}");
    let check = checks::helper(&HelperFacts::Reached("/run/banger/helper.sock".into()));
    assert_eq!(check.status, CheckStatus::Pass, "{check:?}");
    assert!(
        check
            .detail
            .ends_with("banger-helper at /run/banger/helper.sock"),
        "{check:?}"
    );
    let check = checks::helper(&HelperFacts::Unreached {
        socket: "/run/banger/helper.sock".into(),
        error: "No such file or directory (os error 2)".into(),
    });
    assert_eq!(check.status, CheckStatus::Fail, "{check:?}");
    assert!(
        check
            .detail
            .contains("not reachable at /run/banger/helper.sock (No such file"),
        "{check:?}"
    );
    let fix = check.fix.unwrap();
    assert!(
        fix.contains("sudo make install-helper") && fix.contains("usermod -aG banger"),
        "{fix}"
    );
}

#[test]
fn tun_says_how_a_user_gets_it() {
    let user = Privileges { euid: 1000 };
    let check = checks::tun(&FakeHost {
        privileges: user,
        ..FakeHost::default()
    });
    assert_eq!(check.status, CheckStatus::Pass, "{check:?}");
    assert_eq!(check.detail, "/dev/net/tun usable by uid 1000");

    let mut closed = FakeHost {
        privileges: user,
        ..FakeHost::default()
    };
    closed.devices.insert(
        PathBuf::from("/dev/net/tun"),
        DeviceProbe::Unusable("Permission denied (os error 13)".into()),
    );
    let check = checks::tun(&closed);
    assert_eq!(check.status, CheckStatus::Fail, "{check:?}");
    assert!(
        check.detail.contains("uid 1000 cannot open /dev/net/tun"),
        "{check:?}"
    );
    assert!(
        check
            .fix
            .unwrap()
            .starts_with("sudo chmod 0666 /dev/net/tun")
    );

    let mut gone = FakeHost::default();
    gone.devices.remove(Path::new("/dev/net/tun"));
    let check = checks::tun(&gone);
    assert_eq!(check.status, CheckStatus::Fail, "{check:?}");
    assert_eq!(check.fix.as_deref(), Some("sudo modprobe tun"));
}

#[test]
fn ownership_names_a_foreign_file_and_the_chown_that_fixes_it() {
    let user = Privileges { euid: 1000 };
    let dirs = [PathBuf::from("/")];
    let clean = FakeHost {
        privileges: user,
        ..FakeHost::default()
    };
    let check = checks::ownership(&clean, &dirs);
    assert_eq!(check.status, CheckStatus::Pass, "{check:?}");
    assert_eq!(
        check.detail,
        "uid 1000 owns every file in banger's directories"
    );

    let left_by_root = FakeHost {
        privileges: user,
        foreign: banger_doctor::ForeignFiles {
            count: 3,
            first: vec![(PathBuf::from("/s/banger/ssh/id_ed25519"), 0)],
            unreadable: Vec::new(),
        },
        ..FakeHost::default()
    };
    let check = checks::ownership(&left_by_root, &dirs);
    assert_eq!(check.status, CheckStatus::Fail, "{check:?}");
    assert_eq!(
        check.detail,
        "3 files belong to another user, e.g. /s/banger/ssh/id_ed25519 (uid 0) in banger's \
         directories (left by running banger as root?)"
    );
    let fix = check.fix.as_deref().unwrap();
    assert!(
        fix.starts_with("give them back to yourself: sudo chown -R "),
        "{fix}"
    );
    assert!(fix.ends_with(" /"), "{fix}");

    // Root can use anything: nothing is walked.
    let root = FakeHost {
        foreign: left_by_root.foreign.clone(),
        ..FakeHost::default()
    };
    assert_eq!(checks::ownership(&root, &dirs).status, CheckStatus::Pass);
}

#[test]
fn host_checks_on_a_healthy_and_a_hostile_host() {
    let config = Config::default();
    let defaults = VmDefaults::resolve(&config.vm_defaults, None);
    let inputs = HostInputs {
        config: &config,
        config_path: Path::new("/c/config.toml"),
        state_dir: Path::new("/s"),
        own_dirs: &[PathBuf::from("/s")],
        defaults: &defaults,
    };
    let healthy = host_checks(&FakeHost::default(), &inputs);
    let names: Vec<&str> = healthy.iter().map(|check| check.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "arch",
            "vmm",
            "kvm",
            "tun",
            "vhost-vsock",
            "firecracker",
            "qemu",
            "vhost-device-vsock",
            "tools",
            "privileges",
            "ownership",
            "disk-space",
            "vm-defaults"
        ]
    );
    assert!(
        healthy
            .iter()
            .all(|check| check.status == CheckStatus::Pass),
        "{healthy:#?}"
    );
    let hostile = FakeHost {
        arch: "riscv64".into(),
        kvm: KvmProbe::Missing,
        ..FakeHost::default().without_program("firecracker")
    };
    let (pass, warn, fail) = banger_doctor::tally(&host_checks(&hostile, &inputs));
    assert_eq!((pass, warn, fail), (10, 0, 3));
}

#[test]
fn qemu_needs_qemu_and_the_vsock_device_and_says_when_it_is_slow() {
    let config = Config {
        vmm: VmmKind::Qemu,
        ..Config::default()
    };
    assert_status(&vmm(&config), CheckStatus::Pass, "software emulation");
    let host = FakeHost::default().without_program("vhost-device-vsock");
    let check = vhost_device_vsock(&host, &config);
    assert_status(
        &check,
        CheckStatus::Fail,
        "vhost-device-vsock is not in PATH",
    );
    assert!(
        check
            .fix
            .as_deref()
            .unwrap_or_default()
            .contains("install-deps.sh"),
        "{check:?}"
    );
    assert_status(
        &vhost_device_vsock(&host, &Config::default()),
        CheckStatus::Warn,
        "only vmm = \"qemu\" needs it",
    );
    let host = FakeHost::default().without_program("qemu-system-x86_64");
    let check = qemu(&host, &config);
    assert_status(
        &check,
        CheckStatus::Fail,
        "qemu-system-x86_64 is not in PATH",
    );
    assert!(
        check
            .fix
            .as_deref()
            .unwrap_or_default()
            .contains("qemu-system-x86"),
        "{check:?}"
    );
    // Without KVM a qemu guest still runs, under emulation: a warning.
    let host = FakeHost {
        kvm: KvmProbe::Missing,
        ..FakeHost::default()
    };
    assert_status(
        &kvm(&host, VmmKind::Qemu),
        CheckStatus::Warn,
        "software emulation",
    );
    assert_status(&firecracker(&host, &config), CheckStatus::Pass, "");
}

#[test]
fn companions_are_found_or_named_with_the_install_fix() {
    use banger_doctor::Companion;
    let companion = |name: &str, found: Result<&str, &str>, needed| Companion {
        name: name.into(),
        found: found.map(Into::into).map_err(Into::into),
        role: format!("{name} role"),
        needed,
    };
    let all = [
        companion(
            "banger-vsock-agent",
            Ok("/usr/lib/banger/banger-vsock-agent"),
            true,
        ),
        companion("banger-simvm", Ok("/usr/lib/banger/banger-simvm"), false),
    ];
    assert_status(
        &checks::companions(&all),
        CheckStatus::Pass,
        "banger-vsock-agent (/usr/lib/banger/banger-vsock-agent)",
    );
    let no_simvm = [
        companion("banger-vsock-agent", Ok("/a"), true),
        companion("banger-simvm", Err("/usr/bin/banger-simvm, PATH"), false),
    ];
    let check = checks::companions(&no_simvm);
    assert_status(
        &check,
        CheckStatus::Warn,
        "banger-simvm is missing (banger-simvm role; looked in /usr/bin/banger-simvm, PATH)",
    );
    assert!(check.fix.unwrap().contains("make install"));
    let no_agent = [companion("banger-vsock-agent", Err("x"), true)];
    assert_status(&checks::companions(&no_agent), CheckStatus::Fail, "missing");
}
