//! Processes are started only by `banger-exec` (plus tests, build scripts,
//! examples and this harness): every other crate goes through its `Cmd`,
//! so every program banger starts gets argv (never a shell string), one
//! error type and one PATH lookup. This test keeps it so.

use std::path::{Path, PathBuf};

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            // Integration tests, benches and examples may spawn freely.
            let name = path.file_name().unwrap().to_string_lossy();
            if !matches!(name.as_ref(), "tests" | "benches" | "examples" | "target") {
                rust_sources(&path, out);
            }
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The part of a source file before its `#[cfg(test)]` module.
fn non_test_part(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |at| &text[..at])
}

#[test]
fn only_banger_exec_spawns_processes() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for krate in std::fs::read_dir(&crates).unwrap() {
        let krate = krate.unwrap().path();
        // banger-exec is the one place; the test harness exists to run
        // programs.
        if krate
            .file_name()
            .is_some_and(|name| name == "banger-exec" || name == "banger-testkit")
        {
            continue;
        }
        let src = krate.join("src");
        if src.is_dir() {
            rust_sources(&src, &mut files);
        }
    }
    assert!(
        files.len() > 10,
        "found too few sources under {}",
        crates.display()
    );
    let patterns = [
        "Command::new(",
        "process::Command",
        "Command::from(",
        "CommandExt",
        "unistd::fork",
        "libc::fork",
        "execv",
        "posix_spawn",
    ];
    let mut offenders = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for pattern in patterns {
            if non_test_part(&text).contains(pattern) {
                offenders.push(format!("{} uses {pattern}", file.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "process spawning outside banger-exec (use banger_exec::Cmd):\n{}",
        offenders.join("\n")
    );
}
