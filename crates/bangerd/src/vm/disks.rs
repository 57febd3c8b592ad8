//! A VM's disks: the copy-on-write root over the image's rootfs, the work
//! disk cloned from the image's seed, and the per-VM files written into them
//! before boot (without mounting, through debugfs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_disk::edits::Meta;
use banger_disk::{
    DiskOps, Ext4Edits, MakeWorkDiskError, RootOverlay, RootRequest, WorkDiskRequest,
};
use banger_model::ByteSize;
use banger_model::image::Image;
use banger_model::vm::{StorageStrategy, Vm};
use banger_rpc::Event;

use crate::daemon::Daemon;
use crate::errors::{Cause, Doing, ServiceError, blocking};
use crate::server::EventSink;
use crate::ssh::SshKey;
use crate::undo::{Class, Undo};
use crate::vm::Failure;
use crate::vm::boot::Prepared;

/// A dm-snapshot VM's hard link to the image rootfs its snapshot sits on,
/// in its own directory: the snapshot stays valid when the image is
/// replaced by a newer pull (the link keeps the old file).
pub fn dm_base(vm: &Vm) -> PathBuf {
    vm.dir.join("base.ext4")
}

/// Makes [`dm_base`] for a dm-snapshot VM that has none yet (VMs made
/// before the link existed), pointing at `rootfs`; other VMs need nothing.
pub fn keep_dm_base(vm: &Vm, rootfs: &Path) -> std::io::Result<()> {
    if vm.storage != StorageStrategy::DmSnapshot {
        return Ok(());
    }
    let base = dm_base(vm);
    if base.exists() {
        return Ok(());
    }
    fs_err::hard_link(rootfs, base)
}

/// The VM's root overlay as it exists on disk (rebuilt from the VM, never
/// stored: file strategies are a path, dm is named after the VM id and sits
/// on [`dm_base`], or on the image's rootfs for VMs older than that link).
pub fn overlay_for(vm: &Vm, image: &Image) -> RootOverlay {
    let paths = vm.paths();
    match vm.storage {
        StorageStrategy::DmSnapshot => RootOverlay::DmSnapshot {
            name: banger_disk::dm::root_dm_name(&vm.id)
                .expect("VM ids are hex, which always makes a valid dm name"),
            base: Some(dm_base(vm))
                .filter(|base| base.exists())
                .unwrap_or_else(|| image.rootfs_path.clone()),
            cow: banger_disk::overlay::cow_path(&paths.dir),
            loops: None,
        },
        strategy => RootOverlay::File {
            strategy,
            path: paths.root_disk(),
        },
    }
}

/// Creates the VM's directory (before disks and VMM, which both use it).
pub fn create_dir(vm: &Vm, undo: &mut Undo) -> Result<(), ServiceError> {
    let dir = vm.dir.clone();
    fs_err::create_dir_all(&dir).doing("creating the VM directory")?;
    undo.push("remove the VM directory", Class::Data, async move {
        Ok(remove_dir(&dir)?)
    });
    Ok(())
}

/// What a new work disk starts with beside the image's `/root` (`vm run
/// PATH`): the client's directory, and files taken from the host.
#[derive(Debug, Clone)]
pub struct WorkContent {
    pub dir: PathBuf,
    pub host_files: Option<banger_model::host_files::HostFiles>,
}

