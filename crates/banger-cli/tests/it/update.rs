//! `banger update` end to end: an installed tree (bin/ and lib/banger/), a
//! release served over HTTP on loopback and signed with a key made for the
//! test (trusted through the debug-build override), the installed daemon.

use std::path::PathBuf;

use banger_testkit::env::{Output, run};
use banger_testkit::http::{Route, StaticServer};
use banger_testkit::release::{TEST_KEY_ENV, TestKey, publish};
use banger_testkit::{TestEnv, binary};

const BIN: &[&str] = &["banger", "bangerd"];
const LIB: &[&str] = &["banger-vsock-agent", "banger-simvm"];

/// A prefix with the workspace's binaries installed like `make install`.
struct Installed {
    _dir: tempfile::TempDir,
    prefix: PathBuf,
}

impl Installed {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bu")
            .tempdir_in("/tmp")
            .unwrap();
        let prefix = dir.path().to_owned();
        for (names, sub) in [(BIN, "bin"), (LIB, "lib/banger")] {
            std::fs::create_dir_all(prefix.join(sub)).unwrap();
            for name in names {
                std::fs::copy(binary(name), prefix.join(sub).join(name)).unwrap();
            }
        }
        Self { _dir: dir, prefix }
    }

    fn path(&self, name: &str) -> PathBuf {
        if BIN.contains(&name) {
            self.prefix.join("bin").join(name)
        } else {
            self.prefix.join("lib/banger").join(name)
        }
    }

    fn snapshot(&self) -> Vec<Vec<u8>> {
        BIN.iter()
            .chain(LIB)
            .map(|name| std::fs::read(self.path(name)).unwrap())
            .collect()
    }

    /// Runs the installed banger in `env`, trusting `key`.
    fn banger(&self, env: &TestEnv, key: &TestKey, args: &[&str]) -> Output {
        // `env.command` is the workspace binary with the world's environment;
        // run the installed one with that environment instead.
        let template = env.command("banger");
        let mut command = std::process::Command::new(self.path("banger"));
        command.env_clear();
        for (name, value) in template.get_envs() {
            if let Some(value) = value {
                command.env(name, value);
            }
        }
        command.env(TEST_KEY_ENV, &key.public_base64).args(args);
        run(command)
    }
}

/// This build's version with the patch number moved by `delta`.
fn version_plus(delta: i64) -> String {
    let current = env!("CARGO_PKG_VERSION");
    let mut parts: Vec<i64> = current.split('.').map(|p| p.parse().unwrap()).collect();
    parts[2] += delta;
    if parts[2] < 0 {
        parts[1] -= 1;
        parts[2] = 99;
    }
    format!("{}.{}.{}", parts[0], parts[1], parts[2])
}

/// The release binaries: the real ones with a marker appended (an ELF
/// runs the same with trailing bytes), so a swapped file is recognisable.
fn release_binaries(marker: &str) -> Vec<(&'static str, Vec<u8>)> {
    BIN.iter()
        .chain(LIB)
        .map(|name| {
            let mut bytes = std::fs::read(binary(name)).unwrap();
            bytes.extend_from_slice(format!("\n{marker} {name}\n").as_bytes());
            (*name, bytes)
        })
        .collect()
}

fn serve(server: &StaticServer, key: &TestKey, version: &str, binaries: &[(&str, Vec<u8>)]) {
    let refs: Vec<(&str, &[u8])> = binaries.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    publish(server, key, version, &refs);
}

fn world(server: &StaticServer) -> TestEnv {
    let env = TestEnv::new();
    env.write_config(&format!("update_url = \"{}\"\n", server.url()));
    env
}

#[test]
fn a_signed_newer_release_is_installed_and_the_daemon_restarted() {
    let server = StaticServer::new();
    let key = TestKey::new();
    let env = world(&server);
    let installed = Installed::new();
    let new = version_plus(1);
    let binaries = release_binaries("release-marker");
    serve(&server, &key, &new, &binaries);

    installed
        .banger(&env, &key, &["daemon", "start"])
        .assert_success();
    let before = env.daemon_pid().expect("daemon running");

    let check = installed.banger(&env, &key, &["update", "--check"]);
    check.assert_success();
    assert!(
        check.stdout.contains(&format!("banger {new} is available")),
        "{check}"
    );
    assert!(
        !server
            .requests()
            .iter()
            .any(|path| path.starts_with("/files/"))
    );

    let out = installed.banger(&env, &key, &["update"]);
    out.assert_success();
    assert!(out.stdout.contains(&format!("-> {new}")), "{out}");
    for (name, bytes) in &binaries {
        assert!(
            std::fs::read(installed.path(name)).unwrap() == *bytes,
            "{name} was not replaced\n{out}"
        );
    }
    // No staging or backup files left beside the binaries.
    for dir in ["bin", "lib/banger"] {
        for entry in std::fs::read_dir(installed.prefix.join(dir)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "{dir}/{name} left behind");
        }
    }
    // The daemon was restarted from the new binaries.
    let after = env.daemon_pid().expect("daemon running after the update");
    assert_ne!(before, after, "{out}");
    let exe = std::fs::read_link(format!("/proc/{after}/exe")).unwrap();
    assert_eq!(exe, installed.path("bangerd"));
    installed
        .banger(&env, &key, &["daemon", "status"])
        .assert_success();
    installed.banger(&env, &key, &["version"]).assert_success();
}

