//! `make install-helper` / `make uninstall-helper` into a DESTDIR: the
//! binary in lib/banger and a system unit that systemd accepts. A DESTDIR
//! install touches no group and no running systemd.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/` and the profile this test's `banger-helper` was built in.
fn target_and_profile() -> (PathBuf, String) {
    let profile_dir = Path::new(env!("CARGO_BIN_EXE_banger-helper"))
        .parent()
        .unwrap()
        .to_owned();
    let profile = profile_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    (profile_dir.parent().unwrap().to_owned(), profile)
}

fn make(destdir: &Path, target: &str) -> std::process::Output {
    let (target_dir, profile) = target_and_profile();
    let output = Command::new("make")
        .arg("-C")
        .arg(repo_root())
        .arg(target)
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg("PREFIX=/usr")
        .arg(format!("PROFILE={profile}"))
        .arg(format!("TARGET_DIR={}", target_dir.display()))
        .arg("SKIP_BUILD=1")
        .arg("HELPER_GROUP=banger-helper-test-group")
        .output()
        .expect("run make");
    assert!(
        output.status.success(),
        "make {target} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn make_install_helper_installs_the_binary_and_a_valid_system_unit() {
    if !banger_testkit::have_or_skip(
        "make_install_helper_installs_the_binary_and_a_valid_system_unit",
        "make",
        "make",
    ) {
        return;
    }
    let dest = tempfile::tempdir().unwrap();
    make(dest.path(), "install-helper");
    let binary = dest.path().join("usr/lib/banger/banger-helper");
    let mode = std::fs::metadata(&binary).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    let unit_path = dest
        .path()
        .join("usr/lib/systemd/system/banger-helper.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert!(
        unit.contains(
            "ExecStart=/usr/lib/banger/banger-helper serve --socket /run/banger/helper.sock --group banger-helper-test-group --cache-dir /var/cache/banger-helper\n"
        ),
        "{unit}"
    );
    // Users' sim guests outlive a helper restart; their homes are written.
    assert!(unit.contains("\nKillMode=process\n"), "{unit}");
    assert!(!unit.contains("ProtectHome"), "{unit}");
    assert!(!unit.contains('@'), "{unit}");
    assert!(
        nix::unistd::Group::from_name("banger-helper-test-group")
            .unwrap()
            .is_none(),
        "a DESTDIR install creates no group"
    );

    if banger_testkit::have_or_skip(
        "make_install_helper_installs_the_binary_and_a_valid_system_unit (systemd-analyze verify)",
        "systemd-analyze",
        "systemd",
    ) {
        banger_testkit::units::verify_unit(
            dest.path(),
            "banger-helper.service",
            &unit,
            "/usr/lib/banger/banger-helper",
            false,
        )
        .unwrap_or_else(|problem| panic!("{problem}"));
    }

    make(dest.path(), "uninstall-helper");
    assert!(!binary.exists());
    assert!(!unit_path.exists());
}