/// A new VM's disks: the root overlay and the work disk, then the per-VM
/// files written into both (concurrently).
pub async fn prepare_new(
    daemon: &Daemon,
    vm: &Vm,
    image: &Image,
    work_content: Option<&WorkContent>,
    key: &SshKey,
    events: &EventSink,
) -> Prepared {
    let mut undo = Undo::default();
    let result = async {
        let root = create_root(daemon, vm, image, &mut undo).await?;
        let host_key = host_key(daemon, vm, &mut undo).await?;
        // The root's files go in while the work disk is made (a workspace
        // takes a while to write, and the root's edits wait on the disk).
        let work_disk = async {
            match work_content {
                // The workspace the client laid out goes in here, its own
                // stage (the part that grows with the user's data), with
                // the guest's files written in the same pass.
                Some(content) => {
                    let seed = image.work_seed_path.as_deref();
                    let (edits, warnings) = work_edits(daemon, vm, key, seed).await?;
                    let stage = events.stage("write_workspace");
                    let sink = events.clone();
                    let last = Arc::new(std::sync::Mutex::new(None));
                    let seen = last.clone();
                    let progress = banger_disk::workdisk::WriteProgress(Arc::new(
                        move |copied: banger_disk::ext4write::Copied| {
                            sink.emit(Event::Progress {
                                task: "write_workspace".into(),
                                current: copied.bytes,
                                total: Some(copied.total_bytes),
                                unit: "bytes".into(),
                                detail: Some(format!(
                                    "{} of {} files",
                                    copied.files, copied.total_files
                                )),
                            });
                            *seen.lock().expect("progress lock") = Some(copied);
                        },
                    ));
                    create_work_disk(
                        daemon,
                        vm,
                        image,
                        Some(content),
                        Some(edits),
                        Some(progress),
                        &mut undo,
                    )
                    .await?;
                    match *last.lock().expect("progress lock") {
                        Some(copied) => stage.done_with(format!(
                            "{} files, {}",
                            copied.total_files,
                            ByteSize(copied.total_bytes).human()
                        )),
                        None => stage.done(),
                    }
                    Ok(warnings)
                }
                None => {
                    create_work_disk(daemon, vm, image, None, None, None, &mut undo).await?;
                    write_work_files(daemon, vm, key).await
                }
            }
        };
        let (root_files, work_files) =
            tokio::join!(write_root_files(daemon, vm, &root, &host_key), work_disk);
        root_files?;
        for warning in work_files? {
            events.log("warning", warning);
        }
        Ok(root)
    }
    .await
    .map_err(Failure::before_launch);
    (result, undo)
}

/// An existing VM's disks before a start: the root reactivated (dm), the
/// work disk grown to the VM's size, the per-start files refreshed.
pub async fn prepare_existing(
    daemon: &Daemon,
    vm: &Vm,
    image: &Image,
    key: &SshKey,
    events: &EventSink,
) -> Prepared {
    let mut undo = Undo::default();
    let result = async {
        let overlay = overlay_for(vm, image);
        let root = if vm.storage == StorageStrategy::DmSnapshot {
            let disk = Arc::clone(&daemon.disk);
            let active = blocking(move || disk.activate_root(&overlay))
                .await?
                .doing("activating the root disk")?;
            undo.push("deactivate the root disk", Class::Host, {
                let (disk, active) = (Arc::clone(&daemon.disk), active.clone());
                async move {
                    blocking(move || disk.deactivate_root(&active).map(drop).map_err(Cause::from))
                        .await?
                }
            });
            active.device()
        } else {
            overlay.device()
        };
        let disk = Arc::clone(&daemon.disk);
        let (path, size) = (vm.paths().work_disk(), vm.spec.disk_size);
        blocking(move || disk.grow_work_disk(&path, size))
            .await?
            .doing("growing the work disk")?;
        for warning in write_work_files(daemon, vm, key).await? {
            events.log("warning", warning);
        }
        Ok(root)
    }
    .await
    .map_err(Failure::before_launch);
    (result, undo)
}

async fn create_root(
    daemon: &Daemon,
    vm: &Vm,
    image: &Image,
    undo: &mut Undo,
) -> Result<PathBuf, ServiceError> {
    let disk: Arc<dyn DiskOps> = Arc::clone(&daemon.disk);
    let strategy = vm.storage;
    // A snapshot sits on the image's rootfs for the VM's whole life: keep
    // that file in the VM's directory (removed with it).
    let base = if strategy == StorageStrategy::DmSnapshot {
        let base = dm_base(vm);
        fs_err::hard_link(&image.rootfs_path, &base)
            .doing("linking the image rootfs into the VM directory")?;
        base
    } else {
        image.rootfs_path.clone()
    };
    let request = RootRequest {
        base,
        vm_dir: vm.dir.clone(),
        vm_id: vm.id.clone(),
        strategy,
    };
    let overlay = blocking({
        let disk = Arc::clone(&disk);
        move || disk.create_root(&request)
    })
    .await?
    .doing("creating the root disk")?;
    undo.push("remove the root disk", Class::Data, {
        let overlay = overlay.clone();
        async move { blocking(move || disk.remove_root(&overlay).map_err(Cause::from)).await? }
    });
    daemon.checkpoint("make the root disk");
    Ok(overlay.device())
}

