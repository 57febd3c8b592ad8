//! `doctor.run` in-process against a faked host.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_doctor::{CheckStatus, FakeHost, Host, KvmProbe};
use banger_model::config::Config;

use crate::harness::Harness;

fn check<'a>(
    result: &'a banger_rpc::response::DoctorResult,
    name: &str,
) -> &'a banger_rpc::response::DoctorCheck {
    result
        .checks
        .iter()
        .find(|check| check.name == name)
        .unwrap_or_else(|| panic!("no {name} check in {:#?}", result.checks))
}

#[tokio::test]
async fn daemon_checks_report_store_storage_and_dns() {
    let harness = Harness::new().await;
    let result =
        bangerd::services::doctor::run_with(&harness.daemon, Arc::new(FakeHost::default()))
            .await
            .unwrap();
    let names: Vec<&str> = result.checks.iter().map(|c| c.name.as_str()).collect();
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
            "vm-defaults",
            "companions",
            "storage",
            "vm-disks",
            "default-image",
            "helper",
            "dns",
            "dns-routing",
            "vm-resolution"
        ]
    );
    // The harness runs the sim and copies disks.
    assert_eq!(check(&result, "vmm").status, CheckStatus::Warn);
    assert_eq!(check(&result, "storage").status, CheckStatus::Warn);
    assert_eq!(check(&result, "default-image").status, CheckStatus::Pass);
    assert!(check(&result, "default-image").detail.contains("debian"));
    assert_eq!(check(&result, "dns").status, CheckStatus::Pass);
    assert_eq!(check(&result, "dns-routing").status, CheckStatus::Pass);
    // The fake resolver knows no names.
    assert_eq!(check(&result, "vm-resolution").status, CheckStatus::Warn);
    // The probe record is gone again.
    assert!(harness.daemon.network.records.is_empty());
}

/// A host whose resolver asks the daemon's own DNS records, like a
/// correctly routed systemd-resolved would.
#[derive(Debug)]
struct RoutedHost {
    inner: FakeHost,
    records: banger_net::DnsRecords,
    asked: Mutex<Vec<String>>,
}

impl Host for RoutedHost {
    fn arch(&self) -> String {
        self.inner.arch()
    }
    fn kvm(&self) -> KvmProbe {
        self.inner.kvm()
    }
    fn device(&self, path: &std::path::Path) -> banger_doctor::DeviceProbe {
        self.inner.device(path)
    }
    fn find_program(&self, name: &str) -> Option<std::path::PathBuf> {
        self.inner.find_program(name)
    }
    fn is_executable(&self, path: &std::path::Path) -> bool {
        self.inner.is_executable(path)
    }
    fn program_version(&self, program: &std::path::Path) -> Result<String, String> {
        self.inner.program_version(program)
    }
    fn privileges(&self) -> banger_doctor::Privileges {
        self.inner.privileges()
    }
    fn free_space(&self, dir: &std::path::Path) -> Result<banger_doctor::Space, String> {
        self.inner.free_space(dir)
    }
    fn resolve(&self, name: &str, _timeout: Duration) -> Result<Vec<IpAddr>, String> {
        self.asked.lock().unwrap().push(name.to_owned());
        let label = name.strip_suffix(".vm").ok_or("not a .vm name")?;
        self.records
            .get(label)
            .map(|ip| vec![IpAddr::V4(ip)])
            .ok_or_else(|| "NXDOMAIN".to_owned())
    }
    fn file_exists(&self, path: &std::path::Path) -> bool {
        self.inner.file_exists(path)
    }
    fn foreign_owned(&self, dirs: &[std::path::PathBuf], uid: u32) -> banger_doctor::ForeignFiles {
        self.inner.foreign_owned(dirs, uid)
    }
}

#[tokio::test]
async fn resolution_probe_uses_a_temporary_record() {
    let harness = Harness::new().await;
    let host = Arc::new(RoutedHost {
        inner: FakeHost::default(),
        records: harness.daemon.network.records.clone(),
        asked: Mutex::new(Vec::new()),
    });
    let result = bangerd::services::doctor::run_with(&harness.daemon, host.clone())
        .await
        .unwrap();
    let resolution = check(&result, "vm-resolution");
    assert_eq!(resolution.status, CheckStatus::Pass, "{resolution:?}");
    let asked = host.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert!(
        asked[0].starts_with("doctor-") && asked[0].ends_with(".vm"),
        "{asked:?}"
    );
    assert!(harness.daemon.network.records.is_empty());
}

#[tokio::test]
async fn a_configured_default_image_that_is_missing_fails() {
    let config = Config {
        default_image: Some("arch".into()),
        ..Config::default()
    };
    let harness = Harness::with_config(config).await;
    // No image at all: `arch` is neither local nor in the (empty) built-in catalog.
    for image in harness.daemon.store.list_images().unwrap() {
        harness.daemon.store.delete_image(&image.id).unwrap();
    }
    let host = FakeHost {
        arch: "aarch64".into(),
        ..FakeHost::default()
    };
    let result = bangerd::services::doctor::run_with(&harness.daemon, Arc::new(host))
        .await
        .unwrap();
    let image = check(&result, "default-image");
    assert_eq!(image.status, CheckStatus::Fail, "{image:?}");
    assert!(image.detail.contains("\"arch\""), "{image:?}");
    assert_eq!(check(&result, "arch").status, CheckStatus::Fail);
}
