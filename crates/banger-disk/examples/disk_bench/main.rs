//! Disk preparation benchmark (run by `scripts/bench.sh`): root overlay + work disk per
//! VM with reflinks for 1, 4 and 16 GiB images, and the sparse-copy
//! fallback side by side with `cp --sparse=always`.
//!
//! Needs root (loop-mounts a btrfs scratch filesystem when the temp dir
//! has no reflinks):
//!
//! ```text
//! cargo run --release -p banger-disk --example disk_bench -- \
//!     [--runs 20] [--sizes 1,4,16] [--work-size 8G] [--data-mib 256] [--copy-dir /var/tmp]
//! ```
//!
//! The image content is a generated tree: `--data-mib` of one large file
//! plus 3000 small files in 60 directories, and a `/root` for the work seed.

mod exec;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use banger_disk::clone::sparse_copy;
use banger_disk::{
    DiskOps, Ext4BuildOptions, FsType, HostDiskOps, MountedImage, RootRequest, WorkDiskRequest,
    build_ext4_from_dir, detect_strategy, make_work_seed,
};
use banger_model::vm::{StorageStrategy, VmPaths};
use banger_model::{ByteSize, Id};

struct Args {
    runs: usize,
    sizes: Vec<u64>,
    work_size: ByteSize,
    data_mib: u64,
    copy_dir: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        runs: 20,
        sizes: vec![1, 4, 16],
        work_size: ByteSize::gib(8),
        data_mib: 256,
        copy_dir: std::env::temp_dir(),
    };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => args.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--sizes" => {
                args.sizes = value()?
                    .split(',')
                    .map(|size| {
                        size.trim()
                            .parse::<u64>()
                            .map_err(|e| format!("--sizes: {e}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--work-size" => {
                args.work_size = value()?.parse().map_err(|e| format!("--work-size: {e}"))?
            }
            "--data-mib" => {
                args.data_mib = value()?.parse().map_err(|e| format!("--data-mib: {e}"))?
            }
            "--copy-dir" => args.copy_dir = PathBuf::from(value()?),
            "--help" | "-h" => {
                println!(
                    "usage: disk_bench [--runs N] [--sizes 1,4,16] [--work-size 8G] [--data-mib 256] [--copy-dir DIR]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    match parse_args().and_then(|args| bench(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("disk_bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Deterministic filler (xorshift64*), incompressible enough for disks.
struct Filler(u64);

impl Filler {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

fn make_tree(dir: &Path, data_mib: u64) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let mut filler = Filler(0x9E37_79B9_7F4A_7C15);
    std::fs::create_dir_all(dir.join("root/.config")).map_err(io)?;
    std::fs::write(dir.join("root/.bashrc"), b"export PS1='$ '\n").map_err(io)?;
    std::fs::write(dir.join("root/.config/tool.toml"), filler.bytes(4096)).map_err(io)?;
    for group in 0..60 {
        let sub = dir.join(format!("usr/lib/pkg{group}"));
        std::fs::create_dir_all(&sub).map_err(io)?;
        for index in 0..50 {
            let len = 1024 + (filler.next() % (128 * 1024)) as usize;
            std::fs::write(sub.join(format!("f{index}.so")), filler.bytes(len)).map_err(io)?;
        }
    }
    std::fs::create_dir_all(dir.join("var/cache")).map_err(io)?;
    let mut blob = std::fs::File::create(dir.join("var/cache/blob")).map_err(io)?;
    for _ in 0..data_mib {
        std::io::Write::write_all(&mut blob, &filler.bytes(1 << 20)).map_err(io)?;
    }
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// A directory where FICLONE works: the temp dir itself, or a btrfs made
/// on a sparse file there and loop-mounted (kept alive by the guard).
fn reflink_dir(scratch: &Path) -> Result<(PathBuf, Option<MountedImage>, String), String> {
    let probe = detect_strategy(scratch).map_err(|e| e.to_string())?;
    if probe.strategy == StorageStrategy::Reflink {
        return Ok((
            scratch.to_owned(),
            None,
            format!("{} (native reflinks)", scratch.display()),
        ));
    }
    let image = scratch.join("reflink-scratch.btrfs");
    let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
    file.set_len(64 << 30).map_err(|e| e.to_string())?;
    drop(file);
    exec::mkfs_btrfs(&image)?;
    let mount =
        MountedImage::mount(&image, FsType::Btrfs, false, scratch).map_err(|e| e.to_string())?;
    let root = mount.path().to_owned();
    Ok((
        root,
        Some(mount),
        "btrfs on a loop-mounted sparse file".to_owned(),
    ))
}

fn allocated_mib(path: &Path) -> f64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.blocks() as f64 * 512.0 / 1048576.0)
        .unwrap_or(0.0)
}

/// One VM's disks: (root, work) durations.
fn prepare_vm(
    disks: &HostDiskOps,
    image_dir: &Path,
    vm_dir: &Path,
    strategy: StorageStrategy,
    work_size: ByteSize,
    cache: bool,
) -> Result<(Duration, Duration), String> {
    std::fs::create_dir_all(vm_dir).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let root = disks
        .create_root(&RootRequest {
            base: image_dir.join("rootfs.ext4"),
            vm_dir: vm_dir.to_owned(),
            vm_id: Id::generate(),
            strategy,
        })
        .map_err(|e| format!("create_root: {e}"))?;
    let root_done = started.elapsed();
    let work = disks
        .make_work_disk(&WorkDiskRequest {
            seed: image_dir.join("work-seed.ext4"),
            dest: VmPaths::new(vm_dir).work_disk(),
            size: work_size,
            strategy,
            grown_seed_cache: cache.then(|| image_dir.to_owned()),
            content: None,
            host_files: None,
            edits: None,
            progress: None,
        })
        .map_err(|e| format!("make_work_disk: {e}"))?;
    let total = started.elapsed();
    disks.remove_root(&root).map_err(|e| e.to_string())?;
    disks
        .remove_work_disk(&work.path)
        .map_err(|e| e.to_string())?;
    std::fs::remove_dir(vm_dir).map_err(|e| e.to_string())?;
    Ok((root_done, total - root_done))
}

fn build_image(tree: &Path, image_dir: &Path, size_gib: u64) -> Result<(), String> {
    std::fs::create_dir_all(image_dir).map_err(|e| e.to_string())?;
    build_ext4_from_dir(
        tree,
        &image_dir.join("rootfs.ext4"),
        &Ext4BuildOptions {
            label: Some("rootfs".into()),
            growable: false,
            min_size: Some(ByteSize::gib(size_gib)),
            free_space: banger_model::ByteSize(0),
            skip_special: false,
        },
    )
    .map_err(|e| e.to_string())?;
    make_work_seed(tree, &image_dir.join("work-seed.ext4")).map_err(|e| e.to_string())?;
    Ok(())
}

fn bench(args: &Args) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "needs root (loop devices and mounts for the reflink scratch filesystem)".into(),
        );
    }
    let scratch = tempfile::Builder::new()
        .prefix("banger-disk-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let tree = scratch.path().join("tree");
    make_tree(&tree, args.data_mib)?;
    let disks = HostDiskOps::new();

    println!(
        "banger-disk bench: {} runs, work disk {}, {} MiB of image data",
        args.runs, args.work_size, args.data_mib
    );

    // Reflink: root overlay + work disk per VM, per image size.
    {
        let (root, mount, how) = reflink_dir(scratch.path())?;
        println!();
        println!(
            "root overlay + work disk with reflink ({how}); target < 20 ms, flat in image size"
        );
        println!(
            "{:>10}  {:>12}  {:>10}  {:>10}  {:>14}  {:>14}",
            "image", "p50 total", "p50 root", "p50 work", "first VM*", "no cache p50**"
        );
        for &size in &args.sizes {
            let image_dir = root.join(format!("images/{size}g"));
            build_image(&tree, &image_dir, size)?;
            // The first VM of this disk size grows the seed and caches it.
            let (first_root, first_work) = prepare_vm(
                &disks,
                &image_dir,
                &root.join("vms/first"),
                StorageStrategy::Reflink,
                args.work_size,
                true,
            )?;
            let mut totals = Vec::new();
            let mut roots = Vec::new();
            let mut works = Vec::new();
            for run in 0..args.runs {
                let (r, w) = prepare_vm(
                    &disks,
                    &image_dir,
                    &root.join(format!("vms/{run}")),
                    StorageStrategy::Reflink,
                    args.work_size,
                    true,
                )?;
                roots.push(r);
                works.push(w);
                totals.push(r + w);
            }
            let mut uncached = Vec::new();
            for run in 0..args.runs.min(5) {
                let (r, w) = prepare_vm(
                    &disks,
                    &image_dir,
                    &root.join(format!("vms/nc{run}")),
                    StorageStrategy::Reflink,
                    args.work_size,
                    false,
                )?;
                uncached.push(r + w);
            }
            println!(
                "{:>7} GiB  {:>9.2} ms  {:>7.2} ms  {:>7.2} ms  {:>11.2} ms  {:>11.2} ms",
                size,
                ms(median(&mut totals)),
                ms(median(&mut roots)),
                ms(median(&mut works)),
                ms(first_root + first_work),
                ms(median(&mut uncached)),
            );
            std::fs::remove_dir_all(&image_dir).map_err(|e| e.to_string())?;
        }
        println!(
            "  * first VM of an image at this disk size: clones and grows the seed (resize2fs), caches it"
        );
        println!("  ** without the grown-seed cache: clone + resize2fs for every VM");
        if let Some(mount) = mount {
            mount.unmount().map_err(|e| e.to_string())?;
        }
    }

    // Copy fallback vs cp --sparse=always, 4 GiB image, same source file.
    {
        let dir = tempfile::Builder::new()
            .prefix("banger-disk-bench-copy-")
            .tempdir_in(&args.copy_dir)
            .map_err(|e| format!("{}: {e}", args.copy_dir.display()))?;
        let probe = detect_strategy(dir.path()).map_err(|e| e.to_string())?;
        let image_dir = dir.path().join("image");
        build_image(&tree, &image_dir, 4)?;
        let src = image_dir.join("rootfs.ext4");
        println!();
        println!(
            "copy fallback, 4 GiB image ({:.0} MiB allocated) in {} ({}); target <= 1.2x cp",
            allocated_mib(&src),
            args.copy_dir.display(),
            if probe.reflink.is_yes() {
                "has reflinks: copy_file_range may share extents"
            } else {
                "no reflinks"
            },
        );
        let runs = args.runs.clamp(3, 7);
        let ours_path = dir.path().join("ours.ext4");
        let cp_path = dir.path().join("cp.ext4");
        // Warm the page cache for both.
        sparse_copy(&src, &ours_path).map_err(|e| e.to_string())?;
        std::fs::remove_file(&ours_path).map_err(|e| e.to_string())?;
        exec::cp_sparse(&src, &cp_path)?;
        std::fs::remove_file(&cp_path).map_err(|e| e.to_string())?;
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..runs {
            let started = Instant::now();
            sparse_copy(&src, &ours_path).map_err(|e| e.to_string())?;
            ours.push(started.elapsed());
            theirs.push(exec::cp_sparse(&src, &cp_path)?);
            let (a, b) = (allocated_mib(&ours_path), allocated_mib(&cp_path));
            std::fs::remove_file(&ours_path).map_err(|e| e.to_string())?;
            std::fs::remove_file(&cp_path).map_err(|e| e.to_string())?;
            if (a - b).abs() > 64.0 {
                println!("  note: allocation differs: ours {a:.0} MiB, cp {b:.0} MiB");
            }
        }
        let (ours, theirs) = (median(&mut ours), median(&mut theirs));
        println!(
            "  banger sparse copy   {:>9.1} ms (median of {runs})",
            ms(ours)
        );
        println!(
            "  cp --sparse=always   {:>9.1} ms (median of {runs}, includes process start)",
            ms(theirs)
        );
        println!(
            "  ratio                {:>9.2}x",
            ours.as_secs_f64() / theirs.as_secs_f64()
        );

        let mut totals = Vec::new();
        for run in 0..runs {
            let (r, w) = prepare_vm(
                &disks,
                &image_dir,
                &dir.path().join(format!("vm{run}")),
                StorageStrategy::Copy,
                args.work_size,
                false,
            )?;
            totals.push(r + w);
        }
        println!(
            "  root overlay + work disk with the copy strategy: {:.1} ms (median of {runs})",
            ms(median(&mut totals))
        );
    }
    Ok(())
}
