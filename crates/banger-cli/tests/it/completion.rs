//! Shell completion: the scripts each shell sources, and live names through
//! clap_complete's `COMPLETE=SHELL banger -- WORDS` protocol against a real
//! daemon holding VMs, images and kernels. Completing never starts a daemon.

use std::path::PathBuf;
use std::process::Command;

use banger_model::image::{Image, ImageSource};
use banger_model::kernel::{Kernel, KernelSource};
use banger_model::vm::{NetworkAllocation, StorageStrategy, Vm, VmState, VmmKind};
use banger_model::{ByteSize, Id, Name, VmSpec};
use banger_testkit::TestEnv;
use banger_testkit::env::run;

/// Runs one completion request as bash would (`_CLAP_COMPLETE_INDEX` is the
/// word under the cursor) and returns every candidate, flags included.
fn complete_all(env: &TestEnv, words: &[&str]) -> Vec<String> {
    let mut command = env.command("banger");
    command
        .env("COMPLETE", "bash")
        .env("_CLAP_IFS", "\n")
        .env("_CLAP_COMPLETE_INDEX", words.len().to_string())
        .arg("--")
        .arg("banger")
        .args(words);
    let out = run(command);
    out.assert_success();
    out.stdout
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Runs one completion request as bash would (`_CLAP_COMPLETE_INDEX` is the
/// word under the cursor) and returns the candidates.
fn complete(env: &TestEnv, words: &[&str]) -> Vec<String> {
    let mut command = env.command("banger");
    command
        .env("COMPLETE", "bash")
        .env("_CLAP_IFS", "\n")
        // COMP_CWORD counts `banger` itself as word 0.
        .env("_CLAP_COMPLETE_INDEX", words.len().to_string())
        .arg("--")
        .arg("banger")
        .args(words);
    let out = run(command);
    out.assert_success();
    out.stdout
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('-'))
        .map(str::to_owned)
        .collect()
}

fn kernel(name: &str) -> Kernel {
    Kernel {
        id: Id::generate(),
        name: Name::parse(name).unwrap(),
        vmlinux_path: "/nonexistent/vmlinux".into(),
        initrd_path: None,
        version: Some("6.1.0".into()),
        source: KernelSource::Import {
            path: "/nonexistent".into(),
        },
        created_at: jiff::Timestamp::now(),
    }
}

fn image(name: &str, default: bool) -> Image {
    Image {
        id: Id::generate(),
        name: Name::parse(name).unwrap(),
        kernel_id: None,
        kernel_name: None,
        rootfs_path: "/nonexistent/rootfs.ext4".into(),
        work_seed_path: None,
        rootfs_size: ByteSize::gib(1),
        source: ImageSource::Register,
        is_default: default,
        created_at: jiff::Timestamp::now(),
    }
}

fn stopped_vm(name: &str, image: &Image, dir: PathBuf, host: u8) -> Vm {
    let ip = std::net::Ipv4Addr::new(172, 30, 0, host);
    let now = jiff::Timestamp::now();
    Vm {
        id: Id::generate(),
        name: Name::parse(name).unwrap(),
        image_id: image.id.clone(),
        image_name: image.name.to_string(),
        state: VmState::Stopped,
        spec: VmSpec {
            vcpu: 1,
            memory_mib: 1024,
            disk_size: ByteSize::gib(8),
        },
        nat: false,
        vmm: VmmKind::Sim,
        accel: None,
        network: NetworkAllocation {
            ip,
            prefix_len: 24,
            gateway: std::net::Ipv4Addr::new(172, 30, 0, 1),
            mac: NetworkAllocation::mac_for(ip),
        },
        tap: None,
        storage: StorageStrategy::Copy,
        dir,
        pid: None,
        vsock_cid: u32::from(host),
        created_at: now,
        updated_at: now,
        started_at: None,
        last_error: None,
        workspace: None,
        ports: Vec::new(),
    }
}

/// A world whose daemon knows VMs `web` and `db`, images `debian` (default)
/// and `alpine`, kernels `k61` and `k66`.
fn populated() -> TestEnv {
    let env = TestEnv::new();
    std::fs::create_dir_all(&env.layout.state_dir).unwrap();
    let store = banger_store::Store::open(&env.layout.database()).unwrap();
    store.insert_kernel(&kernel("k61")).unwrap();
    store.insert_kernel(&kernel("k66")).unwrap();
    let debian = image("debian", true);
    store.insert_image(&debian).unwrap();
    store.insert_image(&image("alpine", false)).unwrap();
    for (name, host) in [("web", 2), ("db", 3)] {
        let vm = stopped_vm(name, &debian, env.layout.vms_dir().join(name), host);
        std::fs::create_dir_all(&vm.dir).unwrap();
        store.insert_vm(&vm).unwrap();
    }
    drop(store);
    env.banger(["daemon", "start"]).assert_success();
    env
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

#[test]
fn live_names_for_vms_images_and_kernels() {
    let env = populated();
    assert_eq!(sorted(complete(&env, &["vm", "stop", ""])), ["db", "web"]);
    assert_eq!(complete(&env, &["vm", "ssh", "w"]), ["web"]);
    assert_eq!(complete(&env, &["vm", "show", "x"]), Vec::<String>::new());
    assert_eq!(sorted(complete(&env, &["vm", "logs", ""])), ["db", "web"]);
    assert_eq!(
        sorted(complete(&env, &["vm", "create", "--image", ""])),
        ["alpine", "debian"]
    );
    assert_eq!(complete(&env, &["vm", "run", "--image", "al"]), ["alpine"]);
    assert_eq!(
        sorted(complete(&env, &["image", "delete", ""])),
        ["alpine", "debian"]
    );
    assert_eq!(
        sorted(complete(
            &env,
            &["image", "import", "/tmp/x", "--kernel-ref", ""]
        )),
        ["k61", "k66"]
    );
    assert_eq!(
        sorted(complete(&env, &["kernel", "rm", ""])),
        ["k61", "k66"]
    );
}

/// `vm ssh <TAB>` offers the VM names only, so the shell never inserts the
/// `--` that `--help` and `--version` share; `-<TAB>` still offers flags.
#[test]
fn an_empty_word_gets_names_not_flags() {
    let env = populated();
    assert_eq!(
        sorted(complete_all(&env, &["vm", "ssh", ""])),
        ["db", "web"]
    );
    assert_eq!(
        sorted(complete_all(&env, &["vm", "stop", ""])),
        ["db", "web"]
    );
    let flags = complete_all(&env, &["vm", "ssh", "-"]);
    assert!(flags.contains(&"-h".to_owned()), "{flags:?}");
    let longs = complete_all(&env, &["vm", "ssh", "--"]);
    assert!(longs.contains(&"--help".to_owned()), "{longs:?}");
    // Without a daemon there is nothing to offer, and nothing is offered.
    let empty = TestEnv::new();
    assert_eq!(
        complete_all(&empty, &["vm", "ssh", ""]),
        Vec::<String>::new()
    );
}

#[test]
fn variadic_refs_skip_names_already_typed() {
    let env = populated();
    assert_eq!(complete(&env, &["vm", "stop", "web", ""]), ["db"]);
    assert_eq!(
        complete(&env, &["vm", "delete", "db", "web", ""]),
        Vec::<String>::new()
    );
    assert_eq!(
        complete(&env, &["vm", "set", "--vcpu", "2", "db", ""]),
        ["web"]
    );
    // The word under the cursor itself is not "typed": `web` still completes.
    assert_eq!(complete(&env, &["vm", "kill", "db", "web"]), ["web"]);
}

#[test]
fn completing_without_a_daemon_starts_none() {
    let env = TestEnv::new();
    assert!(complete(&env, &["vm", "stop", ""]).is_empty());
    assert!(complete(&env, &["image", "show", ""]).is_empty());
    // Subcommands still complete, from the command tree alone.
    let mut command = env.command("banger");
    command
        .env("COMPLETE", "bash")
        .env("_CLAP_IFS", "\n")
        .env("_CLAP_COMPLETE_INDEX", "1")
        .args(["--", "banger", "do"]);
    let out = run(command);
    assert_eq!(out.stdout.trim(), "doctor", "{out}");
    assert!(env.daemon_pid().is_none(), "completion started a daemon");
    assert!(!env.layout.socket().exists());
    assert!(!env.layout.state_dir.exists(), "completion wrote state");
}

#[test]
fn scripts_for_each_shell() {
    let env = TestEnv::new();
    let bash = env.banger(["completion", "bash"]);
    bash.assert_success();
    assert!(
        bash.stdout.contains(
            "complete -o nospace -o bashdefault -o nosort -F _clap_complete_banger banger"
        ),
        "{bash}"
    );
    assert!(bash.stdout.contains(r#"COMPLETE="bash""#), "{bash}");
    assert!(
        bash.stdout.contains(r#""banger" -- "${words[@]}""#),
        "{bash}"
    );

    let zsh = env.banger(["completion", "zsh"]);
    zsh.assert_success();
    assert!(zsh.stdout.starts_with("#compdef banger\n"), "{zsh}");
    assert!(
        zsh.stdout
            .contains("compdef _clap_dynamic_completer_banger banger"),
        "{zsh}"
    );
    assert!(zsh.stdout.contains(r#"COMPLETE="zsh""#), "{zsh}");

    let fish = env.banger(["completion", "fish"]);
    fish.assert_success();
    assert!(
        fish.stdout
            .starts_with("complete --keep-order --exclusive --command banger --arguments"),
        "{fish}"
    );
    assert!(fish.stdout.contains("COMPLETE=fish banger --"), "{fish}");

    // Each script parses in its shell, where the shell is installed.
    for (shell, out) in [("bash", &bash), ("zsh", &zsh), ("fish", &fish)] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("script");
        std::fs::write(&file, &out.stdout).unwrap();
        match Command::new(shell).arg("-n").arg(&file).output() {
            Ok(check) => assert!(
                check.status.success(),
                "{shell} -n: {}",
                String::from_utf8_lossy(&check.stderr)
            ),
            Err(_) => eprintln!("{shell} is not installed: its script is not parsed"),
        }
    }
    assert!(env.daemon_pid().is_none());
}

/// The bash script driving the real binary: sourcing it and asking bash's
/// own completion machinery for `banger vm stop ` gives the live names.
#[test]
fn bash_completes_through_the_sourced_script() {
    let env = populated();
    let script = env.banger(["completion", "bash"]).stdout;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(banger_testkit::binary("banger"), bin.join("banger")).unwrap();
    let driver = format!(
        "{script}\nCOMP_WORDS=(banger vm stop web '')\nCOMP_CWORD=4\nCOMP_TYPE=9\n\
         _clap_complete_banger banger '' web\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n"
    );
    let mut command = Command::new("bash");
    command.arg("-c").arg(driver).env_clear();
    for (key, value) in env.vars() {
        command.env(key, value);
    }
    command.env(
        "PATH",
        format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
    );
    let out = run(command);
    out.assert_success();
    let names: Vec<&str> = out.stdout.lines().filter(|l| !l.starts_with('-')).collect();
    assert_eq!(names, ["db"], "{out}");
}
