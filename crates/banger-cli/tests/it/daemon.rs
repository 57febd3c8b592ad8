//! Daemon lifecycle driven through the CLI.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use banger_testkit::TestEnv;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"))
}

#[test]
fn first_command_starts_the_daemon_with_a_private_socket() {
    let env = TestEnv::new();
    assert!(env.daemon_pid().is_none());
    let out = env.banger(["vm", "list", "--json"]);
    out.assert_success();
    assert_eq!(json(&out.stdout), serde_json::json!([]));
    assert!(env.daemon_pid().is_some(), "no daemon after first command");

    let socket = std::fs::metadata(env.layout.socket()).unwrap();
    assert_eq!(socket.permissions().mode() & 0o777, 0o600);
    let runtime = std::fs::metadata(&env.layout.runtime_dir).unwrap();
    assert_eq!(runtime.permissions().mode() & 0o777, 0o700);
    assert!(env.layout.database().is_file());
    let log = env.daemon_log();
    assert!(
        log.lines()
            .all(|line| serde_json::from_str::<serde_json::Value>(line).is_ok()),
        "{log}"
    );
    assert!(log.contains("bangerd started"), "{log}");
}

#[test]
fn concurrent_first_commands_share_one_daemon() {
    let env = TestEnv::new();
    let children: Vec<_> = (0..8)
        .map(|_| {
            let mut command = env.command("banger");
            command
                .args(["vm", "list", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            command.spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a concurrent CLI failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let starts = env.daemon_log().matches("bangerd started").count();
    assert_eq!(
        starts,
        1,
        "expected exactly one daemon start:\n{}",
        env.daemon_log()
    );
}

#[test]
fn a_daemon_from_another_build_is_restarted() {
    let env = TestEnv::new();
    let mut old = env.command("bangerd");
    old.env("BANGER_FAKE_BUILD_ID", "0.0.0-old")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut old = old.spawn().unwrap();
    env.wait_for("the old daemon's socket", Duration::from_secs(10), || {
        env.layout.socket().exists()
    });
    let old_pid = old.id() as i32;

    // `daemon status` never restarts: it reports the running build.
    let status = env.banger(["daemon", "status", "--json"]);
    status.assert_success();
    assert_eq!(json(&status.stdout)["build"]["build_id"], "0.0.0-old");

    let out = env.banger(["vm", "list"]);
    out.assert_success();
    assert!(out.stderr.contains("restarting bangerd"), "{out}");
    old.wait().unwrap();

    let status = env.banger(["daemon", "status", "--json"]);
    let version = env.banger(["version", "--json"]);
    let status = json(&status.stdout);
    assert_eq!(
        status["build"]["build_id"],
        json(&version.stdout)["build_id"]
    );
    assert_ne!(status["pid"].as_i64(), Some(i64::from(old_pid)));
}

#[test]
fn status_start_and_stop() {
    let env = TestEnv::new();
    let out = env.banger(["daemon", "status"]);
    out.assert_code(3);
    assert!(out.stdout.contains("not running"), "{out}");
    assert_eq!(
        json(&env.banger(["daemon", "status", "--json"]).stdout)["running"],
        false
    );

    env.banger(["daemon", "start"]).assert_success();
    let pid = env.daemon_pid().expect("daemon running after start");
    let out = env.banger(["daemon", "status"]);
    out.assert_success();
    assert!(
        out.stdout.contains(&format!("running (pid {pid})")),
        "{out}"
    );
    assert!(out.stdout.contains("commit"), "{out}");
    assert!(
        out.stdout
            .contains(&env.layout.daemon_log().display().to_string()),
        "{out}"
    );

    // Starting again is a no-op on the same daemon.
    env.banger(["daemon", "start"]).assert_success();
    assert_eq!(env.daemon_pid(), Some(pid));

    let out = env.banger(["daemon", "stop"]);
    out.assert_success();
    assert!(out.stderr.contains("bangerd stopped"), "{out}");
    assert!(env.daemon_pid().is_none());
    assert!(!env.layout.socket().exists(), "socket left behind");
    let out = env.banger(["daemon", "stop"]);
    out.assert_success();
    assert!(out.stderr.contains("not running"), "{out}");
}

#[test]
fn a_second_daemon_refuses_to_start() {
    let env = TestEnv::new();
    env.banger(["daemon", "start"]).assert_success();
    let pid = env.daemon_pid().unwrap();
    let out = banger_testkit::env::run(env.command("bangerd"));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains(&format!("already running (pid {pid})")),
        "{out}"
    );
    // The first daemon is unharmed.
    env.banger(["vm", "list"]).assert_success();
}

#[test]
fn a_bad_config_is_reported_with_its_key() {
    let env = TestEnv::new();
    env.write_config("[vm_defaults]\nvcpus = 3\n");
    let out = env.banger(["vm", "list"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("vcpus"), "{out}");
    assert!(out.stderr.contains("config.toml"), "{out}");
    assert!(env.daemon_pid().is_none());
}

/// An edited config.toml takes effect at the next command (the daemon is
/// restarted to read it); an edit that does not parse is reported naming
/// the key, and the running daemon keeps its config.
#[test]
fn an_edited_config_applies_at_the_next_command() {
    let env = TestEnv::new();
    env.banger(["vm", "list"]).assert_success();
    let first = env.daemon_pid().expect("daemon running");
    let status = json(&env.banger(["daemon", "status", "--json"]).stdout);
    assert_eq!(status["log_level"], "info");

    env.write_config("log_level = \"debug\"\n");
    let out = env.banger(["vm", "list"]);
    out.assert_success();
    assert!(out.stderr.contains("changed; restarting bangerd"), "{out}");
    let second = env.daemon_pid().expect("daemon running");
    assert_ne!(first, second);
    let status = json(&env.banger(["daemon", "status", "--json"]).stdout);
    assert_eq!(status["log_level"], "debug");
    // Unchanged: no restart.
    let out = env.banger(["vm", "list"]);
    assert!(!out.stderr.contains("restarting"), "{out}");
    assert_eq!(env.daemon_pid(), Some(second));

    env.write_config("log_level = \"debug\"\nvmm = \"nope\"\n");
    let out = env.banger(["vm", "list"]);
    out.assert_code(1);
    assert!(out.stderr.contains("vmm"), "{out}");
    assert!(
        out.stderr.contains("keeps the config it read before"),
        "{out}"
    );
    assert_eq!(env.daemon_pid(), Some(second), "the daemon was stopped");
}

#[test]
fn dns_is_served_from_the_start_and_shown_in_status() {
    let env = TestEnv::new();
    env.banger(["daemon", "start"]).assert_success();
    let status = json(&env.banger(["daemon", "status", "--json"]).stdout);
    let listeners = status["dns_listeners"].as_array().expect("listeners");
    assert_eq!(listeners.len(), 2, "{status}");
    let udp = listeners[0]
        .as_str()
        .unwrap()
        .strip_prefix("udp://")
        .unwrap()
        .to_owned();
    let (host, port) = udp.rsplit_once(':').unwrap();
    let out = std::process::Command::new("dig")
        .args([
            &format!("@{host}"),
            "-p",
            port,
            "+short",
            "+time=2",
            "+tries=1",
            "nobody.vm",
            "A",
        ])
        .output()
        .expect("dig is installed by scripts/install-deps.sh");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "unknown names have no answer"
    );
    let text = env.banger(["daemon", "status"]);
    assert!(text.stdout.contains(&format!("udp://{udp}")), "{text}");
}
