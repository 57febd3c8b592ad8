//! The methods of the protocol. Each is a type (`method::VmCreate`) that
//! names its wire name, its params and its result ([`Method`]), so the
//! client's call and the daemon's dispatch are paired by the compiler; the
//! [`Request`] enum (one variant per method, holding its params) and the
//! name table are generated from the same list.

use std::path::PathBuf;

use banger_model::ByteSize;
use banger_model::image::Image;
use banger_model::kernel::Kernel;
use banger_model::publish::PortForward;
use banger_model::vm::{Vm, VmmKind};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
#[doc(hidden)]
pub use serde_json::Value;

use crate::error::{ErrorCode, RpcError};
use crate::response::*;

/// A method: its wire name and the types of its params and its result.
pub trait Method {
    const NAME: &'static str;
    type Params: Serialize + DeserializeOwned;
    type Result: Serialize + DeserializeOwned;
}

/// Params of a method that takes none (sent as no params at all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// Declares a protocol from one list of methods: a `method` module with one
/// [`Method`] type per method (wire name, params, result), and a request
/// enum with `decode`, `method`, `params` and `NAMES`. banger's daemon
/// protocol ([`Request`]) and banger-helper's are both declared with it.
///
/// ```
/// use banger_rpc::NoParams;
///
/// banger_rpc::protocol! {
///     enum Request, unknown = "unknown method";
///     Ping = "demo.ping", NoParams => NoParams;
/// }
///
/// fn main() {
///     let request = Request::decode("demo.ping", banger_rpc::request::Value::Null).unwrap();
///     assert_eq!(request.method(), "demo.ping");
///     assert_eq!(Request::NAMES, &["demo.ping"]);
///     assert!(Request::decode("demo.fly", banger_rpc::request::Value::Null).is_err());
/// }
/// ```
#[macro_export]
macro_rules! protocol {
    (
        enum $request:ident, unknown = $unknown:literal;
        $( $(#[$meta:meta])* $variant:ident = $name:literal, $params:ty => $result:ty; )*
    ) => {
        /// One type per method, for the client's `call` and the dispatch.
        pub mod method {
            use super::*;
            $(
                $(#[$meta])*
                #[derive(Debug, Clone, Copy)]
                pub struct $variant;

                impl $crate::Method for $variant {
                    const NAME: &'static str = $name;
                    type Params = $params;
                    type Result = $result;
                }
            )*
        }

        /// A decoded request: the method and its params.
        #[derive(Debug, Clone, PartialEq)]
        pub enum $request {
            $( $(#[$meta])* $variant($params), )*
        }

        impl $request {
            /// Decodes a method and its params, telling an unknown method
            /// apart from params of the wrong shape.
            pub fn decode(
                method: &str,
                params: $crate::request::Value,
            ) -> Result<Self, $crate::RpcError> {
                match method {
                    $( $name => $crate::request::decode_params::<$params>(method, params)
                        .map(Self::$variant), )*
                    _ => Err($crate::RpcError::new(
                        $crate::ErrorCode::UnknownMethod,
                        format!(concat!($unknown, " {:?}"), method),
                    )),
                }
            }

            /// The wire name.
            pub fn method(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $name, )*
                }
            }

            /// The params as they travel.
            pub fn params(&self) -> $crate::request::Value {
                match self {
                    $( Self::$variant(params) => $crate::request::encode_params(params), )*
                }
            }

            /// Every wire name.
            pub const NAMES: &'static [&'static str] = &[$($name),*];
        }
    };
}

#[doc(hidden)]
pub fn decode_params<P: DeserializeOwned>(method: &str, params: Value) -> Result<P, RpcError> {
    // No params and `{}` are the same for methods that take none.
    let params = if params.is_null() {
        Value::Object(serde_json::Map::new())
    } else {
        params
    };
    serde_json::from_value(params).map_err(|err| {
        RpcError::new(
            ErrorCode::InvalidParams,
            format!("bad params for {method}: {err}"),
        )
    })
}

/// Params in the form they travel: `None` for a method that takes none.
pub fn encode_params<P: Serialize>(params: &P) -> Value {
    match serde_json::to_value(params).expect("params always serialise") {
        Value::Object(map) if map.is_empty() => Value::Null,
        value => value,
    }
}

protocol! {
    enum Request, unknown = "unknown method";
    Ping = "daemon.ping", NoParams => PingResult;
    Status = "daemon.status", NoParams => StatusResult;
    Shutdown = "daemon.shutdown", NoParams => Empty;
    /// Sleeps, streaming a tick per interval: exercises events and cancellation.
    Sleep = "daemon.sleep", SleepParams => SleepResult;

    VmList = "vm.list", NoParams => VmListResult;
    VmShow = "vm.show", RefParams => VmDetails;
    VmCreate = "vm.create", VmCreateParams => Vm;
    VmStart = "vm.start", RefParams => Vm;
    VmStop = "vm.stop", RefParams => Vm;
    VmRestart = "vm.restart", RefParams => Vm;
    VmKill = "vm.kill", RefParams => Vm;
    VmDelete = "vm.delete", RefParams => Vm;
    VmSet = "vm.set", VmSetParams => Vm;
    VmStats = "vm.stats", RefParams => crate::response::VmStats;
    VmHealth = "vm.health", RefParams => crate::response::VmHealth;
    VmPorts = "vm.ports", RefParams => PortsResult;
    VmSshInfo = "vm.ssh_info", RefParams => SshInfo;
    VmPortForward = "vm.port_forward", PortForwardParams => Vm;
    /// Records what `vm workspace prepare` (run by the CLI over SSH, as the
    /// user) put in the guest, so that export knows its base.
    WorkspaceRecord = "vm.workspace.record", WorkspaceRecordParams => Vm;

    ImageList = "image.list", NoParams => ImageListResult;
    ImageShow = "image.show", RefParams => Image;
    ImageImport = "image.import", ImageImportParams => Image;
    ImageRegister = "image.register", ImageRegisterParams => Image;
    ImagePull = "image.pull", ImagePullParams => ImagePullResult;
    ImageBootstrap = "image.bootstrap", ImageBootstrapParams => Image;
    ImageDelete = "image.delete", RefParams => Empty;
    ImagePromote = "image.promote", RefParams => Image;

    KernelList = "kernel.list", NoParams => KernelListResult;
    KernelShow = "kernel.show", RefParams => Kernel;
    KernelImport = "kernel.import", KernelImportParams => Kernel;
    KernelPull = "kernel.pull", KernelPullParams => Kernel;
    KernelBootstrap = "kernel.bootstrap", KernelBootstrapParams => Kernel;
    KernelRm = "kernel.rm", RefParams => Empty;

    Doctor = "doctor.run", NoParams => DoctorResult;
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

/// `vm.create`: what the user typed, `None` where they typed nothing (the
/// daemon resolves the rest, see [`crate::Event::Spec`]). Sizes are signed
/// so that non-positive values typed by a user reach the daemon's
/// validation instead of failing to decode.
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
    /// `--nat`/`--no-nat`; `None` leaves it to `[network] nat`.
    #[serde(default)]
    pub nat: Option<bool>,
    #[serde(default)]
    pub vmm: Option<VmmKind>,
    /// Create even when the free space cannot hold the VM's disks.
    #[serde(default)]
    pub allow_overcommit: bool,
    /// Host ports to forward into the guest while it runs.
    #[serde(default)]
    pub ports: Vec<PortForward>,
    /// A directory laid out by the client (the workspace, written before
    /// boot): its entries join the image's `/root` on the new work disk.
    /// It must be the caller's own, is consumed (the daemon adds the seed's
    /// files to it) and can be removed once the create answers.
    #[serde(default)]
    pub work_content: Option<PathBuf>,
    /// A file listing host files the work disk takes straight from the
    /// host beside `work_content` (`banger_model::host_files`); the
    /// caller's own, read once the create starts.
    #[serde(default)]
    pub work_host_files: Option<PathBuf>,
}

/// `vm.port_forward`: publish or unpublish host ports of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PortForwardParams {
    pub reference: String,
    #[serde(default)]
    pub add: Vec<PortForward>,
    #[serde(default)]
    pub remove: Vec<PortForward>,
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
            Request::Ping(NoParams {}),
            Request::Status(NoParams {}),
            Request::Shutdown(NoParams {}),
            Request::Sleep(SleepParams {
                millis: 5,
                tick_millis: None,
            }),
            Request::VmList(NoParams {}),
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
            Request::VmPortForward(PortForwardParams {
                reference: "web".into(),
                add: vec!["8080:80".parse().unwrap()],
                remove: vec![],
            }),
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
            Request::ImageList(NoParams {}),
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
            Request::KernelList(NoParams {}),
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
            Request::Doctor(NoParams {}),
        ]
    }

    #[test]
    fn every_method_round_trips() {
        let samples = samples();
        assert_eq!(
            samples.len(),
            Request::NAMES.len(),
            "a method is missing from samples"
        );
        for request in samples {
            let method = request.method();
            assert_eq!(Request::decode(method, request.params()).unwrap(), request);
        }
        // Methods without params send none.
        assert_eq!(Request::Ping(NoParams {}).params(), Value::Null);
        assert_eq!(
            Request::decode("daemon.ping", serde_json::json!({})).unwrap(),
            Request::Ping(NoParams {})
        );
    }

    #[test]
    fn each_method_type_names_its_wire_method() {
        assert_eq!(<method::VmCreate as Method>::NAME, "vm.create");
        assert_eq!(<method::Doctor as Method>::NAME, "doctor.run");
        let names: std::collections::HashSet<_> = Request::NAMES.iter().collect();
        assert_eq!(
            names.len(),
            Request::NAMES.len(),
            "a wire name is used twice"
        );
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
