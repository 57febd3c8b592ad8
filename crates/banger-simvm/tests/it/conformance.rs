//! Conformance against the real thing: the 68 requests a real Firecracker
//! v1.16.1 was sent, in order, with its answers (`tests/data/
//! firecracker-v1.16.1/api-responses.json`), played against each engine of
//! banger-simvm in the same setting (a scratch dir with `vmlinux`,
//! `root.ext4` and `data.ext4`; TAP `fctap0` on bridge `fcbr0`, in a network
//! namespace of the test's own). Every answer must have the recorded status
//! and error shape (the same `fault_message`; for successful bodies the
//! same keys and values, except `app_name`), unless the request is listed in
//! [`UNSUPPORTED`] with the reason; the test prints that list. A listed
//! request that now matches fails the test too, so the list stays true.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use banger_firecracker::ApiClient;
use banger_firecracker::launch::{self, LaunchSpec};
use banger_firecracker::vmm::{ProcessVmm, Vmm};
use hyper::Method;
use hyper::body::Bytes;
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::{self, KillOnDrop};

const RECORD: &str = include_str!("../data/firecracker-v1.16.1/api-responses.json");

/// Requests both engines answer differently from Firecracker on purpose.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "entropy-good",
        "no virtio-rng device: banger's guests seed their RNG from the kernel",
    ),
    (
        "balloon-good",
        "no balloon device: banger sizes memory at create time (`vm set` between boots)",
    ),
    (
        "mmds-config",
        "no MMDS: banger configures guests through their disks",
    ),
    (
        "vm-config-before-boot",
        "GET /vm/config is not emulated: banger never reads the configuration back",
    ),
    (
        "vm-config",
        "GET /vm/config is not emulated: banger never reads the configuration back",
    ),
    (
        "drive-patch-after-boot",
        "no drive hot-swap: banger never changes a running guest's drives",
    ),
    (
        "snapshot-create-full",
        "no snapshots: banger boots fresh and keeps state on disk",
    ),
    (
        "snapshot-create-while-running",
        "no snapshots: banger boots fresh and keeps state on disk",
    ),
    (
        "snapshot-load-missing",
        "no snapshots: banger boots fresh and keeps state on disk",
    ),
];

/// Keys of successful bodies whose values name the implementation.
const IMPLEMENTATION_KEYS: &[&str] = &["app_name"];

#[derive(Debug, Deserialize)]
struct Recording {
    firecracker: String,
    requests: Vec<Recorded>,
}

#[derive(Debug, Deserialize)]
struct Recorded {
    label: String,
    phase: String,
    method: String,
    path: String,
    body: Option<String>,
    status: Option<u16>,
    response: Option<Value>,
    error: Option<String>,
}

fn recording() -> Recording {
    serde_json::from_str(RECORD).expect("the record parses")
}

/// The scratch dir the record was made with.
fn scratch(dir: &Path) {
    fs_err::write(dir.join("vmlinux"), support::tiny_kernel()).unwrap();
    let empty = dir.join("empty");
    fs_err::create_dir(&empty).unwrap();
    support::mkfs_ext4(&empty, &dir.join("root.ext4"), "64M");
    support::mkfs_ext4(&empty, &dir.join("data.ext4"), "16M");
}

/// What one answer was, compared with the record.
#[derive(Debug)]
enum Verdict {
    Matches,
    Differs(String),
    /// Firecracker did not answer (it had exited), so there is nothing to
    /// compare with.
    NoRecord(String),
}

fn compare(recorded: &Recorded, status: u16, body: &[u8], work: &str) -> Verdict {
    let Some(expected_status) = recorded.status else {
        return Verdict::NoRecord(format!(
            "Firecracker did not answer ({})",
            recorded.error.as_deref().unwrap_or("no status")
        ));
    };
    let ours: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(body) {
            Ok(value) => Some(value),
            Err(_) => {
                return Verdict::Differs(format!(
                    "{status} with a body that is not JSON: {}",
                    String::from_utf8_lossy(body)
                ));
            }
        }
    };
    let ours = ours.map(|v| with_work(&v, work, "$WORK"));
    if status != expected_status || !same_shape(recorded.response.as_ref(), ours.as_ref()) {
        return Verdict::Differs(format!(
            "Firecracker: {expected_status} {}\n      ours:        {status} {}",
            render(recorded.response.as_ref()),
            render(ours.as_ref())
        ));
    }
    Verdict::Matches
}

