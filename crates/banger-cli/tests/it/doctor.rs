//! `banger doctor` for real on this machine, through the real daemon.

use banger_testkit::TestEnv;
use banger_testkit::env::chown_tree;
use serde_json::Value;

fn doctor_json(env: &TestEnv) -> (Option<i32>, Value) {
    let out = env.banger(["doctor", "--json"]);
    let value: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|err| panic!("doctor --json is not JSON ({err}):\n{out}"));
    (out.code, value)
}

fn status<'a>(report: &'a Value, name: &str) -> &'a str {
    check(report, name)["status"].as_str().unwrap()
}

#[test]
fn doctor_runs_every_check_through_the_daemon() {
    let env = TestEnv::new();
    let (code, report) = doctor_json(&env);
    let checks = report["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for name in [
        "daemon",
        "arch",
        "vmm",
        "kvm",
        "vhost-vsock",
        "firecracker",
        "tools",
        "privileges",
        "disk-space",
        "vm-defaults",
        "storage",
        "default-image",
        "dns",
        "dns-routing",
        "vm-resolution",
        "ssh-config",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let mut fails = 0;
    for check in checks {
        let status = check["status"].as_str().unwrap();
        assert!(["pass", "warn", "fail"].contains(&status), "{check}");
        assert!(!check["detail"].as_str().unwrap().is_empty(), "{check}");
        assert_eq!(status == "pass", check.get("fix").is_none(), "{check}");
        fails += usize::from(status == "fail");
    }
    assert_eq!(report["summary"]["fail"], fails);
    assert_eq!(report["ok"], fails == 0);
    assert_eq!(code, Some(if fails == 0 { 0 } else { 1 }), "{report:#}");

    // What must hold on the test machines.
    for name in [
        "daemon",
        "arch",
        "tools",
        "vm-defaults",
        "dns",
        "dns-routing",
    ] {
        assert_eq!(status(&report, name), "pass", "{report:#}");
    }
    if nix::unistd::geteuid().is_root() {
        assert_eq!(status(&report, "privileges"), "pass", "{report:#}");
    }
    // A fresh world has no image and no Include.
    assert_eq!(status(&report, "default-image"), "warn");
    assert_eq!(status(&report, "ssh-config"), "warn");

    // The text form: one line per check, each non-pass followed by its fix.
    let out = env.banger(["doctor"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let fixes = checks.iter().filter(|c| c.get("fix").is_some()).count();
    assert_eq!(lines.len(), checks.len() + fixes, "{out}");
    assert!(lines[0].starts_with("pass  daemon"), "{out}");
    assert!(
        out.stderr.contains(&format!("{} checks", checks.len())),
        "{out}"
    );
}

#[test]
fn sim_is_called_out_and_installing_the_include_passes() {
    let env = TestEnv::new();
    env.write_config("vmm = \"sim\"\n");
    env.banger(["ssh-config", "--install"]).assert_success();
    let (_, report) = doctor_json(&env);
    assert_eq!(status(&report, "vmm"), "warn");
    let vmm = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "vmm")
        .unwrap();
    assert!(
        vmm["detail"]
            .as_str()
            .unwrap()
            .contains("NOT under a hypervisor"),
        "{vmm}"
    );
    assert_eq!(status(&report, "ssh-config"), "pass");
}

#[test]
fn without_a_daemon_the_cli_runs_the_host_checks_itself() {
    let env = TestEnv::new();
    env.write_config("no_such_key = 1\n");
    let (code, report) = doctor_json(&env);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(status(&report, "daemon"), "fail");
    assert_eq!(status(&report, "config"), "fail");
    // The host checks still ran, in the CLI.
    assert_eq!(status(&report, "arch"), "pass");
    assert_eq!(status(&report, "tools"), "pass");
    assert!(env.daemon_pid().is_none());
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check: {report:#}"))
}

/// A user who once ran `sudo -E banger …` has root's files in their own
/// state dir. Their own daemon refuses to start, naming the files and the
/// one command that gives them back; doctor says the same; after that
/// command, both are content.
#[test]
fn files_root_left_in_a_users_dirs_are_named_with_the_chown_that_fixes_them() {
    if !banger_testkit::root_or_skip(
        "files_root_left_in_a_users_dirs_are_named_with_the_chown_that_fixes_them",
        "acting as root, then as another uid",
    ) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let env = TestEnv::new();
    // The root daemon's era: state, database and key made by root.
    env.banger(["daemon", "start"]).assert_success();
    env.banger(["daemon", "stop"]).assert_success();
    let state = env.layout.state_dir.clone();
    assert!(env.layout.database().exists());
    // The user's own world, except what root left in the state dir.
    std::fs::set_permissions(env.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    chown_tree(env.root(), NOBODY, NOBODY);
    chown_tree(&state, 0, 0);
    let as_user = |args: &[&str]| {
        let mut command = env.command("banger");
        command.args(args).uid(NOBODY).gid(NOBODY);
        banger_testkit::env::run(command)
    };
    let fix = format!("sudo chown -R nobody: {}", state.display());

    let out = as_user(&["vm", "list"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "e.g. {} (uid 0); {} cannot be read in banger's directories, and this daemon \
             runs as uid {NOBODY}",
            state.display(),
            state.display()
        )),
        "{out}"
    );
    assert!(out.stderr.contains(&fix), "{out}");
    assert_eq!(env.daemon_pid(), None);

    let out = as_user(&["doctor", "--json"]);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    let ownership = check(&report, "ownership");
    assert_eq!(ownership["status"], "fail", "{report:#}");
    assert!(
        ownership["fix"].as_str().unwrap().contains(&fix),
        "{ownership}"
    );

    // The fix, as the hint says (the test is root already).
    chown_tree(&state, NOBODY, NOBODY);
    let out = as_user(&["doctor", "--json"]);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(check(&report, "ownership")["status"], "pass", "{report:#}");
}
