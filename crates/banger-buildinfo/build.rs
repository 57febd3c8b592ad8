//! Stamps the git commit, a hash of the source tree and the build time into
//! the crate.
//!
//! The build identity is the source hash, not the time: cargo may run this
//! script more than once in one build (one per dependency graph the crate
//! appears in), and every run must agree for binaries built together to
//! report the same build.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest).join("../..");
    for watched in [
        ".git/HEAD",
        ".git/index",
        "crates",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        let path = root.join(watched);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");

    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());

    let mut files = Vec::new();
    collect(&root.join("crates"), &mut files);
    files.push(root.join("Cargo.lock"));
    files.push(root.join("Cargo.toml"));
    files.sort();
    let mut hash = Fnv::new();
    for file in &files {
        if let Ok(bytes) = std::fs::read(file) {
            hash.write(
                file.strip_prefix(&root)
                    .unwrap_or(file)
                    .to_string_lossy()
                    .as_bytes(),
            );
            hash.write(&bytes);
        }
    }

    let build_epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|raw| raw.parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or(0)
        });

    println!("cargo:rustc-env=BANGER_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=BANGER_SOURCE_HASH={:016x}", hash.finish());
    println!("cargo:rustc-env=BANGER_BUILD_EPOCH={build_epoch}");
}

/// Source files that end up in binaries: tests, benches and examples are
/// skipped so that editing a test does not make the CLI and daemon disagree.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let skipped = matches!(
            entry.file_name().to_str(),
            Some("tests" | "benches" | "examples" | "fuzz")
        );
        match entry.file_type() {
            Ok(kind) if kind.is_dir() && !skipped => collect(&path, out),
            Ok(kind) if kind.is_file() => out.push(path),
            _ => {}
        }
    }
}

/// FNV-1a, 64 bit: stable across compilers, unlike `DefaultHasher`.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
