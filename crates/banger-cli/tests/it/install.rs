//! `make install` / `make uninstall` into a DESTDIR, and the installed tree
//! at work: its banger runs and starts its own bangerd, which finds its
//! companions in lib/banger.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use banger_testkit::env::{Output, run};
use banger_testkit::sim::repo_root;
use banger_testkit::{SimEnv, TestEnv, binary, e2e_ready};

/// `target/` and the profile of the running tests' binaries.
fn target_and_profile() -> (PathBuf, String) {
    let profile_dir = binary("banger").parent().unwrap().to_owned();
    let profile = profile_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    (profile_dir.parent().unwrap().to_owned(), profile)
}

fn make(env: &TestEnv, destdir: &Path, target: &str) -> Output {
    let (target_dir, profile) = target_and_profile();
    let mut command = Command::new("make");
    command
        .arg("-C")
        .arg(repo_root())
        .arg(target)
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg("PREFIX=/usr")
        .arg(format!("PROFILE={profile}"))
        .arg(format!("TARGET_DIR={}", target_dir.display()))
        .arg("SKIP_BUILD=1")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap());
    for (key, value) in env.vars() {
        command.env(key, value);
    }
    run(command)
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn installed(env: &TestEnv, banger: &Path, args: &[&str]) -> Output {
    let template = env.command("banger");
    let mut command = Command::new(banger);
    command.env_clear();
    for (key, value) in template.get_envs() {
        if let Some(value) = value {
            command.env(key, value);
        }
    }
    command.args(args);
    run(command)
}

#[test]
fn make_install_lays_out_the_tree_and_it_works() {
    let env = TestEnv::new();
    let dest = env.root().join("dest");
    make(&env, &dest, "install").assert_success();
    let usr = dest.join("usr");
    let files = files_under(&usr);
    for expected in [
        "bin/banger",
        "bin/bangerd",
        "lib/banger/banger-vsock-agent",
        "lib/banger/banger-simvm",
        "lib/banger/banger-helper",
        "share/bash-completion/completions/banger",
        "share/zsh/site-functions/_banger",
        "share/fish/vendor_completions.d/banger.fish",
        "share/man/man1/banger.1",
        "share/man/man1/banger-vm-run.1",
        "share/man/man1/banger-ssh-config.1",
    ] {
        assert!(
            files.contains(&expected.to_owned()),
            "{expected} missing: {files:#?}"
        );
    }
    for binary in ["bin/banger", "bin/bangerd", "lib/banger/banger-vsock-agent"] {
        let mode = std::fs::metadata(usr.join(binary))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{binary}");
    }
    let zsh = std::fs::read_to_string(usr.join("share/zsh/site-functions/_banger")).unwrap();
    assert!(zsh.starts_with("#compdef banger"), "{zsh}");
    let man = std::fs::read_to_string(usr.join("share/man/man1/banger-vm-run.1")).unwrap();
    assert!(man.contains(".TH banger-vm-run 1"), "{man}");

    // The installed banger runs and starts the installed bangerd.
    let banger = usr.join("bin/banger");
    let version = installed(&env, &banger, &["version"]);
    version.assert_success();
    installed(&env, &banger, &["daemon", "start"]).assert_success();
    let pid = env.daemon_pid().expect("daemon running");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, usr.join("bin/bangerd"));

    // uninstall stops it, removes every file install put there, and says
    // where the data stays.
    let out = make(&env, &dest, "uninstall");
    out.assert_success();
    assert!(env.daemon_pid().is_none(), "{out}");
    assert_eq!(files_under(&usr), Vec::<String>::new(), "{out}");
    assert!(out.stdout.contains("state"), "{out}");
    assert!(
        out.stdout
            .contains(&env.layout.state_dir.display().to_string()),
        "{out}"
    );
    // The data is still there.
    assert!(env.layout.database().is_file());
}

#[test]
fn make_install_systemd_user_unit() {
    let env = TestEnv::new();
    let dest = env.root().join("dest");
    make(&env, &dest, "install-systemd-user").assert_success();
    let unit = std::fs::read_to_string(dest.join("usr/lib/systemd/user/bangerd.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/bangerd\n"), "{unit}");
    assert!(!unit.contains('@'), "{unit}");
    if banger_testkit::have_or_skip(
        "make_install_systemd_user_unit (systemd-analyze verify)",
        "systemd-analyze",
        "systemd",
    ) {
        banger_testkit::units::verify_unit(
            env.root(),
            "bangerd.service",
            &unit,
            "/usr/bin/bangerd",
            true,
        )
        .unwrap_or_else(|problem| panic!("{problem}"));
    }
}

