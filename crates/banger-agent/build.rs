//! Links `banger-vsock-agent` statically (static-pie, glibc) in a plain
//! `cargo build`, without touching how any other crate or target links.
//!
//! `-C target-feature=+crt-static` cannot be set per crate from a build
//! script, and `-static-pie` alone is not enough: rustc still asks for
//! `-Bdynamic -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc`, and the linker
//! would pick the shared objects. So this script makes a directory that the
//! bin's link searches first, holding only static archives under those names:
//! - `libgcc_s.a`: an empty archive (the unwinder comes from `libgcc_eh.a`),
//! - `libc.a`: a linker script grouping glibc's `libc.a` with `libgcc_eh.a`
//!   and `libgcc.a` (what rustc itself links for crt-static),
//! - `libm.a`, `librt.a`, ...: links to glibc's static archives,
//!
//! and adds `-static-pie` to the bin's link line. When the static archives
//! are missing (no libc6-dev), the agent links dynamically and the build says
//! so in a warning; the agent's `static_binary` test then fails.

use std::path::{Path, PathBuf};
use std::process::Command;

const PASSTHROUGH: &[&str] = &["libm.a", "librt.a", "libpthread.a", "libdl.a", "libutil.a"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=BANGER_AGENT_DYNAMIC");
    if std::env::var_os("BANGER_AGENT_DYNAMIC").is_some() {
        println!("cargo:warning=BANGER_AGENT_DYNAMIC is set: banger-vsock-agent links dynamically");
        return;
    }
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.ends_with("-linux-gnu") {
        // musl targets link statically already; other targets are not guests.
        return;
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    match prepare(&out_dir.join("static-libs")) {
        Ok(dir) => {
            println!("cargo:rustc-link-arg-bins=-L{}", dir.display());
            println!("cargo:rustc-link-arg-bins=-static-pie");
        }
        Err(reason) => println!(
            "cargo:warning=banger-vsock-agent will be dynamically linked: {reason} (install libc6-dev)"
        ),
    }
}

fn prepare(dir: &Path) -> Result<PathBuf, String> {
    let libc = locate("libc.a")?;
    let gcc_eh = locate("libgcc_eh.a")?;
    let gcc = locate("libgcc.a")?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let write = |name: &str, contents: String| {
        let path = dir.join(name);
        std::fs::write(&path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    write("libgcc_s.a", "!<arch>\n".to_owned())?;
    write(
        "libc.a",
        format!(
            "GROUP ( {} {} {} )\n",
            libc.display(),
            gcc_eh.display(),
            gcc.display()
        ),
    )?;
    for name in PASSTHROUGH {
        let archive = locate(name)?;
        let link = dir.join(name);
        std::os::unix::fs::symlink(&archive, &link)
            .map_err(|e| format!("linking {} to {}: {e}", link.display(), archive.display()))?;
    }
    Ok(dir.to_owned())
}

/// Where the C compiler (rustc's linker driver) finds a static archive.
fn locate(name: &str) -> Result<PathBuf, String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let output = Command::new(&cc)
        .arg(format!("-print-file-name={name}"))
        .output()
        .map_err(|e| format!("running {cc}: {e}"))?;
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if output.status.success() && path.is_absolute() && path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
        Ok(path)
    } else {
        Err(format!("{cc} does not know a static {name}"))
    }
}
