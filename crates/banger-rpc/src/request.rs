//! One variant per method. The method name is the wire name (`vm.create`).

use std::path::PathBuf;

use banger_model::ByteSize;
use banger_model::vm::VmmKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ErrorCode, RpcError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params")]
pub enum Request {
    #[serde(rename = "daemon.ping")]
    Ping,
    #[serde(rename = "daemon.status")]
    Status,
    #[serde(rename = "daemon.shutdown")]
    Shutdown,
    /// Sleeps, streaming a tick per interval: exercises events and cancellation.
    #[serde(rename = "daemon.sleep")]
    Sleep(SleepParams),

    #[serde(rename = "vm.list")]
    VmList,
    #[serde(rename = "vm.show")]
    VmShow(RefParams),
    #[serde(rename = "vm.create")]
    VmCreate(VmCreateParams),
    #[serde(rename = "vm.start")]
    VmStart(RefParams),
    #[serde(rename = "vm.stop")]
    VmStop(RefParams),
    #[serde(rename = "vm.restart")]
    VmRestart(RefParams),
    #[serde(rename = "vm.kill")]
    VmKill(RefParams),
    #[serde(rename = "vm.delete")]
    VmDelete(RefParams),
    #[serde(rename = "vm.set")]
    VmSet(VmSetParams),
    #[serde(rename = "vm.stats")]
    VmStats(RefParams),
    #[serde(rename = "vm.health")]
    VmHealth(RefParams),
    #[serde(rename = "vm.ports")]
    VmPorts(RefParams),
    #[serde(rename = "vm.ssh_info")]
    VmSshInfo(RefParams),
    /// Records what `vm workspace prepare` (run by the CLI over SSH, as the
    /// user) put in the guest, so that export knows its base.
    #[serde(rename = "vm.workspace.record")]
    WorkspaceRecord(WorkspaceRecordParams),

    #[serde(rename = "image.list")]
    ImageList,
    #[serde(rename = "image.show")]
    ImageShow(RefParams),
    #[serde(rename = "image.import")]
    ImageImport(ImageImportParams),
    #[serde(rename = "image.register")]
    ImageRegister(ImageRegisterParams),
    #[serde(rename = "image.pull")]
    ImagePull(ImagePullParams),
    #[serde(rename = "image.bootstrap")]
    ImageBootstrap(ImageBootstrapParams),
    #[serde(rename = "image.delete")]
    ImageDelete(RefParams),
    #[serde(rename = "image.promote")]
    ImagePromote(RefParams),

    #[serde(rename = "kernel.list")]
    KernelList,
    #[serde(rename = "kernel.show")]
    KernelShow(RefParams),
    #[serde(rename = "kernel.import")]
    KernelImport(KernelImportParams),
    #[serde(rename = "kernel.pull")]
    KernelPull(KernelPullParams),
    #[serde(rename = "kernel.bootstrap")]
    KernelBootstrap(KernelBootstrapParams),
    #[serde(rename = "kernel.rm")]
    KernelRm(RefParams),

    #[serde(rename = "doctor.run")]
    Doctor,
}

/// Every method name, for telling an unknown method from bad params.
pub const METHODS: &[&str] = &[
    "daemon.ping",
    "daemon.status",
    "daemon.shutdown",
    "daemon.sleep",
    "vm.list",
    "vm.show",
    "vm.create",
    "vm.start",
    "vm.stop",
    "vm.restart",
    "vm.kill",
    "vm.delete",
    "vm.set",
    "vm.stats",
    "vm.health",
    "vm.ports",
    "vm.ssh_info",
    "vm.workspace.record",
    "image.list",
    "image.show",
    "image.import",
    "image.register",
    "image.pull",
    "image.bootstrap",
    "image.delete",
    "image.promote",
    "kernel.list",
    "kernel.show",
    "kernel.import",
    "kernel.pull",
    "kernel.bootstrap",
    "kernel.rm",
    "doctor.run",
];

impl Request {
    /// Decodes a method and its params, telling an unknown method apart from
    /// params of the wrong shape.
    pub fn decode(method: &str, params: Value) -> Result<Self, RpcError> {
        if !METHODS.contains(&method) {
            return Err(RpcError::new(
                ErrorCode::UnknownMethod,
                format!("unknown method {method:?}"),
            ));
        }
        let mut object = serde_json::Map::new();
        object.insert("method".into(), Value::String(method.to_owned()));
        if !params.is_null() {
            object.insert("params".into(), params);
        }
        serde_json::from_value(Value::Object(object)).map_err(|err| {
            RpcError::new(
                ErrorCode::InvalidParams,
                format!("bad params for {method}: {err}"),
            )
        })
    }

    /// The wire name and params.
    pub fn encode(&self) -> (String, Value) {
        let mut value = serde_json::to_value(self).expect("requests always serialise");
        let object = value
            .as_object_mut()
            .expect("requests serialise to objects");
        let method = match object.remove("method") {
            Some(Value::String(method)) => method,
            _ => unreachable!("every request has a method"),
        };
        let params = object.remove("params").unwrap_or(Value::Null);
        (method, params)
    }

    pub fn method(&self) -> String {
        self.encode().0
    }
}

