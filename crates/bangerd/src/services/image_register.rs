//! `image.register`: existing ext4 files (a root filesystem and optionally a
//! `/root` seed) become an image. They are copied into banger's directory
//! (a reflink where the filesystem allows), so deleting the image never
//! touches the originals, and banger's guest files are installed into the
//! copy. Without a seed, the VMs' `/root` starts empty.

use std::path::Path;

use banger_disk::{Ext4BuildOptions, build_ext4_from_dir, clone_file};
use banger_model::image::{Image, ImageSource};
use banger_model::{ByteSize, Id, Name};
use banger_rpc::request::ImageRegisterParams;

use super::image_import::{ROOTFS, WORK_SEED, check_name_free, publish, resolve_kernel};
use super::image_pull::find_agent;
use crate::daemon::Daemon;
use crate::errors::{Doing, Hint, ServiceError, blocking};
use crate::images::Staging;
use crate::server::EventSink;

pub async fn register(
    daemon: &Daemon,
    params: ImageRegisterParams,
    events: &EventSink,
) -> Result<Image, ServiceError> {
    let name = Name::parse(&params.name)?;
    check_name_free(daemon, &name)?;
    let kernel = resolve_kernel(daemon, params.kernel_ref.as_deref())?;
    for path in std::iter::once(&params.rootfs).chain(params.work_seed.as_ref()) {
        banger_disk::superblock::read_superblock(path)
            .rejected(format!("{} is not an ext4 image", path.display()))
            .hint("register takes ext4 files; `banger image import DIR|TARBALL` builds one from a tree")?;
    }
    let agent = find_agent()?;
    let id = Id::generate();
    let staging = Staging::new(daemon, &id)?;
    let out = staging.out();
    let strategy = daemon.storage.strategy;

    let stage = events.stage("copy");
    let copy = {
        let (rootfs, seed, out) = (params.rootfs.clone(), params.work_seed.clone(), out.clone());
        blocking(
            move || -> Result<ByteSize, Box<dyn std::error::Error + Send + Sync>> {
                fs_err::create_dir_all(&out)?;
                clone_file(&rootfs, &out.join(ROOTFS), strategy)?;
                match seed {
                    Some(seed) => drop(clone_file(&seed, &out.join(WORK_SEED), strategy)?),
                    None => empty_seed(&out)?,
                }
                Ok(ByteSize(fs_err::metadata(out.join(ROOTFS))?.len()))
            },
        )
    };
    let size = copy.await?.doing("copying the image files")?;
    stage.done();

    let stage = events.stage("install_guest_files");
    let disk = daemon.disk.clone();
    let rootfs = out.join(ROOTFS);
    blocking(move || crate::guest_install::install(disk.as_ref(), &rootfs, &agent))
        .await?
        .doing("installing guest files")?;
    stage.done();

    let image = Image {
        id,
        name,
        kernel_id: kernel.as_ref().map(|kernel| kernel.id.clone()),
        kernel_name: kernel.map(|kernel| kernel.name.to_string()),
        rootfs_path: Default::default(),
        work_seed_path: None,
        rootfs_size: size,
        source: ImageSource::Register,
        is_default: false,
        created_at: jiff::Timestamp::now(),
    };
    let image = publish(daemon, &out, image).await?;
    if image.rootfs_size.bytes() == 0 {
        return Err(ServiceError::internal("registered an empty rootfs"));
    }
    Ok(image)
}

/// A valid, empty, growable `/root` seed.
fn empty_seed(out: &Path) -> Result<(), banger_disk::BuildExt4Error> {
    let empty = tempfile::tempdir_in(out).map_err(|source| banger_disk::BuildExt4Error::Walk {
        path: out.to_owned(),
        source,
    })?;
    let options = Ext4BuildOptions {
        label: Some("banger-work".into()),
        growable: true,
        min_size: None,
        free_space: banger_model::ByteSize(0),
        skip_special: false,
    };
    build_ext4_from_dir(empty.path(), &out.join(WORK_SEED), &options).map(drop)
}