/// The installed tree end to end: bangerd finds the agent (image import
/// injects it) and banger-simvm (a sim VM boots) in lib/banger.
#[test]
fn installed_daemon_finds_its_companions() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    let dest = sim.env.root().join("dest");
    make(&sim.env, &dest, "install").assert_success();
    let banger = dest.join("usr/bin/banger");
    let rootfs = banger_testkit::sim::fixture_rootfs();
    let import = sim.exec(
        &banger,
        [
            "image",
            "import",
            &rootfs.to_string_lossy(),
            "--name",
            "debian",
        ],
    );
    assert!(import.success(), "{import}\n{}", sim.diagnostics());
    let create = sim.exec(&banger, ["vm", "create", "--name", "inst"]);
    assert!(create.success(), "{create}\n{}", sim.diagnostics());
    let pid = sim.env.daemon_pid().unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, dest.join("usr/bin/bangerd"));
    let simvm = dest.join("usr/lib/banger/banger-simvm");
    let vmm = sim
        .vmm_processes()
        .into_iter()
        .filter_map(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
        .any(|exe| exe == simvm);
    assert!(vmm, "the VM does not run the installed banger-simvm");
    assert!(sim.exec(&banger, ["vm", "delete", "inst"]).success());
    sim.assert_clean();
}

/// `make deb`: one package with everything `sudo make install` installs,
/// installed into a Debian root (the test fixture's) with dpkg, where its
/// postinst creates the group, the installed banger runs, and purging takes
/// files and group away again.
#[test]
fn make_deb_installs_and_purges_in_a_debian_root() {
    let env = TestEnv::new();
    let (target_dir, profile) = target_and_profile();
    let deb = env.root().join("banger.deb");
    let mut command = Command::new("make");
    command
        .arg("-C")
        .arg(repo_root())
        .arg("deb")
        .arg(format!("PROFILE={profile}"))
        .arg(format!("TARGET_DIR={}", target_dir.display()))
        .arg(format!("DEB_OUT={}", deb.display()))
        .arg(format!(
            "DEB_ROOT={}",
            env.root().join("deb-root").display()
        ))
        .arg("DEB_COMPRESS=none")
        .arg("SKIP_BUILD=1")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap());
    for (key, value) in env.vars() {
        command.env(key, value);
    }
    run(command).assert_success();
    let field = |name: &str| {
        let out = run({
            let mut command = Command::new("dpkg-deb");
            command.arg("--field").arg(&deb).arg(name);
            command
        });
        out.assert_success();
        out.stdout.trim().to_owned()
    };
    assert_eq!(field("Package"), "banger");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    assert!(field("Depends").contains("e2fsprogs"));

    if !banger_testkit::root_or_skip(
        "make_deb_installs_and_purges_in_a_debian_root",
        "dpkg --root and chroot",
    ) {
        return;
    }
    let fixture = banger_testkit::sim::fixture_rootfs();
    if !fixture.is_dir() {
        banger_testkit::skip(
            "make_deb_installs_and_purges_in_a_debian_root",
            "the Debian fixture is not built (tests/fixtures/debian-rootfs.sh)",
            banger_testkit::Prerequisite::ProvidedByCi,
        );
        return;
    }
    let root = env.root().join("debian");
    let copy = run({
        let mut command = Command::new("cp");
        command.arg("-a").arg(&fixture).arg(&root);
        command
    });
    copy.assert_success();
    let dpkg = |args: &[&str]| {
        let mut command = Command::new("dpkg");
        command.arg(format!("--root={}", root.display())).args(args);
        run(command)
    };
    // The fixture is minimal (no iptables): install the files regardless.
    let out = dpkg(&["--force-depends", "-i", deb.to_str().unwrap()]);
    out.assert_success();
    assert!(out.stdout.contains("usermod -aG banger"), "{out}");
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(
        group.lines().any(|line| line.starts_with("banger:")),
        "{group}"
    );
    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/banger-helper.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/lib/banger/banger-helper serve"),
        "{unit}"
    );
    for file in [
        "usr/bin/banger",
        "usr/bin/bangerd",
        "usr/lib/banger/banger-vsock-agent",
        "usr/lib/banger/banger-simvm",
        "usr/share/man/man1/banger-vm-run.1",
    ] {
        assert!(root.join(file).is_file(), "{file} missing");
    }
    let version = run({
        let mut command = Command::new("chroot");
        command.arg(&root).args(["/usr/bin/banger", "version"]);
        command
    });
    version.assert_success();
    assert!(version.stdout.starts_with("banger "), "{version}");

    dpkg(&["--purge", "banger"]).assert_success();
    assert!(!root.join("usr/bin/banger").exists());
    assert!(
        !root
            .join("usr/lib/systemd/system/banger-helper.service")
            .exists()
    );
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(
        !group.lines().any(|line| line.starts_with("banger:")),
        "{group}"
    );
}
