//! A bootable kernel out of a distribution's kernel and busybox packages:
//! `vmlinux` (the ELF from the package's `vmlinuz`) and `initrd.img` (busybox,
//! `/init`, and [`FIRECRACKER_MODULES`] with their dependencies).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::deb::{Deb, DebFileKind, ReadDebError};
use crate::decompress::Compression;
use crate::initrd::{self, BuildInitrdError, InitrdInput};
use crate::modules::{self, FIRECRACKER_MODULES, LoadPlan, MissingModule, ModuleIndex};
use crate::vmlinux::{self, ExtractVmlinuxError};

/// File names in a kernel directory (what `kernel import` reads too).
pub const VMLINUX: &str = "vmlinux";
pub const INITRD: &str = "initrd.img";
/// The kernel's modules as a read-only ext4 image (the contents of
/// `lib/modules/<release>/`), attached to every VM that boots the kernel.
pub const MODULES_IMAGE: &str = "modules.ext4";
/// The label of [`MODULES_IMAGE`]; the guest's first boot mounts a drive
/// with this label at `/lib/modules/$(uname -r)`.
pub const MODULES_LABEL: &str = "banger-modules";
/// Largest module accepted (a bound on decompression).
const MAX_MODULE: usize = 64 << 20;

/// What [`build`] wrote.
#[derive(Debug, Clone)]
pub struct KernelArtifacts {
    pub vmlinux: PathBuf,
    pub initrd: PathBuf,
    /// The kernel release (`6.1.0-50-cloud-amd64`).
    pub release: String,
    /// How the package's `vmlinuz` payload was compressed.
    pub compression: Option<Compression>,
    /// Modules in the initrd, in load order (paths under `lib/modules/<release>/`).
    pub modules: Vec<String>,
    /// Wanted modules that are built into this kernel.
    pub builtin: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildKernelError {
    #[error(transparent)]
    Deb(#[from] ReadDebError),
    #[error("{0} holds no boot/vmlinuz-* kernel")]
    NoKernel(PathBuf),
    #[error("{path} holds no modules for kernel {release}")]
    NoModules { path: PathBuf, release: String },
    #[error("{0} holds no busybox binary")]
    NoBusybox(PathBuf),
    #[error("extracting vmlinux from {path}")]
    Vmlinux {
        path: String,
        #[source]
        source: ExtractVmlinuxError,
    },
    #[error("reading module {path}")]
    Module {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Missing(#[from] MissingModule),
    #[error("building the initrd")]
    Initrd(#[from] BuildInitrdError),
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a package file sits relative to `lib/modules/<release>/`
/// (`lib/…` or, on merged-/usr releases, `usr/lib/…`).
fn module_relpath<'a>(path: &'a str, release: &str) -> Option<&'a str> {
    let rest = path.strip_prefix("usr/").unwrap_or(path);
    rest.strip_prefix("lib/modules/")?
        .strip_prefix(release)?
        .strip_prefix('/')
}

/// A module file's uncompressed contents and its path as `.ko`.
fn read_module(path: &str, reader: &mut dyn Read) -> Result<(String, Vec<u8>), BuildKernelError> {
    let module_err = |source: Box<dyn std::error::Error + Send + Sync>| BuildKernelError::Module {
        path: path.to_owned(),
        source,
    };
    let mut data = Vec::new();
    reader
        .take(MAX_MODULE as u64)
        .read_to_end(&mut data)
        .map_err(|err| module_err(err.into()))?;
    match Compression::from_extension(path).filter(|_| !path.ends_with(".ko")) {
        Some(compression) => {
            let data = compression
                .decompress(&data, MAX_MODULE)
                .map_err(|err| module_err(err.into()))?;
            let plain = path
                .rsplit_once('.')
                .map(|(stem, _)| stem.to_owned())
                .unwrap_or_else(|| path.to_owned());
            Ok((plain, data))
        }
        None => Ok((path.to_owned(), data)),
    }
}

/// Builds `vmlinux` and `initrd.img` in `out_dir` from a kernel package and
/// a package holding a static busybox.
pub fn build(
    kernel_deb: &Path,
    busybox_deb: &Path,
    out_dir: &Path,
) -> Result<KernelArtifacts, BuildKernelError> {
    let deb = Deb::open(kernel_deb)?;
    let (release, vmlinuz) = find_vmlinuz(&deb)?;
    let vmlinux = vmlinux::extract(&vmlinuz).map_err(|source| BuildKernelError::Vmlinux {
        path: format!("{}:boot/vmlinuz-{release}", kernel_deb.display()),
        source,
    })?;
    drop(vmlinuz);

    let index = index_modules(&deb, &release)?;
    if index.is_empty() {
        return Err(BuildKernelError::NoModules {
            path: kernel_deb.to_owned(),
            release,
        });
    }
    let plan = index.resolve(FIRECRACKER_MODULES)?;
    let modules = collect_modules(&deb, &release, &plan)?;
    let busybox = find_busybox(busybox_deb)?;
    let initrd = initrd::build(&InitrdInput {
        release: &release,
        busybox: &busybox,
        plan: &plan,
        modules: &modules,
    })?;

    let write = |name: &str, data: &[u8]| {
        let path = out_dir.join(name);
        fs_err::create_dir_all(out_dir)
            .and_then(|()| fs_err::write(&path, data))
            .map_err(|source| BuildKernelError::Write {
                path: path.clone(),
                source,
            })?;
        Ok::<_, BuildKernelError>(path)
    };
    let vmlinux_path = write(VMLINUX, &vmlinux.elf)?;
    let initrd_path = write(INITRD, &initrd)?;
    tracing::info!(
        %release,
        compression = ?vmlinux.compression,
        modules = plan.load_order.len(),
        initrd_bytes = initrd.len(),
        "kernel built"
    );
    Ok(KernelArtifacts {
        vmlinux: vmlinux_path,
        initrd: initrd_path,
        release,
        compression: vmlinux.compression,
        modules: plan.load_order,
        builtin: plan.builtin.into_iter().collect(),
    })
}

/// What [`extract_modules`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModulesTree {
    /// `out_dir/lib/modules/<release>`.
    pub dir: PathBuf,
    /// Module files (`.ko`, `.ko.xz`, …) in it.
    pub modules: usize,
    /// Everything else written (`modules.order`, `modules.builtin`, …).
    pub other_files: usize,
}

/// Writes every regular file of the kernel package under
/// `lib/modules/<release>/` to `out_dir/lib/modules/<release>/`, as the
/// package has it (compressed modules stay compressed); symlinks (`build`,
/// `source`) are left out. `depmod -b out_dir` then makes the indexes.
pub fn extract_modules(
    kernel_deb: &Path,
    release: &str,
    out_dir: &Path,
) -> Result<ModulesTree, BuildKernelError> {
    let deb = Deb::open(kernel_deb)?;
    let dir = out_dir.join("lib/modules").join(release);
    let mut tree = ModulesTree {
        dir: dir.clone(),
        modules: 0,
        other_files: 0,
    };
    let mut failure = None;
    deb.walk(|file| {
        if failure.is_some() || file.kind != DebFileKind::File {
            return Ok(());
        }
        let Some(relpath) = module_relpath(file.path, release) else {
            return Ok(());
        };
        let safe = Path::new(relpath)
            .components()
            .all(|part| matches!(part, std::path::Component::Normal(_)));
        if relpath.is_empty() || !safe {
            tracing::warn!(
                path = file.path,
                "module path outside the release directory skipped"
            );
            return Ok(());
        }
        let target = dir.join(relpath);
        let written = target
            .parent()
            .map_or(Ok(()), fs_err::create_dir_all)
            .and_then(|()| fs_err::File::create(&target))
            .and_then(|mut out| std::io::copy(&mut file.reader.take(MAX_MODULE as u64), &mut out));
        match written {
            Ok(_) => {
                if modules::name_from_path(relpath).is_some() {
                    tree.modules += 1;
                } else {
                    tree.other_files += 1;
                }
            }
            Err(source) => {
                failure = Some(BuildKernelError::Write {
                    path: target,
                    source,
                })
            }
        }
        Ok(())
    })?;
    if let Some(err) = failure {
        return Err(err);
    }
    if tree.modules == 0 {
        return Err(BuildKernelError::NoModules {
            path: kernel_deb.to_owned(),
            release: release.to_owned(),
        });
    }
    Ok(tree)
}

fn find_vmlinuz(deb: &Deb) -> Result<(String, Vec<u8>), BuildKernelError> {
    let found = deb.read_files(|path| {
        path.strip_prefix("boot/vmlinuz-")
            .is_some_and(|release| !release.is_empty() && !release.contains('/'))
    })?;
    let (path, data) = found
        .into_iter()
        .next()
        .ok_or_else(|| BuildKernelError::NoKernel(deb.path().to_owned()))?;
    let release = path
        .strip_prefix("boot/vmlinuz-")
        .expect("matched above")
        .to_owned();
    Ok((release, data))
}

fn index_modules(deb: &Deb, release: &str) -> Result<ModuleIndex, BuildKernelError> {
    let mut index = ModuleIndex::new();
    let mut failure = None;
    deb.walk(|file| {
        if failure.is_some() || file.kind != DebFileKind::File {
            return Ok(());
        }
        let Some(relpath) = module_relpath(file.path, release) else {
            return Ok(());
        };
        if relpath == "modules.builtin" {
            let mut text = String::new();
            file.reader.read_to_string(&mut text)?;
            index.add_builtin_list(&text);
        } else if modules::name_from_path(relpath).is_some() {
            match read_module(relpath, file.reader) {
                Ok((plain, data)) => match modules::modinfo(&data) {
                    Ok(info) => index.add(&plain, info),
                    Err(err) => {
                        tracing::warn!(module = relpath, error = %err, "unreadable module skipped");
                    }
                },
                Err(err) => failure = Some(err),
            }
        }
        Ok(())
    })?;
    match failure {
        Some(err) => Err(err),
        None => Ok(index),
    }
}

fn collect_modules(
    deb: &Deb,
    release: &str,
    plan: &LoadPlan,
) -> Result<BTreeMap<String, Vec<u8>>, BuildKernelError> {
    let mut modules = BTreeMap::new();
    let mut failure = None;
    deb.walk(|file| {
        if failure.is_some() || file.kind != DebFileKind::File {
            return Ok(());
        }
        let Some(relpath) = module_relpath(file.path, release) else {
            return Ok(());
        };
        let plain = match Compression::from_extension(relpath) {
            Some(_) if !relpath.ends_with(".ko") => {
                relpath.rsplit_once('.').map_or(relpath, |(stem, _)| stem)
            }
            _ => relpath,
        };
        if plan.load_order.iter().any(|wanted| wanted == plain) {
            match read_module(relpath, file.reader) {
                Ok((plain, data)) => {
                    modules.insert(plain, data);
                }
                Err(err) => failure = Some(err),
            }
        }
        Ok(())
    })?;
    match failure {
        Some(err) => Err(err),
        None => Ok(modules),
    }
}

fn find_busybox(busybox_deb: &Path) -> Result<Vec<u8>, BuildKernelError> {
    let deb = Deb::open(busybox_deb)?;
    let found = deb.read_files(|path| path == "bin/busybox" || path == "usr/bin/busybox")?;
    found
        .into_iter()
        .map(|(_, data)| data)
        .find(|data| data.starts_with(b"\x7fELF"))
        .ok_or_else(|| BuildKernelError::NoBusybox(busybox_deb.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::{Archive, Node};
    use crate::deb::tests::build_deb;
    use crate::decompress::tests::compress;
    use crate::vmlinux::tests::{tiny_bzimage, tiny_elf};

    /// A relocatable ELF with a `.modinfo` section, like a `.ko`.
    fn fake_ko(modinfo: &str) -> Vec<u8> {
        use object::write::Object;
        let mut object = Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::X86_64,
            object::Endianness::Little,
        );
        let section = object.add_section(
            Vec::new(),
            b".modinfo".to_vec(),
            object::SectionKind::ReadOnlyString,
        );
        object.append_section_data(section, modinfo.as_bytes(), 1);
        object.write().unwrap()
    }

    #[test]
    fn builds_vmlinux_and_initrd_from_packages() {
        let dir = tempfile::tempdir().unwrap();
        let release = "6.1.0-50-cloud-amd64";
        let elf = tiny_elf(62);
        let mut payload = compress(Compression::Zstd, &elf);
        payload.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        let vmlinuz = tiny_bzimage(&payload);
        let m = |name: &str| format!("lib/modules/{release}/kernel/{name}");
        let ko = |deps: &str| fake_ko(&format!("license=GPL\0depends={deps}\0"));
        let virtio = ko("");
        let ring = ko("");
        let mmio = ko("virtio,virtio_ring");
        let blk = ko("virtio,virtio_ring");
        let net = ko("virtio,virtio_ring");
        let vsock = ko("");
        let common = ko("vsock,virtio,virtio_ring");
        let transport = ko("vmw_vsock_virtio_transport_common,virtio,vsock");
        let unrelated = ko("");
        // One module xz-compressed, as merged-/usr releases ship them.
        let transport_xz = compress(Compression::Xz, &transport);
        let files: Vec<(String, Vec<u8>)> = vec![
            (format!("boot/vmlinuz-{release}"), vmlinuz),
            (m("virtio.ko"), virtio.clone()),
            (m("virtio_ring.ko"), ring),
            (m("virtio_mmio.ko"), mmio),
            (m("virtio_blk.ko"), blk),
            (m("virtio_net.ko"), net),
            (m("vsock.ko"), vsock),
            (m("vmw_vsock_virtio_transport_common.ko"), common),
            (m("vmw_vsock_virtio_transport.ko.xz"), transport_xz),
            (m("sound.ko"), unrelated),
            (
                format!("lib/modules/{release}/modules.builtin"),
                b"kernel/fs/ext4/ext4.ko\n".to_vec(),
            ),
        ];
        let borrowed: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(path, data)| (path.as_str(), data.as_slice()))
            .collect();
        let kernel_deb = dir.path().join("kernel.deb");
        std::fs::write(&kernel_deb, build_deb(&borrowed, &[])).unwrap();
        let busybox_deb = dir.path().join("busybox.deb");
        std::fs::write(
            &busybox_deb,
            build_deb(&[("bin/busybox", b"\x7fELF bb")], &[]),
        )
        .unwrap();

        let out = dir.path().join("out");
        let built = build(&kernel_deb, &busybox_deb, &out).unwrap();
        assert_eq!(built.release, release);
        assert_eq!(built.compression, Some(Compression::Zstd));
        assert_eq!(std::fs::read(&built.vmlinux).unwrap(), elf);
        assert_eq!(built.builtin, ["ext4"]);
        assert_eq!(built.modules.len(), 8);
        assert!(
            built
                .modules
                .contains(&"kernel/vmw_vsock_virtio_transport.ko".to_owned())
        );
        assert!(!built.modules.iter().any(|path| path.contains("sound")));

        let gz = std::fs::read(&built.initrd).unwrap();
        let cpio = Compression::Gzip.decompress(&gz, 1 << 24).unwrap();
        let archive = Archive::parse(&cpio).unwrap();
        let entries = archive.entries();
        assert_eq!(
            entries[&format!("lib/modules/{release}/kernel/virtio.ko")].node,
            Node::File(virtio)
        );
        assert_eq!(
            entries[&format!("lib/modules/{release}/kernel/vmw_vsock_virtio_transport.ko")].node,
            Node::File(transport)
        );
        assert_eq!(
            entries["bin/busybox"].node,
            Node::File(b"\x7fELF bb".to_vec())
        );
    }

    #[test]
    fn extracts_every_module_and_index_input_of_the_release() {
        let dir = tempfile::tempdir().unwrap();
        let release = "6.12.0-1-cloud-amd64";
        let m = |name: &str| format!("usr/lib/modules/{release}/{name}");
        let overlay = fake_ko("license=GPL\0depends=\0");
        let xz = compress(Compression::Xz, &fake_ko("license=GPL\0"));
        let files: Vec<(String, Vec<u8>)> = vec![
            (m("kernel/fs/overlayfs/overlay.ko"), overlay.clone()),
            (m("kernel/net/bridge/br_netfilter.ko.xz"), xz.clone()),
            (
                m("modules.order"),
                b"kernel/fs/overlayfs/overlay.ko\n".to_vec(),
            ),
            (m("modules.builtin"), b"kernel/fs/ext4/ext4.ko\n".to_vec()),
            ("lib/modules/6.1.0-other/kernel/x.ko".into(), fake_ko("")),
            ("usr/share/doc/linux/changelog".into(), b"x".to_vec()),
        ];
        let borrowed: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(path, data)| (path.as_str(), data.as_slice()))
            .collect();
        let deb = dir.path().join("kernel.deb");
        std::fs::write(&deb, build_deb(&borrowed, &[])).unwrap();
        let out = dir.path().join("tree");
        let tree = extract_modules(&deb, release, &out).unwrap();
        assert_eq!(tree.dir, out.join("lib/modules").join(release));
        assert_eq!((tree.modules, tree.other_files), (2, 2));
        assert_eq!(
            std::fs::read(tree.dir.join("kernel/fs/overlayfs/overlay.ko")).unwrap(),
            overlay
        );
        // Compressed modules stay as the package has them (kmod reads them).
        assert_eq!(
            std::fs::read(tree.dir.join("kernel/net/bridge/br_netfilter.ko.xz")).unwrap(),
            xz
        );
        assert!(!out.join("lib/modules/6.1.0-other").exists());
        assert!(matches!(
            extract_modules(&deb, "5.0.0-none", &dir.path().join("none")),
            Err(BuildKernelError::NoModules { .. })
        ));
    }

    #[test]
    fn a_package_without_a_kernel_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("x.deb");
        std::fs::write(&deb, build_deb(&[("usr/share/doc/x", b"")], &[])).unwrap();
        assert!(matches!(
            build(&deb, &deb, dir.path()),
            Err(BuildKernelError::NoKernel(_))
        ));
    }
}
