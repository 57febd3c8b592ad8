//! `image pull` benchmark (run by `scripts/bench.sh`): an image pulled from a local
//! registry into a staging directory by banger (cold cache, then cache
//! hit), side by side with `skopeo copy` + `umoci unpack` of the same
//! image, optionally followed by `mkfs.ext4 -d` on both results.
//!
//! Needs root (ownership), docker-registry, skopeo and umoci:
//!
//! ```text
//! cargo run --release -p banger-image --example pull_bench -- \
//!     [--rootfs-tar PATH] [--runs 3] [--mkfs] [--work-dir DIR]
//! ```
//!
//! Everything lives under a temporary directory in `--work-dir` (default:
//! the temp dir), deleted at the end; a tmpfs such as `/dev/shm` takes the
//! disk out of the comparison.
//!
//! `--rootfs-tar` takes a root filesystem tarball such as the Debian
//! fixture (`tests/fixtures/debian-rootfs.sh OUT` writes `OUT/rootfs.tar`)
//! and pushes it as one gzip layer, the way `tests/fixtures/oci-image.sh`
//! does. Without it, a generated tree of ~9000 files in three layers is
//! used. Figures are medians; compare them as ratios within one run.

mod exec;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use banger_image::{NoProgress, PullOptions, Puller, Reference, UnpackOptions};
use sha2::Digest as _;

struct Args {
    rootfs_tar: Option<PathBuf>,
    runs: usize,
    mkfs: bool,
    work_dir: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rootfs_tar: None,
        runs: 3,
        mkfs: false,
        work_dir: std::env::temp_dir(),
    };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--rootfs-tar" => args.rootfs_tar = Some(PathBuf::from(value()?)),
            "--runs" => args.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--mkfs" => args.mkfs = true,
            "--work-dir" => args.work_dir = PathBuf::from(value()?),
            "--help" | "-h" => {
                println!(
                    "usage: pull_bench [--rootfs-tar PATH] [--runs N] [--mkfs] [--work-dir DIR]"
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

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Deterministic pseudo-random bytes.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Text-like content (compresses about like binaries and configs do).
    fn text(&mut self, len: usize) -> Vec<u8> {
        const WORDS: [&str; 16] = [
            "usr", "lib", "banger", "config", "value", "0x7f", "return", "static", "const", "true",
            "false", "\n", "int", "char", "void", "{}",
        ];
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            let word = WORDS[(self.next() % 16) as usize];
            out.extend_from_slice(word.as_bytes());
            out.push(if self.next().is_multiple_of(7) {
                b'\n'
            } else {
                b' '
            });
            if self.next().is_multiple_of(5) {
                out.extend_from_slice(&self.next().to_le_bytes());
            }
        }
        out.truncate(len);
        out
    }
}

/// Three layer tarballs: a base with most files, a middle that replaces
/// some and removes others, a small top.
fn generated_layers() -> Vec<Vec<u8>> {
    let mut noise = Noise(0x1234_5678_9abc_def1);
    let mut layers = Vec::new();
    for (layer, (dirs, files_per_dir)) in [(60, 120), (20, 60), (5, 20)].into_iter().enumerate() {
        let mut builder = tar::Builder::new(Vec::new());
        for dir in 0..dirs {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(1_700_000_000);
            header.set_size(0);
            builder
                .append_data(
                    &mut header,
                    format!("usr/share/d{dir:03}/"),
                    std::io::empty(),
                )
                .unwrap();
            for file in 0..files_per_dir as u32 {
                let len = 256 + (noise.next() % (24 * 1024)) as usize;
                let data = noise.text(len);
                let mut header = tar::Header::new_gnu();
                header.set_mode(if file.is_multiple_of(10) {
                    0o755
                } else {
                    0o644
                });
                header.set_size(data.len() as u64);
                header.set_uid(0);
                header.set_gid(0);
                header.set_mtime(1_700_000_000);
                builder
                    .append_data(
                        &mut header,
                        format!("usr/share/d{dir:03}/f{file:04}-{layer}"),
                        data.as_slice(),
                    )
                    .unwrap();
            }
        }
        if layer == 0 {
            for big in 0..4 {
                let data: Vec<u8> = (0..8 * 1024 * 1024 / 8)
                    .flat_map(|_| noise.next().to_le_bytes())
                    .collect();
                let mut header = tar::Header::new_gnu();
                header.set_mode(0o755);
                header.set_size(data.len() as u64);
                header.set_uid(0);
                header.set_gid(0);
                header.set_mtime(1_700_000_000);
                builder
                    .append_data(&mut header, format!("usr/lib/big{big}.so"), data.as_slice())
                    .unwrap();
            }
        }
        layers.push(builder.into_inner().unwrap());
    }
    layers
}

/// Writes an OCI layout holding `layers` (gzip level 6) under `dir`.
fn write_layout(dir: &Path, layers: &[Vec<u8>], tag: &str) -> Result<u64, String> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| e.to_string())?;
    let put = |bytes: &[u8], media_type: &str| -> Result<serde_json::Value, String> {
        let digest = sha256(bytes);
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes)
            .map_err(|e| e.to_string())?;
        Ok(serde_json::json!({ "mediaType": media_type, "digest": digest, "size": bytes.len() }))
    };
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    let mut compressed = 0u64;
    for layer in layers {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        encoder.write_all(layer).map_err(|e| e.to_string())?;
        let blob = encoder.finish().map_err(|e| e.to_string())?;
        compressed += blob.len() as u64;
        diff_ids.push(sha256(layer));
        descriptors.push(put(&blob, "application/vnd.oci.image.layer.v1.tar+gzip")?);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .map_err(|e| e.to_string())?;
    let config = put(&config, "application/vnd.oci.image.config.v1+json")?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": descriptors,
    }))
    .map_err(|e| e.to_string())?;
    let mut manifest = put(&manifest, "application/vnd.oci.image.manifest.v1+json")?;
    manifest["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": tag });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({ "schemaVersion": 2, "manifests": [manifest] }))
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(|e| e.to_string())?;
    Ok(compressed)
}