async fn create_work_disk(
    daemon: &Daemon,
    vm: &Vm,
    image: &Image,
    content: Option<&WorkContent>,
    edits: Option<Ext4Edits>,
    progress: Option<banger_disk::workdisk::WriteProgress>,
    undo: &mut Undo,
) -> Result<(), ServiceError> {
    let disk: Arc<dyn DiskOps> = Arc::clone(&daemon.disk);
    let seed = image.work_seed_path.clone().ok_or_else(|| {
        ServiceError::invalid(format!("image {} has no work seed", image.name))
            .with_hint("re-import or re-register the image")
    })?;
    let work = vm.paths().work_disk();
    let request = WorkDiskRequest {
        seed,
        dest: work.clone(),
        size: vm.spec.disk_size,
        strategy: daemon.storage.strategy,
        grown_seed_cache: image.rootfs_path.parent().map(Path::to_owned),
        content: content.map(|content| content.dir.clone()),
        host_files: content.and_then(|content| content.host_files.clone()),
        edits,
        progress,
    };
    blocking({
        let disk = Arc::clone(&disk);
        move || disk.make_work_disk(&request)
    })
    .await?
    .map_err(|err| match err {
        MakeWorkDiskError::ContentTooLarge { .. } => ServiceError::invalid(err.to_string()),
        err => ServiceError::failed("creating the work disk", err),
    })?;
    undo.push("remove the work disk", Class::Data, async move {
        blocking(move || disk.remove_work_disk(&work).map_err(Cause::from)).await?
    });
    daemon.checkpoint("make the work disk");
    Ok(())
}

/// A VM's SSH host key, made on the host at create.
#[derive(Debug, Clone)]
pub struct HostKey {
    /// `ssh_host_ed25519_key`, OpenSSH's private key format.
    pub private: Vec<u8>,
    /// The `.pub` line: `ssh-ed25519 AAAA… root@NAME`.
    pub public: String,
}

/// The host key types sshd would otherwise offer from an image (shared by
/// every VM of it); a VM gets only its own ed25519 key.
const OTHER_HOST_KEYS: &[&str] = &["rsa", "ecdsa", "dsa", "ed25519_sk", "ecdsa_sk"];

/// Makes the VM's ed25519 host key on the host (the guest's first boot then
/// has none to generate) and pins it in the VM's known_hosts file, so that
/// the first connection already checks it (removed again on rollback and
/// by `vm delete`).
async fn host_key(daemon: &Daemon, vm: &Vm, undo: &mut Undo) -> Result<HostKey, ServiceError> {
    let dir = vm.dir.join("host-key.tmp");
    fs_err::create_dir_all(&dir).doing("preparing the host key")?;
    let path = dir.join("ssh_host_ed25519_key");
    let made = crate::exec::ssh_keygen_ed25519(&path, &format!("root@{}", vm.name)).await;
    let read = made
        .doing("generating the VM's SSH host key")
        .and_then(|()| {
            let private = fs_err::read(&path);
            let public = fs_err::read_to_string(path.with_extension("pub"));
            match (private, public) {
                (Ok(private), Ok(public)) => Ok(HostKey {
                    private,
                    public: public.trim_end().to_owned(),
                }),
                (Err(err), _) | (_, Err(err)) => {
                    Err(ServiceError::failed("reading the VM's SSH host key", err))
                }
            }
        });
    let _ = fs_err::remove_dir_all(&dir);
    let key = read?;
    let known_hosts = crate::ssh::known_hosts_file(&daemon.layout, vm.name.as_str());
    crate::ssh::pin_host_key(&known_hosts, &vm.dns_name(), &key.public)
        .doing("pinning the VM's SSH host key")?;
    undo.push("unpin the host key", Class::Data, async move {
        match fs_err::remove_file(&known_hosts) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    });
    Ok(key)
}

/// `/etc/hostname`, `/etc/hosts` and the SSH host key in the root disk.
async fn write_root_files(
    daemon: &Daemon,
    vm: &Vm,
    root: &Path,
    host_key: &HostKey,
) -> Result<(), ServiceError> {
    let mut edits = Ext4Edits::new();
    let file = Meta {
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    let secret = Meta {
        mode: 0o600,
        uid: 0,
        gid: 0,
    };
    let dir = Meta {
        mode: 0o755,
        uid: 0,
        gid: 0,
    };
    let hosts = format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{name} {name}.vm\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        name = vm.name
    );
    edits
        .write_file("/etc/hostname", format!("{}\n", vm.name), file)
        .and_then(|edits| edits.write_file("/etc/hosts", hosts, file))
        .and_then(|edits| edits.mkdir_p("/etc/ssh", dir))
        .and_then(|edits| {
            edits.write_file(
                "/etc/ssh/ssh_host_ed25519_key",
                host_key.private.clone(),
                secret,
            )
        })
        .and_then(|edits| {
            edits.write_file(
                "/etc/ssh/ssh_host_ed25519_key.pub",
                format!("{}\n", host_key.public),
                file,
            )
        })
        .doing("preparing root disk edits")?;
    for kind in OTHER_HOST_KEYS {
        for suffix in ["", ".pub"] {
            edits
                .remove(&format!("/etc/ssh/ssh_host_{kind}_key{suffix}"))
                .doing("preparing root disk edits")?;
        }
    }
    apply(
        daemon,
        root,
        edits,
        "writing per-VM files into the root disk",
    )
    .await
}

