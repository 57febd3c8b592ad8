//! The checks on this machine: the shape of every answer, and the checks
//! that must pass on the test machines (x86_64, tools installed, root).

use std::path::Path;

use banger_doctor::{CheckStatus, HostInputs, RealHost, host_checks};
use banger_model::config::Config;
use banger_model::defaults::{HostFacts, VmDefaults};

#[test]
fn host_checks_on_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default();
    let defaults = VmDefaults::resolve(&config.vm_defaults, HostFacts::detect());
    let inputs = HostInputs {
        config: &config,
        config_path: &dir.path().join("config.toml"),
        state_dir: dir.path(),
        own_dirs: &[dir.path().to_owned()],
        defaults: &defaults,
    };
    let checks = host_checks(&RealHost, &inputs);
    for check in &checks {
        eprintln!(
            "{:5} {:12} {}",
            check.status.as_str(),
            check.name,
            check.detail
        );
        assert!(
            !check.name.is_empty() && !check.detail.is_empty(),
            "{check:?}"
        );
        assert_eq!(
            check.status == CheckStatus::Pass,
            check.fix.is_none(),
            "{check:?}"
        );
    }
    let status = |name: &str| {
        checks
            .iter()
            .find(|check| check.name == name)
            .unwrap_or_else(|| panic!("no {name} check"))
            .status
    };
    // The test machines are x86_64 with e2fsprogs, iptables and OpenSSH.
    assert_eq!(status("arch"), CheckStatus::Pass);
    assert_eq!(status("tools"), CheckStatus::Pass);
    assert_eq!(status("vm-defaults"), CheckStatus::Pass);
    assert_eq!(status("vmm"), CheckStatus::Pass);
    if nix::unistd::geteuid().is_root() {
        assert_eq!(status("privileges"), CheckStatus::Pass);
    } else {
        eprintln!("not root: the privileges check is not asserted");
    }
    // Whatever KVM says here, the probe must agree with /dev/kvm existing.
    let kvm = checks.iter().find(|check| check.name == "kvm").unwrap();
    if !Path::new("/dev/kvm").exists() {
        assert!(kvm.detail.contains("does not exist"), "{kvm:?}");
    }
}