/// An error and its causes on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    out
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn show(label: &str, samples: &[Duration]) -> Duration {
    let median = median(samples.to_vec());
    let all: Vec<String> = samples
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect();
    println!(
        "{label:<34} median {:>7.3} s   runs: {}",
        median.as_secs_f64(),
        all.join(" ")
    );
    median
}

async fn bench(args: Args) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("run as root: unpacking preserves ownership".into());
    }
    let work = tempfile::Builder::new()
        .prefix("banger-pull-bench-")
        .tempdir_in(&args.work_dir)
        .map_err(|e| e.to_string())?;
    let work = work.path();
    let layers = match &args.rootfs_tar {
        Some(path) => {
            vec![std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?]
        }
        None => generated_layers(),
    };
    let uncompressed: u64 = layers.iter().map(|layer| layer.len() as u64).sum();
    let layout = work.join("layout");
    let compressed = write_layout(&layout, &layers, "bench")?;
    drop(layers);
    let registry_dir = work.join("registry");
    std::fs::create_dir_all(&registry_dir).map_err(|e| e.to_string())?;
    let registry = exec::Registry::start(&registry_dir)?;
    let image = format!("{}/bench/image:bench", registry.addr);
    exec::skopeo_push(&layout, "bench", &image)?;
    println!(
        "image: {} ({} layer(s), {:.1} MB uncompressed, {:.1} MB gzip), registry {}",
        args.rootfs_tar
            .as_ref()
            .map_or("generated tree".to_owned(), |p| p.display().to_string()),
        if args.rootfs_tar.is_some() { 1 } else { 3 },
        uncompressed as f64 / 1e6,
        compressed as f64 / 1e6,
        registry.addr
    );

    let reference: Reference = image.parse().map_err(|e| format!("{e}"))?;
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut skopeo = Vec::new();
    let mut umoci = Vec::new();
    let mut baseline = Vec::new();
    let mut mkfs_banger = Vec::new();
    let mut mkfs_baseline = Vec::new();
    let mut content = None;
    // Nothing is deleted until the end: on ext4, creating files right after
    // deleting many makes the inode allocator scan the recently deleted ones
    // and would distort later runs.
    for run in 0..args.runs {
        // banger, cold cache.
        let cache = work.join(format!("cache-{run}"));
        let puller = Puller::new(PullOptions::new(&cache)).map_err(|e| e.to_string())?;
        let staging = work.join(format!("staging-cold-{run}"));
        let started = Instant::now();
        let pulled = puller
            .pull(&reference, &staging, UnpackOptions::default(), &NoProgress)
            .await
            .map_err(|e| format!("banger pull: {}", chain(&e)))?;
        cold.push(started.elapsed());
        content = Some(pulled.content);
        let image_size = pulled.content.bytes + pulled.content.bytes / 3 + 64 * 1024 * 1024;
        if args.mkfs {
            mkfs_banger.push(exec::mkfs_ext4(
                &staging,
                &work.join(format!("banger-{run}.ext4")),
                image_size,
            )?);
        }

        // banger, cache hit.
        let staging = work.join(format!("staging-warm-{run}"));
        let started = Instant::now();
        puller
            .pull(&reference, &staging, UnpackOptions::default(), &NoProgress)
            .await
            .map_err(|e| format!("banger re-pull: {}", chain(&e)))?;
        warm.push(started.elapsed());

        // skopeo copy + umoci unpack.
        let oci = work.join(format!("oci-{run}"));
        let bundle = work.join(format!("bundle-{run}"));
        let copy = exec::skopeo_pull(&image, &oci, "bench")?;
        let (unpack, rootfs) = exec::umoci_unpack(&oci, "bench", &bundle)?;
        skopeo.push(copy);
        umoci.push(unpack);
        baseline.push(copy + unpack);
        if args.mkfs {
            mkfs_baseline.push(exec::mkfs_ext4(
                &rootfs,
                &work.join(format!("baseline-{run}.ext4")),
                image_size,
            )?);
        }
    }
    if let Some(content) = content {
        println!(
            "staged content: {:.1} MB in ext4 blocks, {} inodes",
            content.bytes as f64 / 1e6,
            content.inodes
        );
    }
    let banger_cold = show("banger pull → staging (cold cache)", &cold);
    show("banger pull → staging (cache hit)", &warm);
    show("skopeo copy → oci layout", &skopeo);
    show("umoci unpack → bundle", &umoci);
    let base = show("skopeo copy + umoci unpack", &baseline);
    println!(
        "ratio (skopeo + umoci) / banger cold: {:.2}x",
        base.as_secs_f64() / banger_cold.as_secs_f64()
    );
    if args.mkfs {
        let mb = show("mkfs.ext4 -d of banger's staging", &mkfs_banger);
        let mu = show("mkfs.ext4 -d of umoci's rootfs", &mkfs_baseline);
        let full_banger = banger_cold + mb;
        let full_base = base + mu;
        println!(
            "pull → ext4: banger {:.3} s vs skopeo + umoci + mkfs {:.3} s ({:.2}x)",
            full_banger.as_secs_f64(),
            full_base.as_secs_f64(),
            full_base.as_secs_f64() / full_banger.as_secs_f64()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("pull_bench: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(bench(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pull_bench: {err}");
            ExitCode::FAILURE
        }
    }
}
