//! Workspace input that must be refused before a VM exists.

use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use banger_testkit::TestEnv;
use banger_testkit::env::{chown_tree, run};

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// A user's checkout with a file only root can read (a key someone copied
/// in with sudo): `vm run` names it and creates nothing — no daemon, no VM.
#[test]
fn an_unreadable_file_is_refused_before_any_vm_exists() {
    let env = TestEnv::new();
    let repo = env.root().join("project");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("main.c"), "int main;\n").unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "init"]);
    let secret = repo.join("deploy.key");
    std::fs::write(&secret, "private").unwrap();

    let mut command = env.command("banger");
    command
        .args(["vm", "run", "--rm"])
        .arg(&repo)
        .args(["--", "true"]);
    if nix::unistd::geteuid().is_root() {
        // Root reads everything: run as an ordinary user who owns the
        // checkout and the test world, except for the key.
        const NOBODY: u32 = 65534;
        std::fs::set_permissions(env.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
        chown_tree(env.root(), NOBODY, NOBODY);
        chown(&secret, Some(0), Some(0)).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        command.uid(NOBODY).gid(NOBODY);
    } else {
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let out = run(command);
    out.assert_code(1);
    assert!(
        out.stderr.contains(&format!(
            "cannot read {}; make it readable (chmod) or add it to .gitignore",
            secret.display()
        )),
        "{out}"
    );
    assert!(!out.stderr.contains("spec:"), "got as far as a VM:\n{out}");
    assert_eq!(env.daemon_pid(), None, "a daemon was started:\n{out}");
    assert!(!env.layout.state_dir.join("vms").exists());
}

/// A checkout another user owns: git's own guard refuses it, and banger
/// says so with git's fix instead of calling it "not a repository" (once
/// trusted it is copied: e2e_workspace).
#[test]
fn a_repository_of_another_user_is_named_with_gits_fix() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to give the checkout to another user");
        return;
    }
    let env = TestEnv::new();
    let repo = env.root().join("theirs");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("main.c"), "int main;\n").unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "init"]);
    chown_tree(&repo, 65534, 65534);

    let mut command = env.command("banger");
    command
        .args(["vm", "run", "--rm"])
        .arg(&repo)
        .args(["--", "true"]);
    let out = run(command);
    out.assert_code(1);
    assert!(
        out.stderr.contains(&format!(
            "git refuses {}: it belongs to another user; if you trust it, `git config --global --add safe.directory {}`",
            repo.display(),
            repo.display()
        )),
        "{out}"
    );
    assert_eq!(env.daemon_pid(), None, "a daemon was started:\n{out}");
}
