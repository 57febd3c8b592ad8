//! `-- CMD` on `vm run` and `vm ssh` behaves like ssh: one argument is a
//! command line for the guest's shell, several are words; the exit code is
//! banger's; a terminal when banger has one; the command stops when its
//! client goes away (Ctrl-C, a killed ssh), with or without a terminal.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use banger_testkit::{SimEnv, e2e_ready};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Host pids of processes whose command line is exactly `words` (sim
/// guests' processes are visible from the host).
fn pids_running(words: &[&str]) -> Vec<i32> {
    let wanted: Vec<u8> = words
        .iter()
        .flat_map(|word| word.bytes().chain([0]))
        .collect();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_string_lossy().parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            (cmdline == wanted && banger_testkit::env::process_alive(pid)).then_some(pid)
        })
        .collect()
}

/// Pids of `ssh` clients whose command line mentions `needle`.
fn ssh_clients(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_string_lossy().parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline);
            (text.starts_with("ssh\0") && text.contains(needle)).then_some(pid)
        })
        .collect()
}

/// `banger ARGS` in the namespace, running in the background, its output
/// captured.
fn spawn_banger(sim: &SimEnv, args: &[&str]) -> Child {
    let mut command = sim.banger_command();
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.spawn().unwrap()
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("banger did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `banger ARGS` with a terminal: a fresh pseudo-terminal as its
/// controlling terminal and stdin/stdout/stderr. Returns the child and
/// the terminal's master side.
fn spawn_with_terminal(sim: &SimEnv, args: &[&str]) -> (Child, OwnedFd) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = pty.slave;
    let mut command = sim.banger_command();
    command
        .args(args)
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and ioctl are async-signal-safe; they only change the
    // forked child before exec.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    (command.spawn().unwrap(), pty.master)
}

/// Everything the terminal shows until `child` exits (bounded).
fn drain_terminal(master: &OwnedFd, child: &mut Child, timeout: Duration) -> (Option<i32>, String) {
    let fd = master.as_raw_fd();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        // SAFETY: the master stays open in the caller until this thread is
        // joined; ManuallyDrop keeps the File from closing it.
        let mut file = std::mem::ManuallyDrop::new(unsafe {
            <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd)
        });
        let mut buffer = [0u8; 4096];
        // EIO once the last slave side closes.
        while let Ok(n) = file.read(&mut buffer) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buffer[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    let code = wait_exit(child, timeout);
    let text = reader.join().unwrap();
    (code, text)
}

#[test]
fn commands_after_double_dash_behave_like_ssh() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();

    // One argument: a command line for the guest's shell.
    let out = sim.ok(["vm", "run", "--rm", "--", "echo a; echo b"]);
    assert_eq!(out.stdout, "a\nb\n", "{out}");
    // Several: words, quoted; the exit code is banger's.
    let out = sim.banger(["vm", "run", "--rm", "--", "sh", "-c", "exit 3"]);
    out.assert_code(3);
    assert!(out.stderr.contains("deleted (--rm)"), "{out}");

    // Without --rm, vm run says what it leaves running and how to remove it.
    let out = sim.ok(["vm", "run", "--name", "box", "--", "true"]);
    assert!(
        out.stderr.contains("VM box keeps running"),
        "no reminder:\n{out}"
    );
    assert!(out.stderr.contains("banger vm delete box"), "{out}");

    let out = sim.ok(["vm", "ssh", "box", "--", "echo a; echo b"]);
    assert_eq!(out.stdout, "a\nb\n", "{out}");
    sim.banger(["vm", "ssh", "box", "--", "sh", "-c", "exit 3"])
        .assert_code(3);
    let out = sim.ok([
        "vm",
        "ssh",
        "box",
        "--",
        "printf",
        "[%s]",
        "two words",
        "it's",
        "$HOME",
    ]);
    assert_eq!(out.stdout, "[two words][it's][$HOME]", "{out}");
    // The single-argument form is the guest shell's: $HOME expands there.
    let out = sim.ok(["vm", "ssh", "box", "--", "echo $HOME"]);
    assert_eq!(out.stdout, "/root\n", "{out}");

    // No terminal here: the command gets none either.
    let out = sim.banger(["vm", "ssh", "box", "--", "tty"]);
    assert_eq!(out.stdout.trim(), "not a tty", "{out}");

    // A dropped client (its ssh killed) stops the remote command.
    let mut client = spawn_banger(&sim, &["vm", "ssh", "box", "--", "sleep 6001; echo x"]);
    sim.wait_for("the remote sleep", Duration::from_secs(20), || {
        !pids_running(&["sleep", "6001"]).is_empty()
    });
    for pid in ssh_clients("sleep 6001") {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    wait_exit(&mut client, Duration::from_secs(20));
    sim.wait_for(
        "the remote command to stop after its client died",
        Duration::from_secs(15),
        || pids_running(&["sleep", "6001"]).is_empty(),
    );

    // Ctrl-C (SIGINT to banger) without a terminal: banger exits 130 and
    // the remote command stops.
    let mut client = spawn_banger(&sim, &["vm", "ssh", "box", "--", "sleep 6002; echo x"]);
    sim.wait_for("the remote sleep", Duration::from_secs(20), || {
        !pids_running(&["sleep", "6002"]).is_empty()
    });
    kill(Pid::from_raw(client.id() as i32), Signal::SIGINT).unwrap();
    let code = wait_exit(&mut client, Duration::from_secs(20));
    assert_eq!(code, Some(130));
    sim.wait_for(
        "the remote command to stop after Ctrl-C",
        Duration::from_secs(15),
        || pids_running(&["sleep", "6002"]).is_empty(),
    );

    // With a terminal, the command gets one (as ssh -t)...
    let (mut child, master) = spawn_with_terminal(&sim, &["vm", "ssh", "box", "--", "tty"]);
    let (code, text) = drain_terminal(&master, &mut child, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("/dev/pts/"),
        "no terminal in the guest:\n{text}"
    );

    // ...and Ctrl-C typed there reaches it.
    let (mut child, master) = spawn_with_terminal(
        &sim,
        &["vm", "ssh", "box", "--", "sleep 6003; echo went-on"],
    );
    sim.wait_for("the remote sleep", Duration::from_secs(20), || {
        !pids_running(&["sleep", "6003"]).is_empty()
    });
    nix::unistd::write(&master, b"\x03").unwrap();
    let (code, text) = drain_terminal(&master, &mut child, Duration::from_secs(30));
    assert_eq!(code, Some(130), "{text}");
    assert!(
        !text.contains("went-on"),
        "the command went on after Ctrl-C:\n{text}"
    );
    sim.wait_for(
        "the remote command to stop after Ctrl-C at the terminal",
        Duration::from_secs(15),
        || pids_running(&["sleep", "6003"]).is_empty(),
    );

    sim.ok(["vm", "delete", "box"]);
    sim.assert_clean();
}

/// The host's git identity reaches `/root/.gitconfig` of every VM, with or
/// without a workspace, at every start (a changed identity shows after a
/// restart), and settings the guest added are kept.
#[test]
fn a_vm_without_a_workspace_gets_the_host_git_identity() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    let gitconfig = sim.env.layout.home.join(".gitconfig");
    std::fs::write(
        &gitconfig,
        "[user]\n\tname = Host Person\n\temail = host@example.com\n",
    )
    .unwrap();
    sim.ok(["vm", "create", "--name", "plain"]);
    let out = sim.ok([
        "vm",
        "ssh",
        "plain",
        "--",
        "git config --global user.name; git config --global user.email",
    ]);
    assert_eq!(out.stdout, "Host Person\nhost@example.com\n", "{out}");

    sim.ok([
        "vm",
        "ssh",
        "plain",
        "--",
        "git config --global alias.st status",
    ]);
    std::fs::write(
        &gitconfig,
        "[user]\n\tname = Renamed Person\n\temail = renamed@example.com\n",
    )
    .unwrap();
    sim.ok(["vm", "restart", "plain"]);
    let out = sim.ok([
        "vm",
        "ssh",
        "plain",
        "--",
        "git config --global user.name; git config --global user.email; git config --global alias.st",
    ]);
    assert_eq!(
        out.stdout, "Renamed Person\nrenamed@example.com\nstatus\n",
        "{out}"
    );
    sim.ok(["vm", "delete", "plain"]);
    sim.assert_clean();
}