/// A VM, image or kernel reference: a name, a full id or a unique id prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefParams {
    pub reference: String,
}

impl RefParams {
    pub fn new(reference: impl Into<String>) -> Self {
        Self {
            reference: reference.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepParams {
    pub millis: u64,
    #[serde(default)]
    pub tick_millis: Option<u64>,
}

/// `vm.create`. Sizes are signed so that non-positive values typed by a user
/// reach the daemon's validation instead of failing to decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct VmCreateParams {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub vcpu: Option<i64>,
    #[serde(default)]
    pub memory_mib: Option<i64>,
    #[serde(default)]
    pub disk_size: Option<ByteSize>,
    #[serde(default)]
    pub nat: bool,
    #[serde(default)]
    pub vmm: Option<VmmKind>,
    /// Create even when the free space cannot hold the VM's disks.
    #[serde(default)]
    pub allow_overcommit: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct VmSetParams {
    pub reference: String,
    #[serde(default)]
    pub vcpu: Option<i64>,
    #[serde(default)]
    pub memory_mib: Option<i64>,
    #[serde(default)]
    pub disk_size: Option<ByteSize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceRecordParams {
    pub reference: String,
    pub workspace: banger_model::vm::WorkspaceInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageImportParams {
    pub path: PathBuf,
    pub name: String,
    #[serde(default)]
    pub kernel_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRegisterParams {
    pub name: String,
    pub rootfs: PathBuf,
    #[serde(default)]
    pub work_seed: Option<PathBuf>,
    #[serde(default)]
    pub kernel_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePullParams {
    pub reference: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub kernel_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageBootstrapParams {
    pub distro: String,
    #[serde(default)]
    pub name: Option<String>,
    /// The package set [default: developer].
    #[serde(default)]
    pub profile: Option<banger_model::image::ImageProfile>,
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub mirror: Option<String>,
    #[serde(default)]
    pub kernel_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelImportParams {
    pub dir: PathBuf,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelPullParams {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelBootstrapParams {
    pub distro: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Request> {
        let r = || RefParams::new("web");
        vec![
            Request::Ping,
            Request::Status,
            Request::Shutdown,
            Request::Sleep(SleepParams {
                millis: 5,
                tick_millis: None,
            }),
            Request::VmList,
            Request::VmShow(r()),
            Request::VmCreate(VmCreateParams::default()),
            Request::VmStart(r()),
            Request::VmStop(r()),
            Request::VmRestart(r()),
            Request::VmKill(r()),
            Request::VmDelete(r()),
            Request::VmSet(VmSetParams {
                reference: "web".into(),
                ..Default::default()
            }),
            Request::VmStats(r()),
            Request::VmHealth(r()),
            Request::VmPorts(r()),
            Request::VmSshInfo(r()),
            Request::WorkspaceRecord(WorkspaceRecordParams {
                reference: "web".into(),
                workspace: banger_model::vm::WorkspaceInfo {
                    host_path: "/src".into(),
                    guest_path: "/root/repo".into(),
                    base_commit: "abc".into(),
                    branch: None,
                    head_commit: None,
                },
            }),
            Request::ImageList,
            Request::ImageShow(r()),
            Request::ImageImport(ImageImportParams {
                path: "/x".into(),
                name: "img".into(),
                kernel_ref: None,
            }),
            Request::ImageRegister(ImageRegisterParams {
                name: "img".into(),
                rootfs: "/r".into(),
                work_seed: None,
                kernel_ref: None,
            }),
            Request::ImagePull(ImagePullParams {
                reference: "debian".into(),
                name: None,
                kernel_ref: None,
            }),
            Request::ImageBootstrap(ImageBootstrapParams {
                distro: "debian:bookworm".into(),
                name: None,
                profile: Some(banger_model::image::ImageProfile::Minimal),
                packages: vec![],
                mirror: None,
                kernel_ref: None,
            }),
            Request::ImageDelete(r()),
            Request::ImagePromote(r()),
            Request::KernelList,
            Request::KernelShow(r()),
            Request::KernelImport(KernelImportParams {
                dir: "/k".into(),
                name: "k".into(),
            }),
            Request::KernelPull(KernelPullParams { name: "k".into() }),
            Request::KernelBootstrap(KernelBootstrapParams {
                distro: "debian".into(),
                name: None,
            }),
            Request::KernelRm(r()),
            Request::Doctor,
        ]
    }

    #[test]
    fn every_method_round_trips_and_is_listed() {
        let samples = samples();
        assert_eq!(
            samples.len(),
            METHODS.len(),
            "a method is missing from samples or METHODS"
        );
        for request in samples {
            let (method, params) = request.encode();
            assert!(
                METHODS.contains(&method.as_str()),
                "{method} missing from METHODS"
            );
            assert_eq!(Request::decode(&method, params).unwrap(), request);
        }
    }

    #[test]
    fn unknown_method_and_bad_params_are_told_apart() {
        let err = Request::decode("vm.explode", Value::Null).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownMethod);
        let err = Request::decode("vm.show", serde_json::json!({"ref": 1})).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParams);
        let err = Request::decode("vm.show", Value::Null).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParams);
    }
}
