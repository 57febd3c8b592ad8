//! Shared test plumbing: network namespaces, commands, images, processes.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Prints why a test does not run.
pub(crate) fn skip(test: &str, reason: &str) {
    eprintln!("skipping {test}: {reason}");
}

pub(crate) fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs a command, panicking with its output when it fails.
pub(crate) fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("could not run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn random_suffix() -> String {
    use rand::Rng;
    let n: u32 = rand::rng().random();
    format!("{n:08x}")
}

/// Runs `body` on a fresh thread that has its own (anonymous) network
/// namespace with `lo` up, on a current-thread runtime. Everything the body
/// starts inherits the namespace; it vanishes with its last process.
pub(crate) fn in_netns<F, Fut, T>(body: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let thread = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        run("ip", &["link", "set", "lo", "up"]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(body())
    });
    match thread.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A bridge with `gateway_cidr` and a TAP attached to it, in the current
/// thread's network namespace.
pub(crate) fn bridge_with_tap(bridge: &str, gateway_cidr: &str, tap: &str) {
    run("ip", &["link", "add", bridge, "type", "bridge"]);
    run("ip", &["addr", "add", gateway_cidr, "dev", bridge]);
    run("ip", &["link", "set", bridge, "up"]);
    run("ip", &["tuntap", "add", tap, "mode", "tap"]);
    run("ip", &["link", "set", tap, "master", bridge]);
    run("ip", &["link", "set", tap, "up"]);
}

pub(crate) fn simvm_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_banger-simvm"))
}

/// A minimal x86_64 ELF "kernel" for Firecracker: one PT_LOAD segment at
/// 1 MiB whose code is `cli; hlt; jmp .-1`. With KVM's in-kernel irqchip
/// the vCPU sleeps in HLT forever, so the VM stays Running and idle.
pub(crate) fn tiny_kernel() -> Vec<u8> {
    const BASE: u64 = 0x10_0000;
    const EHDR: u64 = 64;
    const PHDR: u64 = 56;
    let code = [0xfa, 0xf4, 0xeb, 0xfd];
    let offset = EHDR + PHDR;
    let size = offset + code.len() as u64;
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little endian, version 1, SysV
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(BASE + offset).to_le_bytes()); // entry
    elf.extend_from_slice(&EHDR.to_le_bytes()); // phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    elf.extend_from_slice(&(EHDR as u16).to_le_bytes());
    elf.extend_from_slice(&(PHDR as u16).to_le_bytes());
    elf.extend_from_slice(&1u16.to_le_bytes()); // phnum
    elf.extend_from_slice(&[0; 6]); // shentsize, shnum, shstrndx
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    elf.extend_from_slice(&0u64.to_le_bytes()); // offset
    elf.extend_from_slice(&BASE.to_le_bytes()); // vaddr
    elf.extend_from_slice(&BASE.to_le_bytes()); // paddr
    elf.extend_from_slice(&size.to_le_bytes()); // filesz
    elf.extend_from_slice(&size.to_le_bytes()); // memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // align
    elf.extend_from_slice(&code);
    elf
}

/// `mkfs.ext4 -d dir image size`: an ext4 image holding `dir`, no loop
/// device needed.
pub(crate) fn mkfs_ext4(dir: &Path, image: &Path, size: &str) {
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-d",
            dir.to_str().unwrap(),
            image.to_str().unwrap(),
            size,
        ],
    );
}

/// SIGKILLs a process when dropped (so a failing test leaves no VMM).
#[derive(Debug)]
pub(crate) struct KillOnDrop(pub(crate) u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
    }
}

/// Polls `check` (which lists what is still wrong) until it returns nothing
/// or `limit` passes; returns what was still wrong.
pub(crate) async fn eventually(
    limit: Duration,
    mut check: impl FnMut() -> Vec<String>,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let wrong = check();
        if wrong.is_empty() || Instant::now() >= deadline {
            return wrong;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pids whose parent is `parent`.
pub(crate) fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may contain spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) && fields[0] != "Z" {
            out.push(pid);
        }
    }
    out
}