/// Each VM's ed25519 host key is made on the host at create, written into
/// its root disk (the only host key there) and pinned in its known_hosts
/// file: the first connection checks it, and a different key is refused.
#[test]
fn host_keys_are_made_on_the_host_and_pinned() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    sim.ok(["vm", "create", "--name", "keyed"]);
    let known_hosts = sim.layout().state_dir.join("ssh/known_hosts.d/keyed.vm");
    let pinned = std::fs::read_to_string(&known_hosts).unwrap();
    let out = sim.ok([
        "vm",
        "ssh",
        "keyed",
        "--",
        "cat /etc/ssh/ssh_host_ed25519_key.pub; ls /etc/ssh | grep -c '^ssh_host_'",
    ]);
    let mut lines = out.stdout.lines();
    let guest_key = lines.next().unwrap();
    let words: Vec<&str> = guest_key.split_whitespace().collect();
    assert_eq!(pinned, format!("keyed.vm {} {}\n", words[0], words[1]));
    assert_eq!(words[2], "root@keyed");
    // Only the key pair banger made.
    assert_eq!(lines.next(), Some("2"), "{out}");
    let console = std::fs::read_to_string(
        std::fs::read_dir(sim.layout().vms_dir())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("console.log"),
    )
    .unwrap();
    assert!(
        !console.contains("ssh-keygen"),
        "the guest generated host keys:\n{console}"
    );

    // A known_hosts entry that does not match is refused, not replaced.
    std::fs::write(
        &known_hosts,
        "keyed.vm ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n",
    )
    .unwrap();
    let out = sim.banger(["vm", "ssh", "keyed", "--", "true"]);
    assert_eq!(out.code, Some(255), "{out}");
    sim.ok(["vm", "delete", "keyed"]);
    assert!(!known_hosts.exists());
    sim.assert_clean();
}

