//! Process spawning goes through `banger-exec`: no `Command` of std's or
//! tokio's in this crate's sources (examples may spawn freely). The
//! workspace-wide rule is `banger-testkit/tests/policy.rs`.

use std::path::Path;

fn visit(dir: &Path, offenders: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, offenders);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests may run host tools to check results.
            let code = text
                .find("#[cfg(test)]")
                .map_or(&text[..], |at| &text[..at]);
            if code.contains(concat!("Command", "::new")) || code.contains("process::Command") {
                offenders.push(path.display().to_string());
            }
        }
    }
}

#[test]
fn only_banger_exec_spawns_processes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut offenders = Vec::new();
    visit(&root.join("src"), &mut offenders);
    assert!(
        offenders.is_empty(),
        "spawning outside banger-exec: {offenders:?}"
    );
}