/// Refreshed at every start: /root normalised for sshd's StrictModes, the
/// managed key in `authorized_keys`, the host's git identity in
/// `.gitconfig`, and `[[file_sync]]` entries.
pub async fn write_work_files(
    daemon: &Daemon,
    vm: &Vm,
    key: &SshKey,
) -> Result<Vec<String>, ServiceError> {
    let work = vm.paths().work_disk();
    let (edits, warnings) = work_edits(daemon, vm, key, Some(&work)).await?;
    apply(daemon, &work, edits, "writing files into the work disk").await?;
    Ok(warnings)
}

/// The edits that give the work disk the guest's files (`authorized_keys`,
/// the git identity merged into the `.gitconfig` that `gitconfig_from`
/// holds, `[[file_sync]]` entries), with warnings for what was left out.
async fn work_edits(
    daemon: &Daemon,
    vm: &Vm,
    key: &SshKey,
    gitconfig_from: Option<&Path>,
) -> Result<(Ext4Edits, Vec<String>), ServiceError> {
    let gitconfig = guest_gitconfig(daemon, vm, gitconfig_from).await;
    let mut edits = Ext4Edits::new();
    let root_owned = |mode| Meta {
        mode,
        uid: 0,
        gid: 0,
    };
    edits
        .chmod("/", 0o755)
        .and_then(|edits| edits.chown("/", 0, 0))
        .and_then(|edits| edits.mkdir_p("/.ssh", root_owned(0o700)))
        .and_then(|edits| edits.chmod("/.ssh", 0o700))
        .and_then(|edits| {
            edits.write_file(
                "/.ssh/authorized_keys",
                format!("{}\n", key.public),
                root_owned(0o600),
            )
        })
        .doing("preparing work disk edits")?;
    let mut warnings = Vec::new();
    match gitconfig {
        Ok(Some(content)) => {
            edits
                .write_file("/.gitconfig", content, root_owned(0o644))
                .doing("preparing work disk edits")?;
        }
        Ok(None) => {}
        Err(warning) => warnings.push(warning),
    }
    warnings.extend(crate::file_sync::add_edits(
        &daemon.config.file_sync,
        &daemon.layout.home,
        &mut edits,
    )?);
    Ok((edits, warnings))
}

/// The guest's `/root/.gitconfig` with the host's git identity set in it,
/// `None` when the host has none; a warning when it cannot be made.
async fn guest_gitconfig(
    daemon: &Daemon,
    vm: &Vm,
    from: Option<&Path>,
) -> Result<Option<Vec<u8>>, String> {
    let identity = crate::git_identity::host(&daemon.layout.home).await;
    if identity.is_empty() {
        return Ok(None);
    }
    let existing = match from {
        Some(image) => {
            let image = image.to_owned();
            let read = blocking(move || banger_disk::read_file(&image, "/.gitconfig"))
                .await
                .map_err(|err| err.message())?;
            match read {
                Ok(content) => Some(content),
                Err(banger_disk::edits::ReadExt4Error::NotFound { .. }) => None,
                Err(err) => {
                    tracing::debug!(vm = %vm.name, error = %err, "guest .gitconfig unreadable; writing a fresh one");
                    None
                }
            }
        }
        None => None,
    };
    crate::git_identity::merge(existing.as_deref(), &identity)
        .await
        .map(Some)
        .map_err(|err| {
            format!("the host's git identity was not written to /root/.gitconfig: {err}")
        })
}

async fn apply(
    daemon: &Daemon,
    image: &Path,
    edits: Ext4Edits,
    what: &'static str,
) -> Result<(), ServiceError> {
    let disk = Arc::clone(&daemon.disk);
    let image = image.to_owned();
    blocking(move || disk.apply_edits(&image, &edits))
        .await?
        .doing(what)
}

