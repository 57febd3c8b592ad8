//! Shared test plumbing: network namespaces, commands, images, processes.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub(crate) use banger_testkit::Prerequisite;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Records why a test does not run (banger-testkit's skip log); in CI a
/// prerequisite CI provides fails the test instead.
#[track_caller]
pub(crate) fn skip(test: &str, reason: &str, prerequisite: Prerequisite) {
    banger_testkit::skip(test, reason, prerequisite);
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

/// A minimal x86_64 ELF "kernel": one PT_LOAD segment at 1 MiB whose code
/// is `cli; hlt; jmp .-1`, and a PT_NOTE with the Xen PVH entry point (QEMU
/// boots ELF kernels only through PVH; Firecracker takes either). With
/// interrupts off the vCPU sleeps in HLT forever, so the VM stays Running
/// and idle.
pub(crate) fn tiny_kernel() -> Vec<u8> {
    const BASE: u64 = 0x10_0000;
    const EHDR: u64 = 64;
    const PHDR: u64 = 56;
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    let note_offset = EHDR + 2 * PHDR;
    // namesz, descsz, type, "Xen\0", then the entry as a u64.
    let note_len = 12 + 4 + 8;
    let code_offset = note_offset + note_len;
    let entry = BASE + code_offset;
    let code = [0xfa, 0xf4, 0xeb, 0xfd];
    let size = code_offset + code.len() as u64;
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little endian, version 1, SysV
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&entry.to_le_bytes()); // entry
    elf.extend_from_slice(&EHDR.to_le_bytes()); // phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    elf.extend_from_slice(&(EHDR as u16).to_le_bytes());
    elf.extend_from_slice(&(PHDR as u16).to_le_bytes());
    elf.extend_from_slice(&2u16.to_le_bytes()); // phnum
    elf.extend_from_slice(&[0; 6]); // shentsize, shnum, shstrndx
    // PT_LOAD: the whole file at 1 MiB.
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    elf.extend_from_slice(&0u64.to_le_bytes()); // offset
    elf.extend_from_slice(&BASE.to_le_bytes()); // vaddr
    elf.extend_from_slice(&BASE.to_le_bytes()); // paddr
    elf.extend_from_slice(&size.to_le_bytes()); // filesz
    elf.extend_from_slice(&size.to_le_bytes()); // memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // align
    // PT_NOTE: the PVH entry.
    elf.extend_from_slice(&4u32.to_le_bytes());
    elf.extend_from_slice(&4u32.to_le_bytes()); // R
    elf.extend_from_slice(&note_offset.to_le_bytes());
    elf.extend_from_slice(&(BASE + note_offset).to_le_bytes());
    elf.extend_from_slice(&(BASE + note_offset).to_le_bytes());
    elf.extend_from_slice(&note_len.to_le_bytes());
    elf.extend_from_slice(&note_len.to_le_bytes());
    elf.extend_from_slice(&4u64.to_le_bytes()); // align
    elf.extend_from_slice(&4u32.to_le_bytes()); // namesz
    elf.extend_from_slice(&8u32.to_le_bytes()); // descsz
    elf.extend_from_slice(&XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
    elf.extend_from_slice(b"Xen\0");
    elf.extend_from_slice(&entry.to_le_bytes());
    elf.extend_from_slice(&code);
    elf
}

/// Where the repository keeps tools its install script builds.
pub(crate) fn repo_tools_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/tools/bin")
}

/// `qemu-system-x86_64` and `vhost-device-vsock` for the qemu engine:
/// `BANGER_TEST_VHOST_VSOCK`, the install script's `.cache/tools/bin`, or
/// `PATH`. Missing ones skip the test with the reason (in CI they fail it:
/// scripts/install-deps.sh installs both).
pub(crate) fn qemu_engine_programs(test: &str) -> Option<(PathBuf, PathBuf)> {
    let in_path = |name: &str| {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
    };
    let qemu = in_path("qemu-system-x86_64");
    let vhost = std::env::var_os("BANGER_TEST_VHOST_VSOCK")
        .map(PathBuf::from)
        .or_else(|| {
            let cached = repo_tools_bin().join("vhost-device-vsock");
            cached.is_file().then_some(cached)
        })
        .or_else(|| in_path("vhost-device-vsock"));
    match (qemu, vhost) {
        (Some(qemu), Some(vhost)) => Some((qemu, vhost)),
        (qemu, vhost) => {
            let mut missing = Vec::new();
            if qemu.is_none() {
                missing.push("qemu-system-x86_64 (package qemu-system-x86)");
            }
            if vhost.is_none() {
                missing.push("vhost-device-vsock (.cache/tools/bin, from scripts/install-deps.sh)");
            }
            let reason = format!(
                "missing {}; scripts/install-deps.sh installs them",
                missing.join(" and ")
            );
            skip(test, &reason, Prerequisite::ProvidedByCi);
            None
        }
    }
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
