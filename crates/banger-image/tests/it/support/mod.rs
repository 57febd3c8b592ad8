//! Shared test helpers.

pub(crate) mod registry;
pub(crate) mod server;
pub(crate) mod tarball;

use std::path::Path;

/// Whether the test runs as root; prints why it skips otherwise.
pub(crate) fn root_or_skip(test: &str) -> bool {
    banger_testkit::root_or_skip(test, "ownership, device nodes, xattrs")
}

/// Every path under `dir`, relative, sorted (symlinks not followed).
pub(crate) fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let path = entry.path();
            out.push(path.strip_prefix(dir).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A sandbox: `<tmp>/staging` (not created) next to `<tmp>/sentinel/`
/// holding one file; `untouched()` checks that nothing but the staging
/// directory appeared or changed.
pub(crate) struct Sandbox {
    pub(crate) dir: tempfile::TempDir,
}

impl Sandbox {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sentinel")).unwrap();
        std::fs::write(dir.path().join("sentinel/canary"), b"canary").unwrap();
        Self { dir }
    }

    pub(crate) fn staging(&self) -> std::path::PathBuf {
        self.dir.path().join("staging")
    }

    pub(crate) fn sentinel(&self) -> std::path::PathBuf {
        self.dir.path().join("sentinel")
    }

    /// Nothing outside `staging` was created or changed.
    pub(crate) fn assert_untouched(&self) {
        let outside: Vec<String> = tree(self.dir.path())
            .into_iter()
            .filter(|path| path != "staging" && !path.starts_with("staging/"))
            .collect();
        assert_eq!(
            outside,
            vec!["sentinel".to_owned(), "sentinel/canary".to_owned()],
            "something was written outside staging"
        );
        assert_eq!(
            std::fs::read(self.sentinel().join("canary")).unwrap(),
            b"canary"
        );
    }
}
