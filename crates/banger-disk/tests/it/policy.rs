//! Process spawning stays in files named `exec.rs`.

use std::path::Path;

fn visit(dir: &Path, offenders: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, offenders);
        } else if path.extension().is_some_and(|ext| ext == "rs")
            && path.file_name().is_some_and(|name| name != "exec.rs")
            && std::fs::read_to_string(&path)
                .unwrap()
                .contains(concat!("Command", "::new"))
        {
            offenders.push(path.display().to_string());
        }
    }
}

#[test]
fn only_exec_modules_spawn_processes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut offenders = Vec::new();
    visit(&root.join("src"), &mut offenders);
    visit(&root.join("examples"), &mut offenders);
    assert!(
        offenders.is_empty(),
        "spawning outside exec.rs: {offenders:?}"
    );
}
