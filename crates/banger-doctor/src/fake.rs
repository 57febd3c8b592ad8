//! [`FakeHost`]: a host whose every answer is a public field. The default
//! is a healthy x86_64 machine with KVM, Firecracker v1.16, every tool, root
//! and plenty of space; tests change the fields they care about.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::checks::TOOLS;
use crate::host::{DeviceProbe, ForeignFiles, Host, KvmProbe, Privileges, Space};

#[derive(Debug, Clone)]
pub struct FakeHost {
    pub arch: String,
    pub kvm: KvmProbe,
    /// Devices by path; absent paths are [`DeviceProbe::Missing`].
    pub devices: BTreeMap<PathBuf, DeviceProbe>,
    /// Programs found on `PATH`, by name.
    pub programs: BTreeMap<String, PathBuf>,
    /// Executable files (programs are executable too).
    pub executables: BTreeSet<PathBuf>,
    /// `--version` answers by program path; absent paths fail to run.
    pub versions: BTreeMap<PathBuf, Result<String, String>>,
    pub privileges: Privileges,
    pub space: Result<Space, String>,
    /// Resolver answers by name; absent names are NXDOMAIN.
    pub names: BTreeMap<String, Result<Vec<IpAddr>, String>>,
    pub files: BTreeSet<PathBuf>,
    /// What the ownership walk finds.
    pub foreign: ForeignFiles,
}

impl Default for FakeHost {
    fn default() -> Self {
        let mut programs = BTreeMap::new();
        for (tool, _) in TOOLS {
            programs.insert((*tool).to_owned(), PathBuf::from("/usr/bin").join(tool));
        }
        let firecracker = PathBuf::from("/usr/local/bin/firecracker");
        programs.insert("firecracker".into(), firecracker.clone());
        for program in ["qemu-system-x86_64", "vhost-device-vsock"] {
            programs.insert(program.into(), PathBuf::from("/usr/bin").join(program));
        }
        let mut versions = BTreeMap::new();
        versions.insert(firecracker, Ok("Firecracker v1.16.0".to_owned()));
        let mut devices = BTreeMap::new();
        devices.insert(PathBuf::from("/dev/vhost-vsock"), DeviceProbe::Usable);
        devices.insert(PathBuf::from("/dev/net/tun"), DeviceProbe::Usable);
        Self {
            arch: "x86_64".into(),
            kvm: KvmProbe::Usable { api_version: 12 },
            devices,
            programs,
            executables: BTreeSet::new(),
            versions,
            privileges: Privileges { euid: 0 },
            space: Ok(Space {
                available: 100 << 30,
                total: 200 << 30,
            }),
            names: BTreeMap::new(),
            files: BTreeSet::new(),
            foreign: ForeignFiles::default(),
        }
    }
}

impl FakeHost {
    /// A host where `program` is not installed.
    pub fn without_program(mut self, program: &str) -> Self {
        self.programs.remove(program);
        self
    }
}

impl Host for FakeHost {
    fn arch(&self) -> String {
        self.arch.clone()
    }

    fn kvm(&self) -> KvmProbe {
        self.kvm.clone()
    }

    fn device(&self, path: &Path) -> DeviceProbe {
        self.devices
            .get(path)
            .cloned()
            .unwrap_or(DeviceProbe::Missing)
    }

    fn find_program(&self, name: &str) -> Option<PathBuf> {
        self.programs.get(name).cloned()
    }

    fn is_executable(&self, path: &Path) -> bool {
        self.executables.contains(path) || self.programs.values().any(|program| program == path)
    }

    fn program_version(&self, program: &Path) -> Result<String, String> {
        self.versions
            .get(program)
            .cloned()
            .unwrap_or_else(|| Err(format!("cannot run {}", program.display())))
    }

    fn privileges(&self) -> Privileges {
        self.privileges
    }

    fn free_space(&self, _dir: &Path) -> Result<Space, String> {
        self.space.clone()
    }

    fn resolve(&self, name: &str, _timeout: Duration) -> Result<Vec<IpAddr>, String> {
        self.names
            .get(name)
            .cloned()
            .unwrap_or_else(|| Err("Name or service not known".to_owned()))
    }

    fn file_exists(&self, path: &Path) -> bool {
        self.files.contains(path)
    }

    fn foreign_owned(&self, _dirs: &[PathBuf], _uid: u32) -> ForeignFiles {
        self.foreign.clone()
    }
}