/// The `spec:` line is the daemon's: with `[vm_defaults] vcpu = 3` in its
/// config and no `--vcpu`, the VM gets 3 vcpu, marked as config's choice; a
/// typed flag wins. `vm run --rm` deletes the VM the daemon named.
#[test]
fn the_spec_line_comes_from_the_daemon() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("[vm_defaults]\nvcpu = 3\n");
    sim.import_fixture();
    let out = sim.ok(["vm", "create", "--name", "three"]);
    let spec = out.stderr.lines().next().unwrap();
    assert!(spec.starts_with("spec: 3 vcpu (config) · "), "{out}");
    assert!(spec.ends_with(" · NAT"), "{out}");
    let shown = sim.ok(["vm", "show", "three", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown["spec"]["vcpu"], 3, "{shown}");

    let out = sim.ok(["vm", "create", "--name", "two", "--vcpu", "2"]);
    assert!(out.stderr.starts_with("spec: 2 vcpu · "), "{out}");

    let out = sim.ok(["vm", "run", "--rm", "--", "true"]);
    assert!(out.stderr.starts_with("spec: 3 vcpu (config) · "), "{out}");
    assert!(out.stderr.contains("deleted (--rm)"), "{out}");
    sim.ok(["vm", "delete", "three", "two"]);
    assert_eq!(sim.ok(["vm", "list", "--json"]).stdout.trim(), "[]");
    sim.assert_clean();
}

/// `nat = false` under `[network]` makes isolation the default; `--nat`
/// still asks for NAT; the `spec:` line says which each VM got.
#[test]
fn nat_false_in_config_isolates_unless_asked() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.write_config(
        "vmm = \"sim\"\nboot_timeout_seconds = 60\nstop_grace_seconds = 5\n\n[network]\nnat = false\n",
    );
    sim.import_fixture();
    let out = sim.ok(["vm", "create", "--name", "quiet"]);
    assert!(
        out.stderr
            .lines()
            .next()
            .unwrap()
            .ends_with(" · no NAT (config)"),
        "{out}"
    );
    let out = sim.ok(["vm", "create", "--name", "open", "--nat"]);
    assert!(
        out.stderr.lines().next().unwrap().ends_with(" · NAT"),
        "{out}"
    );
    let shown = sim.ok(["vm", "show", "quiet"]);
    assert!(shown.stdout.contains("nat         off"), "{shown}");
    let shown = sim.ok(["vm", "show", "open"]);
    assert!(shown.stdout.contains("nat         on"), "{shown}");
    sim.ok(["vm", "delete", "quiet", "open"]);
    sim.assert_clean();
}