/// Removes a VM's disks and directory (delete).
pub async fn destroy(daemon: &Daemon, vm: &Vm, image: Option<&Image>) -> Vec<String> {
    let mut problems = Vec::new();
    let disk = Arc::clone(&daemon.disk);
    if let Some(image) = image {
        let overlay = overlay_for(vm, image);
        let disk = Arc::clone(&disk);
        match blocking(move || disk.remove_root(&overlay)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => problems.push(format!("root disk: {err}")),
            Err(err) => problems.push(err.message()),
        }
    }
    let work = vm.paths().work_disk();
    let disk_ops = Arc::clone(&disk);
    match blocking(move || disk_ops.remove_work_disk(&work)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => problems.push(format!("work disk: {err}")),
        Err(err) => problems.push(err.message()),
    }
    if let Err(err) = remove_dir(&vm.dir) {
        problems.push(err.to_string());
    }
    problems
}

fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match fs_err::remove_dir_all(dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use banger_model::image::ImageSource;
    use banger_model::vm::{VmState, VmmKind};
    use banger_model::{ByteSize, Id, Name, VmSpec};

    use super::*;

    fn vm(dir: &Path, storage: StorageStrategy) -> Vm {
        let now = jiff::Timestamp::now();
        Vm {
            id: Id::generate(),
            name: Name::parse("box").unwrap(),
            image_id: Id::generate(),
            image_name: "img".into(),
            state: VmState::Stopped,
            spec: VmSpec {
                vcpu: 1,
                memory_mib: 512,
                disk_size: ByteSize::gib(1),
            },
            nat: false,
            vmm: VmmKind::Sim,
            accel: None,
            network: banger_model::vm::NetworkAllocation {
                ip: std::net::Ipv4Addr::new(172, 30, 0, 2),
                prefix_len: 24,
                gateway: std::net::Ipv4Addr::new(172, 30, 0, 1),
                mac: "06:00:ac:1e:00:02".into(),
            },
            tap: None,
            storage,
            dir: dir.to_owned(),
            pid: None,
            vsock_cid: 3,
            created_at: now,
            updated_at: now,
            started_at: None,
            last_error: None,
            workspace: None,
            ports: Vec::new(),
        }
    }

    fn image(rootfs: &Path) -> Image {
        Image {
            id: Id::generate(),
            name: Name::parse("img").unwrap(),
            kernel_id: None,
            kernel_name: None,
            rootfs_path: rootfs.to_owned(),
            work_seed_path: None,
            rootfs_size: ByteSize::gib(1),
            source: ImageSource::Register,
            is_default: false,
            created_at: jiff::Timestamp::now(),
        }
    }

    /// A dm-snapshot VM keeps the rootfs its snapshot sits on when the
    /// image's file is replaced; file-strategy VMs need no link.
    #[test]
    fn dm_snapshots_keep_their_base_across_an_image_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs.ext4");
        fs_err::write(&rootfs, b"v1").unwrap();
        let vm_dir = dir.path().join("vm");
        fs_err::create_dir(&vm_dir).unwrap();
        let dm = vm(&vm_dir, StorageStrategy::DmSnapshot);
        let img = image(&rootfs);

        // Older VMs without the link sit on the image's file.
        let RootOverlay::DmSnapshot { base, .. } = overlay_for(&dm, &img) else {
            panic!("not a dm overlay")
        };
        assert_eq!(base, rootfs);

        keep_dm_base(&dm, &rootfs).unwrap();
        keep_dm_base(&dm, &rootfs).unwrap();
        let before = fs_err::metadata(&rootfs).unwrap().ino();
        // The image is replaced by renaming a new file over it.
        let new = dir.path().join("new.ext4");
        fs_err::write(&new, b"v2").unwrap();
        fs_err::rename(&new, &rootfs).unwrap();
        let RootOverlay::DmSnapshot { base, .. } = overlay_for(&dm, &img) else {
            panic!("not a dm overlay")
        };
        assert_eq!(base, dm_base(&dm));
        assert_eq!(fs_err::metadata(&base).unwrap().ino(), before);
        assert_eq!(fs_err::read(&base).unwrap(), b"v1");

        let copy_dir = dir.path().join("copy-vm");
        fs_err::create_dir(&copy_dir).unwrap();
        let copy = vm(&copy_dir, StorageStrategy::Copy);
        keep_dm_base(&copy, &rootfs).unwrap();
        assert!(!dm_base(&copy).exists());
    }
}