fn render(value: Option<&Value>) -> String {
    value.map_or_else(|| "(no body)".to_owned(), Value::to_string)
}

/// Same status was checked; here: both without a body, or errors with the
/// same `fault_message`, or objects with the same keys and values (except
/// [`IMPLEMENTATION_KEYS`]).
fn same_shape(recorded: Option<&Value>, ours: Option<&Value>) -> bool {
    match (recorded, ours) {
        (None, None) => true,
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            a.len() == b.len()
                && a.iter().all(|(key, value)| match b.get(key) {
                    Some(_) if IMPLEMENTATION_KEYS.contains(&key.as_str()) => true,
                    Some(other) => other == value,
                    None => false,
                })
        }
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Replaces the scratch dir with `$WORK` (or back) in every string.
fn with_work(value: &Value, from: &str, to: &str) -> Value {
    match value {
        Value::String(text) => Value::String(text.replace(from, to)),
        Value::Array(items) => Value::Array(items.iter().map(|v| with_work(v, from, to)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), with_work(v, from, to)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Starts `binary` like bangerd does (`--id rec` as in the record).
async fn start(binary: &Path, extra: &[OsString], dir: &Path, name: &str) -> launch::VmmProcess {
    let mut spec = LaunchSpec::new(
        binary,
        "rec",
        dir.join(format!("{name}.sock")),
        dir.join(format!("{name}.console")),
    );
    spec.extra_args = extra.to_vec();
    ProcessVmm
        .start(&spec, &CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("starting {} failed: {e}", binary.display()))
}

/// Plays the whole record against `binary`; returns each request's verdict
/// by label, in order.
async fn play(binary: PathBuf, extra: Vec<OsString>) -> Vec<(String, Verdict)> {
    // Named like the recorder's (`mkdtemp(prefix="fcrec.")`), so bodies
    // holding paths are as long as recorded and serde's column numbers in
    // error messages agree.
    let dir = tempfile::Builder::new()
        .prefix("fcrec.")
        .rand_bytes(8)
        .tempdir_in("/tmp")
        .unwrap();
    scratch(dir.path());
    support::bridge_with_tap("fcbr0", "172.31.0.1/24", "fctap0");
    let work = dir.path().display().to_string();
    let record = recording();
    let mut verdicts = Vec::new();
    let mut process: Option<(launch::VmmProcess, KillOnDrop, String)> = None;
    for recorded in &record.requests {
        // "fresh-load" runs against a second process, as recorded.
        let name = if recorded.phase == "fresh-load" {
            "api2"
        } else {
            "api"
        };
        if process
            .as_ref()
            .is_none_or(|(_, _, current)| current != name)
        {
            drop(process.take());
            let started = start(&binary, &extra, dir.path(), name).await;
            let guard = KillOnDrop(started.pid());
            process = Some((started, guard, name.to_owned()));
        }
        let socket = dir.path().join(format!("{name}.sock"));
        let body = recorded.body.as_ref().map(|b| b.replace("$WORK", &work));
        let method = Method::from_bytes(recorded.method.as_bytes()).unwrap();
        let answer = async {
            let mut client = ApiClient::connect(&socket)
                .await
                .map_err(|e| e.to_string())?;
            client
                .raw(
                    method,
                    &recorded.path,
                    body.filter(|b| !b.is_empty()).map(Bytes::from),
                )
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        let verdict = match answer {
            Ok(answer) => compare(recorded, answer.status.as_u16(), &answer.body, &work),
            Err(_) if recorded.status.is_none() => compare(recorded, 0, &[], &work),
            Err(e) => Verdict::Differs(format!("no answer: {e}")),
        };
        verdicts.push((recorded.label.clone(), verdict));
    }
    if let Some((process, _, _)) = process {
        let _ = launch::kill(&process, std::time::Duration::from_secs(10)).await;
    }
    let console = fs_err::read_to_string(dir.path().join("api.console")).unwrap_or_default();
    eprintln!(
        "--- console of the first process (tail) ---\n{}",
        console
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    verdicts
}

/// Judges the verdicts: prints the unsupported list and the tally, panics
/// on any unexplained difference or any stale entry in [`UNSUPPORTED`].
fn judge(engine: &str, verdicts: &[(String, Verdict)]) {
    let record = recording();
    let unsupported: BTreeMap<&str, &str> = UNSUPPORTED.iter().copied().collect();
    let mut problems = Vec::new();
    let (mut matched, mut listed, mut no_record) = (0, 0, 0);
    eprintln!(
        "{engine} against {} ({} requests); deliberately unsupported:",
        record.firecracker,
        verdicts.len()
    );
    for (label, verdict) in verdicts {
        match (verdict, unsupported.get(label.as_str())) {
            (Verdict::Matches, None) => matched += 1,
            (Verdict::Matches, Some(_)) => problems.push(format!(
                "{label}: listed as unsupported but answers like Firecracker; remove it from UNSUPPORTED"
            )),
            (Verdict::Differs(_), Some(reason)) => {
                listed += 1;
                eprintln!("  {label}: {reason}");
            }
            (Verdict::Differs(detail), None) => problems.push(format!("{label}:\n      {detail}")),
            (Verdict::NoRecord(why), _) => {
                no_record += 1;
                eprintln!("  {label}: not compared: {why}");
            }
        }
    }
    eprintln!(
        "{engine}: {matched} of {} answered as Firecracker did, {listed} unsupported, {no_record} without a recorded answer",
        verdicts.len()
    );
    assert!(
        problems.is_empty(),
        "{engine} answered {} request(s) unlike Firecracker v1.16.1:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn sim_engine_answers_as_firecracker_did() {
    if !support::is_root() {
        support::skip(
            "sim_engine_answers_as_firecracker_did",
            "needs root (a bridge and TAP in a network namespace, loop mounts)",
            support::Prerequisite::ProvidedByCi,
        );
        return;
    }
    let binary = support::simvm_bin();
    let verdicts = support::in_netns(move || play(binary, vec!["--engine".into(), "sim".into()]));
    judge("banger-simvm --engine sim", &verdicts);
}

#[test]
fn qemu_engine_answers_as_firecracker_did() {
    let test = "qemu_engine_answers_as_firecracker_did";
    if !support::is_root() {
        support::skip(
            test,
            "needs root (a bridge and TAP in a network namespace)",
            support::Prerequisite::ProvidedByCi,
        );
        return;
    }
    let Some((qemu, vhost)) = support::qemu_engine_programs(test) else {
        return;
    };
    let binary = support::simvm_bin();
    let extra: Vec<OsString> = vec![
        "--engine".into(),
        "qemu".into(),
        // bangerd always passes a resolved accelerator; TCG runs anywhere.
        "--accel".into(),
        "tcg".into(),
        "--qemu-bin".into(),
        qemu.into(),
        "--vhost-vsock-bin".into(),
        vhost.into(),
    ];
    let verdicts = support::in_netns(move || play(binary, extra));
    judge("banger-simvm --engine qemu", &verdicts);
}

#[test]
fn real_firecracker_still_answers_as_recorded() {
    let test = "real_firecracker_still_answers_as_recorded";
    let Some(binary) = std::env::var_os("BANGER_TEST_FIRECRACKER").map(PathBuf::from) else {
        support::skip(
            test,
            "set BANGER_TEST_FIRECRACKER=/path/to/firecracker (v1.16) to compare",
            support::Prerequisite::NotInCi,
        );
        return;
    };
    if !support::is_root() {
        support::skip(
            test,
            "needs root (TAP, KVM)",
            support::Prerequisite::NotInCi,
        );
        return;
    }
    let verdicts = support::in_netns(move || play(binary, Vec::new()));
    let differs: Vec<String> = verdicts
        .iter()
        .filter_map(|(label, verdict)| match verdict {
            Verdict::Differs(detail) => Some(format!("{label}: {detail}")),
            _ => None,
        })
        .collect();
    assert!(
        differs.is_empty(),
        "Firecracker no longer answers as recorded:\n{}",
        differs.join("\n")
    );
}

/// The launcher drives a real Firecracker end to end: start detached, wait
/// for the API, configure everything over one connection, InstanceStart,
/// find it again by its socket, Ctrl-Alt-Del, kill.
#[test]
fn real_firecracker_boots_through_the_launcher() {
    let test = "real_firecracker_boots_through_the_launcher";
    let Some(binary) = std::env::var_os("BANGER_TEST_FIRECRACKER").map(PathBuf::from) else {
        support::skip(
            test,
            "set BANGER_TEST_FIRECRACKER=/path/to/firecracker (v1.16)",
            support::Prerequisite::NotInCi,
        );
        return;
    };
    if !support::is_root() {
        support::skip(
            test,
            "needs root (TAP, KVM)",
            support::Prerequisite::NotInCi,
        );
        return;
    }
    support::in_netns(move || async move {
        use banger_firecracker::api::{
            BootSource, Drive, Logger, MachineConfiguration, NetworkInterface, Vsock,
        };
        use banger_firecracker::boot_args::{BootArgs, IpConfig};
        use std::net::Ipv4Addr;

        let dir = tempfile::tempdir().unwrap();
        scratch(dir.path());
        support::bridge_with_tap("br-fc", "172.31.0.1/24", "tap-fc");
        let mut spec = LaunchSpec::new(
            &binary,
            "launcher-test",
            dir.path().join("api.sock"),
            dir.path().join("console.log"),
        );
        spec.vsock_socket = Some(dir.path().join("v.sock"));
        spec.log_path = Some(dir.path().join("vmm.log"));
        let vmm = ProcessVmm;
        let process = vmm.start(&spec, &CancellationToken::new()).await.unwrap();
        let _kill = KillOnDrop(process.pid());
        let ip = IpConfig::new(
            Ipv4Addr::new(172, 31, 0, 2),
            24,
            Ipv4Addr::new(172, 31, 0, 1),
            "fc-guest",
        )
        .unwrap();
        let config = launch::VmConfig {
            logger: Some(Logger {
                level: Some(banger_firecracker::api::LogLevel::Debug),
                ..Logger::default()
            }),
            metrics: None,
            machine: MachineConfiguration::new(1, 128),
            boot_source: BootSource {
                kernel_image_path: dir.path().join("vmlinux").display().to_string(),
                initrd_path: None,
                boot_args: Some(BootArgs::new(ip).with_first_boot_init().to_string()),
            },
            drives: vec![
                Drive::virtio(
                    "rootfs",
                    dir.path().join("root.ext4").display().to_string(),
                    true,
                ),
                Drive::virtio(
                    "work",
                    dir.path().join("data.ext4").display().to_string(),
                    false,
                ),
            ],
            network_interfaces: vec![NetworkInterface::new(
                "eth0",
                "tap-fc",
                Some("02:fc:ac:1f:00:02".parse().unwrap()),
            )],
            vsock: Some(Vsock {
                vsock_id: None,
                guest_cid: 3,
                uds_path: dir.path().join("v.sock").display().to_string(),
            }),
        };
        vmm.configure(&process, &config).await.unwrap();
        let mut client = ApiClient::connect(&spec.api_socket).await.unwrap();
        let info = client.describe_instance().await.unwrap();
        assert_eq!(info.state, banger_firecracker::api::InstanceState::Running);
        assert_eq!(info.app_name, "Firecracker");
        let adopted = vmm.adopt(&spec.api_socket).await.unwrap().unwrap();
        assert_eq!(adopted.pid(), process.pid());
        vmm.stop(&process).await.unwrap();
        vmm.kill(&process).await.unwrap();
        assert_eq!(process.exited(), Some(launch::VmmExit::Signal(9)));
        let log = fs_err::read_to_string(dir.path().join("vmm.log")).unwrap();
        assert!(log.contains("Running Firecracker v1.16"), "{log}");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_is_the_one_described() {
        let record = recording();
        assert_eq!(record.requests.len(), 68);
        assert!(
            record.firecracker.contains("v1.16.1"),
            "{}",
            record.firecracker
        );
        for (label, _) in UNSUPPORTED {
            assert!(
                record.requests.iter().any(|r| r.label == *label),
                "{label} is not in the record"
            );
        }
    }

    #[test]
    fn shapes_compare_fault_messages_and_values_but_not_app_names() {
        let fc = serde_json::json!({"id": "rec", "app_name": "Firecracker", "state": "Running"});
        let ours = serde_json::json!({"id": "rec", "app_name": "banger-simvm", "state": "Running"});
        assert!(same_shape(Some(&fc), Some(&ours)));
        let paused =
            serde_json::json!({"id": "rec", "app_name": "banger-simvm", "state": "Paused"});
        assert!(!same_shape(Some(&fc), Some(&paused)));
        let fault = serde_json::json!({"fault_message": "PCI is not enabled"});
        let other = serde_json::json!({"fault_message": "PCI is enabled"});
        assert!(!same_shape(Some(&fault), Some(&other)));
        assert!(!same_shape(None, Some(&fault)));
        assert!(same_shape(None, None));
    }
}
