//! Kernel modules: what a `.ko` needs (its `.modinfo` section's `depends=`
//! and `softdep=`), and the load order for a set of wanted modules.
//!
//! A distribution's kernel package ships no `modules.dep` (the package's
//! postinst runs `depmod` on the installed system), so the order is worked out
//! here from each module's own metadata, the way `depmod` records it.
//! Modules listed in `modules.builtin` are part of the kernel and are never
//! loaded.

use std::collections::{BTreeMap, BTreeSet, HashSet};

/// The drivers a Firecracker guest needs before its root filesystem can be
/// mounted and the host can reach it: the virtio-mmio transport (described
/// by ACPI since Firecracker 1.8), block and network devices, vsock, ext4.
pub const FIRECRACKER_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "vsock",
    "vmw_vsock_virtio_transport",
    "ext4",
];

/// `virtio-blk` and `virtio_blk` are the same module.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// A module's name from its file name (`kernel/fs/ext4/ext4.ko.xz` → `ext4`).
pub fn name_from_path(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file.split(".ko").next()?;
    (file.contains(".ko") && !stem.is_empty()).then(|| canonical(stem))
}

/// What a module's `.modinfo` says about loading it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    pub name: Option<String>,
    /// Modules that must be loaded first.
    pub depends: Vec<String>,
    /// Soft dependencies loaded before it, when available.
    pub pre: Vec<String>,
    /// Soft dependencies loaded after it, when available.
    pub post: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModInfoError {
    #[error("not an ELF kernel module")]
    Elf(#[source] object::read::Error),
    #[error("the module has no .modinfo section")]
    NoModinfo,
}

/// Reads the `.modinfo` section of an (uncompressed) `.ko`.
pub fn modinfo(ko: &[u8]) -> Result<ModInfo, ModInfoError> {
    use object::{Object, ObjectSection};
    let file =
        object::read::elf::ElfFile64::<object::Endianness>::parse(ko).map_err(ModInfoError::Elf)?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or(ModInfoError::NoModinfo)?;
    let data = section.data().map_err(ModInfoError::Elf)?;
    Ok(parse_modinfo(data))
}

/// Parses `key=value\0key=value\0…`.
pub fn parse_modinfo(data: &[u8]) -> ModInfo {
    let mut info = ModInfo::default();
    for field in data.split(|b| *b == 0) {
        let Ok(field) = std::str::from_utf8(field) else {
            continue;
        };
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        match key {
            "name" => info.name = Some(canonical(value)),
            "depends" => info.depends.extend(
                value
                    .split(',')
                    .filter(|dep| !dep.is_empty())
                    .map(canonical),
            ),
            "softdep" => {
                // "pre: a b post: c"
                let mut target: Option<&mut Vec<String>> = None;
                for word in value.split_whitespace() {
                    match word {
                        "pre:" => target = Some(&mut info.pre),
                        "post:" => target = Some(&mut info.post),
                        module => {
                            if let Some(list) = target.as_deref_mut() {
                                list.push(canonical(module));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    info
}

/// The modules of one kernel release.
#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    /// name → (path under `lib/modules/<release>/`, its info).
    modules: BTreeMap<String, (String, ModInfo)>,
    builtin: HashSet<String>,
}

/// The result of resolving a set of wanted modules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadPlan {
    /// Paths under `lib/modules/<release>/`, dependencies first.
    pub load_order: Vec<String>,
    /// Wanted (or needed) modules that are built into the kernel.
    pub builtin: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel module {module} (needed by {needed_by}) is neither built in nor shipped")]
pub struct MissingModule {
    pub module: String,
    pub needed_by: String,
}

impl ModuleIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a module found at `path` (relative to `lib/modules/<release>/`).
    pub fn add(&mut self, path: &str, info: ModInfo) {
        let Some(name) = info.name.clone().or_else(|| name_from_path(path)) else {
            return;
        };
        self.modules.insert(name, (path.to_owned(), info));
    }

    /// Reads `modules.builtin` (one `kernel/…/name.ko` path per line).
    pub fn add_builtin_list(&mut self, text: &str) {
        self.builtin
            .extend(text.lines().filter_map(|line| name_from_path(line.trim())));
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&canonical(name))
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// The load order for `wanted`: hard dependencies are required, soft
    /// ones are taken when the kernel ships them.
    pub fn resolve(&self, wanted: &[&str]) -> Result<LoadPlan, MissingModule> {
        let mut plan = LoadPlan::default();
        let mut done = HashSet::new();
        for name in wanted {
            self.visit(&canonical(name), "the initrd", true, &mut done, &mut plan)?;
        }
        Ok(plan)
    }

    fn visit(
        &self,
        name: &str,
        needed_by: &str,
        required: bool,
        done: &mut HashSet<String>,
        plan: &mut LoadPlan,
    ) -> Result<(), MissingModule> {
        if self.builtin.contains(name) {
            plan.builtin.insert(name.to_owned());
            return Ok(());
        }
        if !done.insert(name.to_owned()) {
            return Ok(());
        }
        let Some((path, info)) = self.modules.get(name) else {
            return if required {
                Err(MissingModule {
                    module: name.to_owned(),
                    needed_by: needed_by.to_owned(),
                })
            } else {
                Ok(())
            };
        };
        for soft in &info.pre {
            self.visit(soft, name, false, done, plan)?;
        }
        for dep in &info.depends {
            self.visit(dep, name, true, done, plan)?;
        }
        plan.load_order.push(path.clone());
        for soft in &info.post {
            self.visit(soft, name, false, done, plan)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(depends: &[&str], softdep: &str) -> ModInfo {
        let text = format!(
            "license=GPL\0depends={}\0softdep={softdep}\0",
            depends.join(",")
        );
        parse_modinfo(text.as_bytes())
    }

    #[test]
    fn parses_fields() {
        let parsed = parse_modinfo(
            b"name=virtio_blk\0depends=virtio,virtio-ring\0softdep=pre: crc32c post: x\0intree=Y\0",
        );
        assert_eq!(parsed.name.as_deref(), Some("virtio_blk"));
        assert_eq!(parsed.depends, ["virtio", "virtio_ring"]);
        assert_eq!(parsed.pre, ["crc32c"]);
        assert_eq!(parsed.post, ["x"]);
        assert_eq!(parse_modinfo(b"depends=\0").depends, Vec::<String>::new());
    }

    #[test]
    fn orders_dependencies_first_and_skips_builtins() {
        let mut index = ModuleIndex::new();
        index.add("kernel/drivers/virtio/virtio.ko", info(&[], ""));
        index.add("kernel/drivers/virtio/virtio_ring.ko", info(&[], ""));
        index.add(
            "kernel/drivers/virtio/virtio_mmio.ko",
            info(&["virtio", "virtio_ring"], ""),
        );
        index.add(
            "kernel/drivers/block/virtio_blk.ko",
            info(&["virtio", "virtio_ring"], "pre: crc32c_generic"),
        );
        index.add("kernel/net/vmw_vsock/vsock.ko", info(&[], ""));
        index.add(
            "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
            info(&["vsock", "virtio", "virtio_ring"], ""),
        );
        index.add(
            "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko",
            info(
                &["vmw_vsock_virtio_transport_common", "virtio", "vsock"],
                "",
            ),
        );
        index.add("kernel/drivers/net/failover.ko", info(&[], ""));
        index.add(
            "kernel/drivers/net/net_failover.ko",
            info(&["failover"], ""),
        );
        index.add(
            "kernel/drivers/net/virtio_net.ko",
            info(&["net_failover", "virtio", "virtio_ring"], ""),
        );
        index.add_builtin_list("kernel/fs/ext4/ext4.ko\nkernel/fs/jbd2/jbd2.ko\n");
        let plan = index.resolve(FIRECRACKER_MODULES).unwrap();
        let names: Vec<String> = plan
            .load_order
            .iter()
            .map(|path| name_from_path(path).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "virtio",
                "virtio_ring",
                "virtio_mmio",
                "virtio_blk",
                "failover",
                "net_failover",
                "virtio_net",
                "vsock",
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport"
            ]
        );
        assert!(plan.builtin.contains("ext4"));
    }

    #[test]
    fn a_missing_hard_dependency_is_an_error() {
        let mut index = ModuleIndex::new();
        index.add("kernel/a.ko", info(&["b"], ""));
        let err = index.resolve(&["a"]).unwrap_err();
        assert_eq!(err.module, "b");
        assert_eq!(err.needed_by, "a");
        assert!(index.resolve(&["nope"]).is_err());
    }

    #[test]
    fn names_from_paths() {
        assert_eq!(
            name_from_path("kernel/fs/ext4/ext4.ko.xz").as_deref(),
            Some("ext4")
        );
        assert_eq!(
            name_from_path("kernel/drivers/block/virtio-blk.ko").as_deref(),
            Some("virtio_blk")
        );
        assert_eq!(name_from_path("modules.order"), None);
    }
}