#[test]
fn the_same_version_is_up_to_date() {
    let server = StaticServer::new();
    let key = TestKey::new();
    let env = world(&server);
    let installed = Installed::new();
    serve(&server, &key, &version_plus(0), &release_binaries("same"));
    let before = installed.snapshot();
    let out = installed.banger(&env, &key, &["update"]);
    out.assert_success();
    assert!(out.stdout.contains("up to date"), "{out}");
    assert!(installed.snapshot() == before);
    assert!(
        !server
            .requests()
            .iter()
            .any(|path| path.starts_with("/files/"))
    );
}

/// Every refusal leaves the install byte for byte as it was, and the
/// daemon untouched.
#[test]
fn bad_releases_are_refused_and_nothing_is_replaced() {
    let server = StaticServer::new();
    let key = TestKey::new();
    let env = world(&server);
    let installed = Installed::new();
    installed
        .banger(&env, &key, &["daemon", "start"])
        .assert_success();
    let pid = env.daemon_pid().unwrap();
    let before = installed.snapshot();
    let new = version_plus(1);
    let small: Vec<(&str, Vec<u8>)> = BIN
        .iter()
        .chain(LIB)
        .map(|name| (*name, format!("new {name}").into_bytes()))
        .collect();

    type Case<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "signed by another key",
            Box::new(|| serve(&server, &TestKey::new(), &new, &small)),
            "does not verify against banger's release key",
        ),
        (
            "manifest changed after signing",
            Box::new(|| {
                serve(&server, &key, &new, &small);
                let forged = banger_testkit::release::manifest(
                    &version_plus(7),
                    &banger_testkit::release::this_target(),
                    &small
                        .iter()
                        .map(|(n, b)| (*n, b.as_slice()))
                        .collect::<Vec<_>>(),
                );
                server.route("/manifest.json", Route::Body(forged));
            }),
            "does not verify",
        ),
        (
            "truncated binary",
            Box::new(|| {
                serve(&server, &key, &new, &small);
                server.route("/files/bangerd", Route::Body(b"new".to_vec()));
            }),
            "truncated",
        ),
        (
            "connection cut mid-download",
            Box::new(|| {
                serve(&server, &key, &new, &small);
                server.route(
                    "/files/banger-simvm",
                    Route::Cut {
                        body: b"new".to_vec(),
                        declared: small[3].1.len(),
                    },
                );
            }),
            "banger-simvm",
        ),
        (
            "tampered binary",
            Box::new(|| {
                serve(&server, &key, &new, &small);
                // Same length as the signed file, other bytes.
                server.route("/files/banger", Route::Body(b"NEW BANGER".to_vec()));
            }),
            "sha256",
        ),
        (
            "older release",
            Box::new(|| serve(&server, &key, &version_plus(-1), &small)),
            "refusing to downgrade",
        ),
    ];
    for (case, setup, message) in cases {
        setup();
        let out = installed.banger(&env, &key, &["update"]);
        assert_eq!(out.code, Some(1), "{case}:\n{out}");
        assert!(
            out.stderr.contains(message),
            "{case}: expected {message:?}:\n{out}"
        );
        assert!(
            installed.snapshot() == before,
            "{case}: the install changed"
        );
        assert_eq!(
            env.daemon_pid(),
            Some(pid),
            "{case}: the daemon was touched"
        );
    }
}

#[test]
fn a_downgrade_needs_allow_downgrade() {
    let server = StaticServer::new();
    let key = TestKey::new();
    let env = world(&server);
    let installed = Installed::new();
    let old = version_plus(-1);
    let binaries = release_binaries("downgrade-marker");
    serve(&server, &key, &old, &binaries);

    let check = installed.banger(&env, &key, &["update", "--check"]);
    check.assert_success();
    assert!(check.stdout.contains("older than this banger"), "{check}");

    let refused = installed.banger(&env, &key, &["update"]);
    assert_eq!(refused.code, Some(1), "{refused}");
    assert!(refused.stderr.contains("--allow-downgrade"), "{refused}");

    let out = installed.banger(&env, &key, &["update", "--allow-downgrade"]);
    out.assert_success();
    assert!(std::fs::read(installed.path("bangerd")).unwrap() == binaries[1].1);
    // No daemon was running, so none was started.
    assert!(env.daemon_pid().is_none(), "{out}");
}

#[test]
fn without_the_test_key_the_release_key_refuses_test_releases() {
    let server = StaticServer::new();
    let key = TestKey::new();
    let env = world(&server);
    serve(&server, &key, &version_plus(1), &release_binaries("m"));
    // The workspace banger, without the override: the compiled-in key.
    let out = env.banger(["update", "--check"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr
            .contains("does not verify against banger's release key"),
        "{out}"
    );
}
