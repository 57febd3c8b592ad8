//! The command surface: help, unimplemented commands, completion, version.

use banger_testkit::TestEnv;

/// Every command path banger has (the README and `banger --help` list them).
const COMMANDS: &[&[&str]] = &[
    &["vm", "run"],
    &["vm", "create"],
    &["vm", "start"],
    &["vm", "stop"],
    &["vm", "restart"],
    &["vm", "delete"],
    &["vm", "kill"],
    &["vm", "set"],
    &["vm", "list"],
    &["vm", "show"],
    &["vm", "logs"],
    &["vm", "stats"],
    &["vm", "ssh"],
    &["vm", "health"],
    &["vm", "ports"],
    &["vm", "workspace", "prepare"],
    &["vm", "workspace", "export"],
    &["image", "pull"],
    &["image", "import"],
    &["image", "register"],
    &["image", "list"],
    &["image", "show"],
    &["image", "delete"],
    &["image", "promote"],
    &["image", "bootstrap"],
    &["kernel", "pull"],
    &["kernel", "import"],
    &["kernel", "list"],
    &["kernel", "show"],
    &["kernel", "rm"],
    &["kernel", "bootstrap"],
    &["doctor"],
    &["ssh-config"],
    &["daemon", "start"],
    &["daemon", "stop"],
    &["daemon", "status"],
    &["version"],
    &["completion"],
    &["update"],
];

#[test]
fn every_command_has_help() {
    let env = TestEnv::new();
    for path in COMMANDS {
        let mut args: Vec<&str> = path.to_vec();
        args.push("--help");
        let out = env.banger(&args);
        out.assert_success();
        assert!(
            out.stdout.starts_with(char::is_uppercase),
            "help for {path:?} lacks a summary:\n{out}"
        );
        assert!(out.stdout.contains("Usage: banger"), "{out}");
    }
    // Help never starts the daemon.
    assert!(env.daemon_pid().is_none());
}

#[test]
fn top_level_help_names_the_subsystems() {
    let out = TestEnv::new().banger(["--help"]);
    out.assert_success();
    for word in [
        "vm",
        "image",
        "kernel",
        "doctor",
        "ssh-config",
        "daemon",
        "version",
        "completion",
        "update",
    ] {
        assert!(out.stdout.contains(word), "--help lacks {word}:\n{out}");
    }
}

#[test]
fn usage_errors_exit_2_with_a_message() {
    let env = TestEnv::new();
    let out = env.banger(["vm", "run", "--from", "main", "."]);
    out.assert_code(2);
    assert!(out.stderr.contains("--branch"), "{out}");
    let out = env.banger(["vm", "create", "--disk-size", "8"]);
    out.assert_code(2);
    assert!(out.stderr.contains("8G"), "{out}");
}

#[test]
fn version_reports_commit_and_build_time() {
    let env = TestEnv::new();
    let out = env.banger(["version", "--json"]);
    out.assert_success();
    let version: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert!(version["commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(
        version["build_time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let text = env.banger(["version"]);
    assert!(text.stdout.contains("commit"), "{text}");
    let flag = env.banger(["--version"]);
    assert!(
        flag.stdout.contains(version["commit"].as_str().unwrap()),
        "{flag}"
    );
}

#[test]
fn create_help_shows_resolved_defaults_with_provenance() {
    let env = TestEnv::new();
    env.write_config("[vm_defaults]\nvcpu = 3\n");
    for command in ["run", "create"] {
        let out = env.banger(["vm", command, "--help"]);
        out.assert_success();
        assert!(out.stdout.contains("[default: 3 (config)]"), "{out}");
        assert!(out.stdout.contains("MiB [default: "), "{out}");
        assert!(
            out.stdout.contains("disk, e.g. 8G [default: 8G (builtin)]"),
            "{out}"
        );
    }
}
