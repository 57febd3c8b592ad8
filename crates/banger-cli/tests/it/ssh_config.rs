//! `banger ssh-config` against a matrix of existing `~/.ssh/config` files:
//! every user byte survives install and uninstall, the block applies (checked
//! with the real `ssh -G`), and keys are never touched.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use banger_cli::ssh_include;
use banger_testkit::TestEnv;

fn user_config(env: &TestEnv) -> PathBuf {
    env.layout.home.join(".ssh/config")
}

fn block(env: &TestEnv, eol: &str) -> String {
    ssh_include::block(&env.layout.ssh_config(), eol)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `ssh -G -F FILE HOST`: the configuration ssh would use, as key/value pairs.
fn ssh_g(config: &Path, host: &str) -> Vec<(String, String)> {
    let out = Command::new("ssh")
        .args(["-G", "-F"])
        .arg(config)
        .arg(host)
        .output()
        .expect("running ssh -G");
    assert!(
        out.status.success(),
        "ssh -G {host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

fn values(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

/// The matrix: (case, existing file or None, the bytes expected to remain
/// around banger's block).
fn cases() -> Vec<(&'static str, Option<String>, String, &'static str)> {
    let legacy = format!(
        "Host a\n  User alice\n{}\nHost *.vm\n  User root\n  IdentityFile /old/key\n{}\n",
        ssh_include::LEGACY_BEGIN,
        ssh_include::LEGACY_END
    );
    vec![
        ("absent", None, String::new(), "\n"),
        ("empty", Some(String::new()), String::new(), "\n"),
        (
            "ends inside a Host block, no final newline",
            Some("# mine\nHost work\n  User me\n  IdentityFile ~/.ssh/work".into()),
            "# mine\nHost work\n  User me\n  IdentityFile ~/.ssh/work".into(),
            "\n",
        ),
        (
            "crlf",
            Some("Host work\r\n  User me\r\n".into()),
            "Host work\r\n  User me\r\n".into(),
            "\r\n",
        ),
        (
            "legacy block",
            Some(legacy),
            "Host a\n  User alice\n".into(),
            "\n",
        ),
    ]
}

#[test]
fn install_and_uninstall_keep_every_user_byte() {
    for (case, existing, kept, eol) in cases() {
        let env = TestEnv::new();
        let path = user_config(&env);
        if let Some(text) = &existing {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        env.banger(["ssh-config", "--install"]).assert_success();
        let installed = std::fs::read_to_string(&path).unwrap();
        assert_eq!(installed, format!("{}{kept}", block(&env, eol)), "{case}");
        if existing.is_none() {
            assert_eq!(mode(&path), 0o600, "{case}");
            assert_eq!(mode(path.parent().unwrap()), 0o700, "{case}");
        } else {
            assert_eq!(mode(&path), 0o644, "{case}: the file's mode is kept");
        }

        // Idempotent: a second install changes nothing.
        let again = env.banger(["ssh-config", "--install"]);
        again.assert_success();
        assert!(again.stderr.contains("already includes"), "{case}: {again}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), installed, "{case}");

        let status = env.banger(["ssh-config"]);
        status.assert_success();
        assert!(status.stdout.contains("installed in"), "{case}: {status}");

        env.banger(["ssh-config", "--uninstall"]).assert_success();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), kept, "{case}");
        let again = env.banger(["ssh-config", "--uninstall"]);
        again.assert_success();
        assert!(again.stderr.contains("no banger block"), "{case}: {again}");
    }
}

#[test]
fn uninstall_without_a_config_is_a_no_op() {
    let env = TestEnv::new();
    let out = env.banger(["ssh-config", "--uninstall"]);
    out.assert_success();
    assert!(out.stderr.contains("does not exist"), "{out}");
    assert!(!env.layout.home.join(".ssh").exists());
    // And printing never writes.
    let out = env.banger(["ssh-config"]);
    out.assert_success();
    assert!(
        out.stdout
            .contains(&ssh_include::include_line(&env.layout.ssh_config())),
        "{out}"
    );
    assert!(
        out.stdout.contains("--install") && out.stdout.contains("--uninstall"),
        "{out}"
    );
    assert!(!env.layout.home.join(".ssh").exists());
    assert!(
        env.daemon_pid().is_none(),
        "ssh-config never starts the daemon"
    );
}

#[test]
fn an_unterminated_block_is_refused_and_the_file_left_alone() {
    let env = TestEnv::new();
    let path = user_config(&env);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let text = format!("Host a\n{}\nInclude /x\nHost b\n", ssh_include::BEGIN);
    std::fs::write(&path, &text).unwrap();
    let out = env.banger(["ssh-config", "--install"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("line 2"), "{out}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn a_symlinked_config_is_edited_through_the_link() {
    let env = TestEnv::new();
    let dotfiles = env.root().join("dotfiles");
    std::fs::create_dir_all(&dotfiles).unwrap();
    std::fs::write(dotfiles.join("ssh_config"), "Host a\n  User b\n").unwrap();
    let path = user_config(&env);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(dotfiles.join("ssh_config"), &path).unwrap();
    env.banger(["ssh-config", "--install"]).assert_success();
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let text = std::fs::read_to_string(dotfiles.join("ssh_config")).unwrap();
    assert!(text.starts_with(ssh_include::BEGIN), "{text}");
}

/// After install, the real ssh picks banger's key and user for NAME.vm,
/// even though the user's file ends inside a `Host` block, and the user's
/// own host keeps its settings.
#[test]
fn ssh_uses_banger_settings_for_vm_names_after_install() {
    let env = TestEnv::new();
    let path = user_config(&env);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "Host work\n  User me\n  IdentityFile /keys/work").unwrap();
    // The daemon writes banger's ssh_config when it starts.
    env.banger(["daemon", "start"]).assert_success();
    assert!(env.layout.ssh_config().is_file());

    let key = env.layout.default_ssh_key().display().to_string();
    let before = ssh_g(&path, "web.vm");
    assert!(
        !values(&before, "identityfile").contains(&key),
        "{before:?}"
    );
    assert_ne!(values(&before, "identitiesonly"), ["yes"]);

    env.banger(["ssh-config", "--install"]).assert_success();
    let vm = ssh_g(&path, "web.vm");
    assert_eq!(values(&vm, "user"), ["root"]);
    assert_eq!(values(&vm, "identityfile").first(), Some(&key), "{vm:?}");
    assert_eq!(values(&vm, "identitiesonly"), ["yes"]);
    // X25519 is tried first, and ssh's own list follows it.
    let kex = values(&vm, "kexalgorithms").concat();
    assert!(
        kex.starts_with("curve25519-sha256,curve25519-sha256@libssh.org,")
            && kex.contains("diffie-hellman-group16-sha512"),
        "{kex}"
    );
    let work = ssh_g(&path, "work");
    assert_eq!(values(&work, "user"), ["me"]);
    assert!(!values(&work, "identityfile").contains(&key), "{work:?}");

    env.banger(["ssh-config", "--uninstall"]).assert_success();
    assert!(!values(&ssh_g(&path, "web.vm"), "identityfile").contains(&key));
}

/// A key configured with ssh_key_path, even inside banger's own config dir,
/// survives every cleanup: install, uninstall, daemon start and stop.
#[test]
fn a_configured_key_is_never_deleted_or_moved() {
    let env = TestEnv::new();
    let key_dir = env.layout.config_dir.join("ssh");
    std::fs::create_dir_all(&key_dir).unwrap();
    let key = key_dir.join("id_ed25519");
    std::fs::write(&key, "PRIVATE KEY BYTES\n").unwrap();
    std::fs::write(key_dir.join("id_ed25519.pub"), "ssh-ed25519 AAAA test\n").unwrap();
    env.write_config("ssh_key_path = \"~/.config/banger/ssh/id_ed25519\"\n");
    // A config dir under HOME, as the key path says.
    let layout_key = env.layout.home.join(".config/banger/ssh/id_ed25519");
    if layout_key != key {
        std::fs::create_dir_all(layout_key.parent().unwrap()).unwrap();
        std::fs::write(&layout_key, "PRIVATE KEY BYTES\n").unwrap();
        std::fs::write(layout_key.with_extension("pub"), "ssh-ed25519 AAAA test\n").unwrap();
    }

    env.banger(["daemon", "start"]).assert_success();
    let written = std::fs::read_to_string(env.layout.ssh_config()).unwrap();
    assert!(
        written.contains(&format!("IdentityFile {}", layout_key.display())),
        "{written}"
    );
    env.banger(["ssh-config", "--install"]).assert_success();
    env.banger(["ssh-config", "--uninstall"]).assert_success();
    env.banger(["daemon", "stop"]).assert_success();
    env.banger(["daemon", "start"]).assert_success();
    env.banger(["daemon", "stop"]).assert_success();

    for path in [&key, &layout_key] {
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "PRIVATE KEY BYTES\n"
        );
        assert!(path.with_extension("pub").is_file());
    }
    assert!(
        !env.layout.default_ssh_key().exists(),
        "no managed key was generated"
    );
}
