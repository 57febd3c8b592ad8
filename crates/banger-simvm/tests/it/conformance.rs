//! One table of API requests and the answers Firecracker v1.16 gives,
//! played in order against banger-simvm and, when `BANGER_TEST_FIRECRACKER`
//! names a firecracker binary, against the real Firecracker too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_firecracker::ApiClient;
use banger_firecracker::launch::{self, LaunchSpec};
use banger_firecracker::vmm::{ProcessVmm, Vmm};
use hyper::Method;
use hyper::body::Bytes;
use tokio_util::sync::CancellationToken;

use crate::support::{self, KillOnDrop};

/// One request and the expected answer: status and a substring of the body
/// (usually of the `fault_message`; empty for 204).
struct Row {
    method: &'static str,
    path: &'static str,
    body: &'static str,
    status: u16,
    expect: &'static str,
}

const fn row(
    method: &'static str,
    path: &'static str,
    body: &'static str,
    status: u16,
    expect: &'static str,
) -> Row {
    Row {
        method,
        path,
        body,
        status,
        expect,
    }
}
const BEFORE: &str = "The requested operation is not supported before starting the microVM.";
const AFTER: &str = "The requested operation is not supported after starting the microVM.";
/// Before `InstanceStart`: every endpoint, good and bad bodies, wrong order. /// Placeholders: `{dir}` (a scratch directory with vmlinux, root.ext4, /// work.ext4 and a regular file taken.sock), `{tap}`, `{cmdline}`, /// `{too_long}` (a 2048-character command line). #[rustfmt::skip]
const PRE_BOOT: &[Row] = &[
    row("GET", "/", "", 200, r#""state":"Not started""#),
    row(
        "GET",
        "/machine-config",
        "",
        200,
        r#"{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}"#,
    ),
    row("GET", "/machine-config/", "", 200, r#""vcpu_count":1"#),
    row(
        "GET",
        "/machine-config",
        "{}",
        400,
        "GET request cannot have a body.",
    ),
    row(
        "GET",
        "/nope",
        "",
        400,
        "Invalid request method and/or path: GET nope.",
    ),
    row(
        "GET",
        "/machine-config?x=1",
        "",
        400,
        "Invalid request method and/or path: GET machine-config?x=1.",
    ),
    row(
        "PUT",
        "/nope",
        "{}",
        400,
        "Invalid request method and/or path: PUT nope.",
    ),
    row(
        "PUT",
        "/vm",
        r#"{"state":"Paused"}"#,
        400,
        "Invalid request method and/or path: PUT vm.",
    ),
    row(
        "GET",
        "/vm",
        "",
        400,
        "Invalid request method and/or path: GET vm.",
    ),
    row(
        "GET",
        "/version",
        "",
        200,
        r#"{"firecracker_version":"1.16.1"}"#,
    ),
    row("PATCH", "/vm", "", 400, "Empty PATCH request."),
    row("DELETE", "/drives/x", "{}", 400, "Empty Delete request."),
    row("DELETE", "/drives", "", 400, "The ID cannot be empty."),
    row("DELETE", "/drives/work", "", 400, BEFORE),
    row("DELETE", "/network-interfaces/eth0", "", 400, BEFORE),
    // Wrong order: nothing can run or be changed at runtime yet.
    row(
        "PUT",
        "/actions",
        r#"{"action_type":"InstanceStart"}"#,
        400,
        "Start microvm error: Cannot start microvm without kernel configuration.",
    ),
    row(
        "PUT",
        "/actions",
        r#"{"action_type":"SendCtrlAltDel"}"#,
        400,
        BEFORE,
    ),
    row(
        "PUT",
        "/actions",
        r#"{"action_type":"FlushMetrics"}"#,
        400,
        BEFORE,
    ),
    row("PATCH", "/vm", r#"{"state":"Paused"}"#, 400, BEFORE),
    row(
        "PUT",
        "/actions",
        r#"{"action_type":"Nope"}"#,
        400,
        "unknown variant `Nope`, expected one of `FlushMetrics`, `InstanceStart`, `SendCtrlAltDel`",
    ),
    row(
        "PUT",
        "/actions",
        r#"{"action_type":"InstanceStart","x":1}"#,
        400,
        "unknown field `x`, expected `action_type`",
    ),
    row("PUT", "/actions", "{}", 400, "missing field `action_type`"),
    // machine-config
    row(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":2,"mem_size_mib":256,"foo":1}"#,
        400,
        "An error occurred when deserializing the json body of a request: unknown field `foo`, expected one of `vcpu_count`, `mem_size_mib`, `smt`, `cpu_template`, `track_dirty_pages`, `huge_pages`",
    ),
    row(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":2}"#,
        400,
        "missing field `mem_size_mib`",
    ),
    row(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":"2","mem_size_mib":256}"#,
        400,
        "invalid type: string \"2\", expected u8",
    ),
    row(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":0,"mem_size_mib":256}"#,
        400,
        "Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled.",
    ),
    row(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":33,"mem_size_mib":256}"#,
        400,
        "The number of vCPUs must be greater than 0",
    ),
    row(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":300,"mem_size_mib":256}"#,
        400,
        "invalid value: integer `300`, expected u8",
    ),
    row(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":3,"mem_size_mib":256,"smt":true}"#,
        400,
        "The number of vCPUs must be greater than 0",
    ),
    row(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":2,"mem_size_mib":0}"#,
        400,
        "Machine config error: The memory size (MiB) is either 0, or not a multiple of the configured page size.",
    ),
    row(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":2,"mem_size_mib":129,"huge_pages":"2M"}"#,
        400,
        "The memory size (MiB) is either 0",
    ),
    row(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":2,"mem_size_mib":256,"cpu_template":"V1N1"}"#,
        400,
        "unknown variant `V1N1`, expected one of `C3`, `T2`, `T2S`, `None`, `T2CL`, `T2A`",
    ),
    row("PUT", "/machine-config", "", 400, "Empty PUT request."),
    row(
        "PUT",
        "/machine-config",
        "not json",
        400,
        "An error occurred when deserializing the json body of a request: expected ident at line 1 column 2.",
    ),
    row(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":2,"mem_size_mib":256,"cpu_template":"T2"}"#,
        204,
        "",
    ),
    row("GET", "/machine-config", "", 200, r#""cpu_template":"T2""#),
    row(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":2,"mem_size_mib":256,"smt":false,"cpu_template":"None","track_dirty_pages":false,"huge_pages":"None"}"#,
        204,
        "",
    ),
    row(
        "GET",
        "/machine-config",
        "",
        200,
        r#"{"vcpu_count":2,"mem_size_mib":256,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}"#,
    ),
    row(
        "PATCH",
        "/machine-config",
        "{}",
        400,
        "Empty PATCH request.",
    ),
    row(
        "PATCH",
        "/machine-config",
        r#"{"vcpu_count":0}"#,
        400,
        "The number of vCPUs must be greater than 0",
    ),
    row(
        "PATCH",
        "/machine-config",
        r#"{"mem_size_mib":512}"#,
        204,
        "",
    ),
    row(
        "GET",
        "/machine-config",
        "",
        200,
        r#""vcpu_count":2,"mem_size_mib":512"#,
    ),
    // boot-source
    row(
        "PUT",
        "/boot-source",
        r#"{"kernel_image_path":"{dir}/nope"}"#,
        400,
        "Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)",
    ),
    row(
        "PUT",
        "/boot-source",
        r#"{"kernel_image_path":"{dir}/vmlinux","x":1}"#,
        400,
        "unknown field `x`, expected one of `kernel_image_path`, `initrd_path`, `boot_args`",
    ),
    row(
        "PUT",
        "/boot-source",
        "{}",
        400,
        "missing field `kernel_image_path`",
    ),
    row(
        "PUT",
        "/boot-source",
        r#"{"kernel_image_path":"{dir}/vmlinux","initrd_path":"{dir}/nope"}"#,
        400,
        "Boot source error: The initrd file cannot be opened due to invalid path or invalid permissions. No such file or directory (os error 2)",
    ),
    row(
        "PUT",
        "/boot-source",
        r#"{"kernel_image_path":"{dir}/vmlinux","boot_args":"{too_long}"}"#,
        400,
        "Boot source error: The kernel command line is invalid: Invalid cmdline capacity provided.",
    ),
    row(
        "PUT",
        "/boot-source",
        r#"{"kernel_image_path":"{dir}/vmlinux","boot_args":"{cmdline}"}"#,
        204,
        "",
    ),
    // drives
    row(
        "PUT",
        "/drives/rootfs",
        r#"{"drive_id":"rootfs","is_root_device":true}"#,
        400,
        "Drive config error: Unable to create the virtio block device: Invalid block config.",
    ),
    row(
        "PUT",
        "/drives/rootfs",
        r#"{"drive_id":"other","is_root_device":true,"path_on_host":"{dir}/root.ext4","is_read_only":false}"#,
        400,
        "The id from the path does not match the id from the body!",
    ),
    row(
        "PUT",
        "/drives/rootfs",
        r#"{"drive_id":"rootfs","is_root_device":true,"path_on_host":"{dir}/nope","is_read_only":false}"#,
        400,
        "Drive config error: Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: No such file or directory (os error 2) {dir}/nope",
    ),
    row(
        "PUT",
        "/drives/rootfs",
        r#"{"drive_id":"rootfs","is_root_device":true,"path_on_host":"{dir}/root.ext4","x":1}"#,
        400,
        "unknown field `x`, expected one of `drive_id`, `partuuid`, `is_root_device`, `cache_type`, `is_read_only`, `path_on_host`, `rate_limiter`, `io_engine`, `socket`",
    ),
    row(
        "PUT",
        "/drives/rootfs",
        r#"{"drive_id":"rootfs","path_on_host":"{dir}/root.ext4"}"#,
        400,
        "missing field `is_root_device`",
    ),
    row(
        "PUT",
        "/drives/rootfs",
        r#"{"drive_id":"rootfs","is_root_device":"yes","path_on_host":"{dir}/root.ext4"}"#,
        400,
        "invalid type: string \"yes\", expected a boolean",
    ),
    row(
        "PUT",
        "/drives/ro-ot",
        r#"{"drive_id":"ro-ot","is_root_device":true,"path_on_host":"{dir}/root.ext4"}"#,
        400,
        "API Resource IDs can only contain alphanumeric characters and underscores.",
    ),
    row(
        "PUT",
        "/drives",
        r#"{"drive_id":"a","is_root_device":true,"path_on_host":"{dir}/root.ext4"}"#,
        400,
        "The ID cannot be empty.",
    ),
    row(
        "PUT",
        "/drives/work",
        r#"{"drive_id":"work","is_root_device":false,"path_on_host":"{dir}/work.ext4","cache_type":"Bad"}"#,
        400,
        "unknown variant `Bad`, expected `Unsafe` or `Writeback`",
    ),
    row(
        "PUT",
        "/drives/rootfs",
        r#"{"drive_id":"rootfs","is_root_device":true,"path_on_host":"{dir}/root.ext4","is_read_only":false}"#,
        204,
        "",
    ),
    row(
        "PUT",
        "/drives/work",
        r#"{"drive_id":"work","is_root_device":true,"path_on_host":"{dir}/work.ext4","is_read_only":false}"#,
        400,
        "Drive config error: A root block device already exists!",
    ),
    row(
        "PUT",
        "/drives/work",
        r#"{"drive_id":"work","is_root_device":false,"path_on_host":"{dir}/work.ext4","is_read_only":false,"cache_type":"Writeback","io_engine":"Sync"}"#,
        204,
        "",
    ),
    row(
        "PATCH",
        "/drives/work",
        r#"{"drive_id":"work","path_on_host":"{dir}/work.ext4"}"#,
        400,
        BEFORE,
    ),
    row(
        "PATCH",
        "/drives/work",
        r#"{"x":1}"#,
        400,
        "unknown field `x`, expected one of `drive_id`, `path_on_host`, `rate_limiter`",
    ),
    row(
        "PATCH",
        "/drives/work",
        r#"{"drive_id":"other"}"#,
        400,
        "The id from the path does not match the id from the body!",
    ),
    row(
        "PATCH",
        "/drives/wo-rk",
        r#"{"drive_id":"work"}"#,
        400,
        "API Resource IDs can only contain alphanumeric characters and underscores.",
    ),
    row(
        "PATCH",
        "/network-interfaces/eth0",
        r#"{"iface_id":"eth0"}"#,
        400,
        BEFORE,
    ),
    row(
        "PATCH",
        "/network-interfaces/eth0",
        r#"{"iface_id":"eth1"}"#,
        400,
        "The id from the path [eth0] does not match the id from the body [eth1]!",
    ),
    row(
        "PATCH",
        "/network-interfaces/eth0",
        r#"{"iface_id":"eth0","host_dev_name":"x"}"#,
        400,
        "unknown field `host_dev_name`, expected one of `iface_id`, `rx_rate_limiter`, `tx_rate_limiter`",
    ),
    // network-interfaces
    row(
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id":"eth0","host_dev_name":"{tap}","guest_mac":"zz"}"#,
        400,
        "An error occurred when deserializing the json body of a request: The provided MAC address is invalid.",
    ),
    row(
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id":"eth1","host_dev_name":"{tap}"}"#,
        400,
        "The id from the path [eth0] does not match the id from the body [eth1]!",
    ),
    row(
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id":"eth0"}"#,
        400,
        "missing field `host_dev_name`",
    ),
    row(
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id":"eth0","host_dev_name":"{tap}","x":1}"#,
        400,
        "unknown field `x`, expected one of `iface_id`, `host_dev_name`, `guest_mac`, `mtu`, `rx_rate_limiter`, `tx_rate_limiter`",
    ),
    row(
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id":"eth0","host_dev_name":"{tap}","mtu":10}"#,
        400,
        "Network config error: Could not create the network device: MTU 10 is out of range [68, 65535]",
    ),
    row(
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id":"eth0","host_dev_name":"averyveryverylongtapname"}"#,
        400,
        "Network config error: Could not create the network device: Open tap device failed: Invalid interface name",
    ),
    row(
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id":"eth0","host_dev_name":"{tap}","guest_mac":"02:fc:ac:1f:00:02"}"#,
        204,
        "",
    ),
    row(
        "PUT",
        "/network-interfaces/eth1",
        r#"{"iface_id":"eth1","host_dev_name":"{tap}2","guest_mac":"02:fc:ac:1f:00:02"}"#,
        400,
        "Network config error: The MAC address is already in use: 02:fc:ac:1f:00:02",
    ),
    row(
        "PUT",
        "/network-interfaces/eth1",
        r#"{"iface_id":"eth1","host_dev_name":"{tap}"}"#,
        400,
        "Device or resource busy (os error 16). Invalid TUN/TAP Backend provided by {tap}.",
    ),
    // vsock
    row(
        "PUT",
        "/vsock",
        r#"{"guest_cid":3}"#,
        400,
        "missing field `uds_path`",
    ),
    row(
        "PUT",
        "/vsock",
        r#"{"guest_cid":3,"uds_path":"{dir}/v.sock","x":1}"#,
        400,
        "unknown field `x`, expected one of `vsock_id`, `guest_cid`, `uds_path`",
    ),
    row(
        "PUT",
        "/vsock",
        r#"{"guest_cid":-1,"uds_path":"{dir}/v.sock"}"#,
        400,
        "invalid value: integer `-1`, expected u32",
    ),
    row(
        "PUT",
        "/vsock",
        r#"{"guest_cid":3,"uds_path":"{dir}/nodir/v.sock"}"#,
        400,
        "Vsock config error: Cannot create backend for vsock device: Error binding to the host-side Unix socket: No such file or directory (os error 2)",
    ),
    row(
        "PUT",
        "/vsock",
        r#"{"guest_cid":3,"uds_path":"{dir}/v.sock"}"#,
        204,
        "",
    ),
    row(
        "PUT",
        "/vsock",
        r#"{"guest_cid":3,"uds_path":"{dir}/v.sock","vsock_id":"old"}"#,
        204,
        "",
    ),
    row(
        "PUT",
        "/vsock",
        r#"{"guest_cid":3,"uds_path":"{dir}/taken.sock"}"#,
        400,
        "Error binding to the host-side Unix socket: Address already in use (os error 98)",
    ),
    row(
        "PUT",
        "/vsock",
        r#"{"guest_cid":3,"uds_path":"{dir}/v.sock"}"#,
        204,
        "",
    ),
    // logger and metrics
    row(
        "PUT",
        "/logger",
        r#"{"level":"loud"}"#,
        400,
        "Invalid LevelFilter",
    ),
    row(
        "PUT",
        "/logger",
        r#"{"x":1}"#,
        400,
        "unknown field `x`, expected one of `log_path`, `level`, `show_level`, `show_log_origin`, `module`",
    ),
    row(
        "PUT",
        "/logger",
        r#"{"log_path":"{dir}/nodir/log"}"#,
        400,
        "Logger error: Failed to open target file: No such file or directory (os error 2)",
    ),
    row(
        "PUT",
        "/logger",
        r#"{"log_path":"{dir}/vmm.log","level":"warn","show_level":true}"#,
        204,
        "",
    ),
    row(
        "PUT",
        "/metrics",
        r#"{}"#,
        400,
        "missing field `metrics_path`",
    ),
    row(
        "PUT",
        "/metrics",
        r#"{"metrics_path":"{dir}/nodir/metrics"}"#,
        400,
        "Metrics error: Cannot initialize the metrics system due to bad user input: No such file or directory (os error 2)",
    ),
    row(
        "PUT",
        "/metrics",
        r#"{"metrics_path":"{dir}/metrics","x":1}"#,
        204,
        "",
    ),
    row(
        "PUT",
        "/metrics",
        r#"{"metrics_path":"{dir}/metrics"}"#,
        400,
        "Metrics error: Cannot initialize the metrics system due to bad user input: Reinitialization of metrics not allowed.",
    ),
    row("GET", "/", "", 200, r#""state":"Not started""#),
];

/// After a successful `InstanceStart`. `SendCtrlAltDel` comes last: it
/// shuts a simvm guest down.
#[rustfmt::skip]
const POST_BOOT: &[Row] = &[
    row("PUT", "/actions", r#"{"action_type":"InstanceStart"}"#, 204, ""),
    row("GET", "/", "", 200, r#""state":"Running""#),
    row("PUT", "/actions", r#"{"action_type":"InstanceStart"}"#, 400, AFTER),
    row("PUT", "/machine-config", r#"{"vcpu_count":1,"mem_size_mib":128}"#, 400, AFTER),
    row("PUT", "/machine-config", r#"{"vcpu_count":1,"mem_size_mib":128,"x":1}"#, 400, "unknown field `x`"),
    row("PATCH", "/machine-config", r#"{"vcpu_count":1}"#, 400, AFTER),
    row("PATCH", "/machine-config", r#"{}"#, 400, "Empty PATCH request."),
    row("GET", "/machine-config", "", 200, r#""vcpu_count":2,"mem_size_mib":512"#),
    row("PUT", "/boot-source", r#"{"kernel_image_path":"{dir}/vmlinux"}"#, 400, AFTER),
    row("PUT", "/drives/extra", r#"{"drive_id":"extra","is_root_device":false,"path_on_host":"{dir}/work.ext4","is_read_only":true}"#, 400, "PCI is not enabled"),
    row("PUT", "/drives/extra", r#"{"drive_id":"other","is_root_device":false}"#, 400, "The id from the path does not match the id from the body!"),
    row("PUT", "/network-interfaces/eth9", r#"{"iface_id":"eth9","host_dev_name":"{tap}9"}"#, 400, "PCI is not enabled"),
    row("PUT", "/vsock", r#"{"guest_cid":3,"uds_path":"{dir}/v2.sock"}"#, 400, AFTER),
    row("PUT", "/logger", r#"{"level":"Info"}"#, 400, AFTER),
    row("PUT", "/metrics", r#"{"metrics_path":"{dir}/metrics2"}"#, 400, AFTER),
    row("PUT", "/actions", r#"{"action_type":"FlushMetrics"}"#, 204, ""),
    row("PATCH", "/vm", r#"{"state":"Running"}"#, 400, "unknown variant `Running`, expected `Paused` or `Resumed`"),
    row("PATCH", "/vm", r#"{"state":"Paused","x":1}"#, 400, "unknown field `x`, expected `state`"),
    row("PATCH", "/vm", r#"{"state":"Paused"}"#, 204, ""),
    row("GET", "/", "", 200, r#""state":"Paused""#),
    row("PATCH", "/vm", r#"{"state":"Resumed"}"#, 204, ""),
    row("GET", "/", "", 200, r#""state":"Running""#),
    row("PUT", "/actions", r#"{"action_type":"SendCtrlAltDel"}"#, 204, ""),
];

struct Vars {
    dir: PathBuf,
    tap: String,
    cmdline: String,
}

impl Vars {
    fn fill(&self, text: &str) -> String {
        text.replace("{dir}", &self.dir.display().to_string())
            .replace("{tap}", &self.tap)
            .replace("{cmdline}", &self.cmdline)
            .replace("{too_long}", &"a".repeat(2048))
    }
}

/// Plays `rows` against the API on `socket`; returns every mismatch.
async fn play(socket: &Path, rows: &[Row], vars: &Vars) -> Vec<String> {
    let mut failures = Vec::new();
    for row in rows {
        let path = vars.fill(row.path);
        let body = vars.fill(row.body);
        let expect = vars.fill(row.expect);
        let method = Method::from_bytes(row.method.as_bytes()).unwrap();
        // A fresh connection per row, so one refused request cannot affect
        // the next.
        let mut client = match ApiClient::connect(socket).await {
            Ok(client) => client,
            Err(e) => {
                failures.push(format!("{} {path}: cannot connect: {e}", row.method));
                break;
            }
        };
        let answer = client
            .raw(
                method,
                &path,
                (!body.is_empty()).then(|| Bytes::from(body.clone())),
            )
            .await;
        match answer {
            Ok(answer) => {
                // Errors are compared on their decoded fault_message, other
                // answers on the raw body.
                let text = serde_json::from_slice::<banger_firecracker::api::Error>(&answer.body)
                    .map(|e| e.fault_message)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&answer.body).into_owned());
                if answer.status.as_u16() != row.status || !text.contains(&expect) {
                    failures.push(format!(
                        "{} {path} {body}\n    expected {} containing {expect:?}\n    got      {} {text}",
                        row.method, row.status, answer.status.as_u16()
                    ));
                }
            }
            Err(e) => failures.push(format!("{} {path}: request failed: {e}", row.method)),
        }
    }
    failures
}

/// The scratch directory every run uses.
fn scratch(dir: &Path, with_ext4: bool) {
    fs_err::write(dir.join("vmlinux"), support::tiny_kernel()).unwrap();
    fs_err::write(dir.join("taken.sock"), "not a socket").unwrap();
    if with_ext4 {
        let empty = dir.join("empty");
        fs_err::create_dir(&empty).unwrap();
        support::mkfs_ext4(&empty, &dir.join("root.ext4"), "16M");
        support::mkfs_ext4(&empty, &dir.join("work.ext4"), "8M");
    } else {
        for image in ["root.ext4", "work.ext4"] {
            fs_err::write(dir.join(image), vec![0u8; 4096]).unwrap();
        }
    }
}

const CMDLINE: &str =
    "console=ttyS0 reboot=k panic=1 ip=172.31.0.2::172.31.0.1:255.255.255.0:conformance:eth0:off";

/// Starts `binary` like the daemon would and plays the table. With `boot`
/// the post-boot rows run too (needs root: a bridge and TAP in the test's
/// network namespace, and for simvm a real mount).
async fn check(binary: PathBuf, boot: bool, expect_exit_after_ctrl_alt_del: bool) {
    let dir = tempfile::tempdir().unwrap();
    scratch(dir.path(), boot);
    let tap = format!("tap{}", &support::random_suffix()[..6]);
    if boot {
        support::bridge_with_tap("br-conf", "172.31.0.1/24", &tap);
    }
    let vars = Vars {
        dir: dir.path().to_owned(),
        tap,
        cmdline: CMDLINE.to_owned(),
    };
    let mut spec = LaunchSpec::new(
        &binary,
        "conformance",
        dir.path().join("api.sock"),
        dir.path().join("console.log"),
    );
    spec.vsock_socket = Some(dir.path().join("v.sock"));
    let vmm = ProcessVmm;
    let process = vmm
        .start(&spec, &CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("starting {} failed: {e}", binary.display()));
    let _kill = KillOnDrop(process.pid());

    let mut failures = play(&spec.api_socket, PRE_BOOT, &vars).await;
    if boot {
        failures.extend(play(&spec.api_socket, POST_BOOT, &vars).await);
    }
    let console = fs_err::read_to_string(dir.path().join("console.log")).unwrap_or_default();
    assert!(
        failures.is_empty(),
        "{} answered {} request(s) unlike Firecracker v1.16:\n{}\n--- console ---\n{console}",
        binary.display(),
        failures.len(),
        failures.join("\n")
    );
    if boot && expect_exit_after_ctrl_alt_del {
        let exit = tokio::time::timeout(Duration::from_secs(30), process.exit_watch().wait())
            .await
            .expect("simvm exits after SendCtrlAltDel");
        assert_eq!(exit, launch::VmmExit::Code(0), "console:\n{console}");
    }
}

#[test]
fn simvm_answers_like_firecracker() {
    let binary = support::simvm_bin();
    if !support::is_root() || !support::have("mkfs.ext4") {
        support::skip(
            "post-boot rows of simvm_answers_like_firecracker",
            "needs root and mkfs.ext4 to boot; playing the pre-boot rows only",
        );
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(check(binary, false, false));
        return;
    }
    support::in_netns(move || check(binary, true, true));
}

#[test]
fn real_firecracker_answers_the_same_table() {
    let Some(binary) = std::env::var_os("BANGER_TEST_FIRECRACKER").map(PathBuf::from) else {
        support::skip(
            "real_firecracker_answers_the_same_table",
            "set BANGER_TEST_FIRECRACKER=/path/to/firecracker (v1.16) to compare",
        );
        return;
    };
    if !support::is_root() {
        support::skip(
            "real_firecracker_answers_the_same_table",
            "needs root (TAP, KVM)",
        );
        return;
    }
    support::in_netns(move || check(binary, true, false));
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
        );
        return;
    };
    if !support::is_root() {
        support::skip(test, "needs root (TAP, KVM)");
        return;
    }
    support::in_netns(move || async move {
        use banger_firecracker::api::{
            BootSource, Drive, Logger, MachineConfiguration, NetworkInterface, Vsock,
        };
        use banger_firecracker::boot_args::{BootArgs, IpConfig};
        use std::net::Ipv4Addr;

        let dir = tempfile::tempdir().unwrap();
        scratch(dir.path(), false);
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
                    dir.path().join("work.ext4").display().to_string(),
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
