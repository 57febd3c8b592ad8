//! QEMU's command line for a [`BootPlan`]: the `microvm` machine with
//! Firecracker's devices (virtio-mmio block, net and vsock, a serial
//! console), nothing else (`-nodefaults`).

use std::ffi::OsString;
use std::path::Path;

use super::accel::Accel;
use crate::controller::BootPlan;

/// The machine: microvm with ACPI (the kernel finds its virtio-mmio devices
/// there, as under Firecracker ≥ 1.8), the RTC, PIT and PIC a stock kernel
/// expects, and no PCI.
pub const MACHINE: &str = "microvm,acpi=on,rtc=on,pit=on,pic=on";

/// Under emulation the kernel cannot calibrate the TSC against a timer in
/// reasonable time; `tsc_early_khz=` tells it the rate instead. An emulated
/// CPU's TSC is the host's (QEMU's TCG reads the host counter), so the rate
/// is the host's: a fixed guess made the guest's clock run 1.28× fast on a
/// 2.6 GHz host.
pub fn emulated_tsc_arg() -> String {
    format!("tsc_early_khz={}", host_tsc_khz())
}

/// The host's TSC rate in kHz, measured once against the monotonic clock
/// over 20 ms (to within a few hundred kHz).
fn host_tsc_khz() -> u64 {
    static KHZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *KHZ.get_or_init(|| {
        let ticks = || {
            // SAFETY: rdtsc reads a counter; it has no preconditions on
            // x86_64, where this engine runs.
            #[allow(unused_unsafe)]
            unsafe {
                std::arch::x86_64::_rdtsc()
            }
        };
        let started = std::time::Instant::now();
        let first = ticks();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let last = ticks();
        let nanos = started.elapsed().as_nanos().max(1);
        let khz = u128::from(last.wrapping_sub(first)) * 1_000_000 / nanos;
        u64::try_from(khz).unwrap_or(u64::MAX).max(1)
    })
}

/// Under emulation the kernel's crypto self-tests take half a second of
/// boot (measured: "Run /init" at 1.71 s instead of 2.19 s without them).
pub const SKIP_CRYPTO_TESTS_ARG: &str = "cryptomgr.notests";

/// The vsock device's id; QMP finds it at `/machine/peripheral/<id>`.
pub const VSOCK_DEVICE_ID: &str = "vsock0";

/// Sockets QEMU talks to.
#[derive(Debug, Clone, Copy)]
pub struct Sockets<'a> {
    /// QMP control socket (QEMU listens).
    pub qmp: &'a Path,
    /// vhost-user socket of the vsock device (vhost-device-vsock listens).
    pub vhost_vsock: Option<&'a Path>,
}

/// The kernel command line QEMU is given: the configured one, plus what
/// emulation needs.
pub fn cmdline(plan: &BootPlan, accel: Accel) -> String {
    let mut line = plan.cmdline.trim().to_owned();
    if accel == Accel::Tcg
        && !line
            .split_whitespace()
            .any(|w| w.starts_with("tsc_early_khz="))
    {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&emulated_tsc_arg());
    }
    if accel == Accel::Tcg && !line.split_whitespace().any(|w| w == SKIP_CRYPTO_TESTS_ARG) {
        line.push(' ');
        line.push_str(SKIP_CRYPTO_TESTS_ARG);
    }
    line
}

/// Every argument after the binary name.
pub fn args(plan: &BootPlan, accel: Accel, sockets: Sockets<'_>) -> Vec<OsString> {
    let mut args = Args::default();
    args.push(["-name", &format!("banger-{}", plan.id)]);
    args.push(["-M", MACHINE, "-accel", accel.as_str(), "-cpu", accel.cpu()]);
    args.push(["-smp", &plan.vcpus.to_string()]);
    args.push(["-m", &format!("{}M", plan.mem_mib)]);
    // vhost-user shares guest memory with the device process.
    if sockets.vhost_vsock.is_some() {
        args.push([
            "-object",
            &format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                plan.mem_mib
            ),
            "-numa",
            "node,memdev=mem",
        ]);
    }
    args.push(["-nodefaults", "-no-user-config", "-display", "none"]);
    // The keyboard controller (described in microvm's ACPI tables, so the
    // kernel finds it): Ctrl-Alt-Del, and `reboot=k`, as on Firecracker.
    args.push(["-device", "i8042"]);
    // A guest reboot (Ctrl-Alt-Del, `reboot`, a panic) ends the VMM, as
    // Firecracker does.
    args.push(["-no-reboot"]);
    // The serial console on stdout, where Firecracker's goes.
    args.push([
        "-chardev",
        "stdio,id=console,signal=off",
        "-serial",
        "chardev:console",
    ]);
    args.push(["-qmp"]);
    args.push_os(format!("unix:{},server=on,wait=off", sockets.qmp.display()));
    args.push(["-kernel"]);
    args.push_os(plan.kernel.as_os_str());
    if let Some(initrd) = &plan.initrd {
        args.push(["-initrd"]);
        args.push_os(initrd.as_os_str());
    }
    args.push(["-append", &cmdline(plan, accel)]);
    for (index, drive) in plan.drives.iter().enumerate() {
        args.push(["-drive"]);
        args.push_os(drive_spec(index, &drive.path, drive.read_only));
        args.push(["-device", &format!("virtio-blk-device,drive=d{index}")]);
    }
    if let Some(nic) = &plan.nic {
        args.push([
            "-netdev",
            &format!(
                "tap,id=n0,ifname={},script=no,downscript=no,vhost=off",
                nic.tap
            ),
        ]);
        let mut device = "virtio-net-device,netdev=n0".to_owned();
        if let Some(mac) = nic.mac {
            device.push_str(&format!(",mac={mac}"));
        }
        args.push(["-device", &device]);
    }
    if let Some(socket) = sockets.vhost_vsock {
        args.push(["-chardev"]);
        args.push_os(format!("socket,id=vsock,path={}", socket.display()));
        args.push([
            "-device",
            &format!("vhost-user-vsock-device,chardev=vsock,id={VSOCK_DEVICE_ID}"),
        ]);
    }
    args.0
}

/// `-drive` for one disk. QEMU's option syntax doubles commas inside values.
fn drive_spec(index: usize, path: &Path, read_only: bool) -> OsString {
    let mut spec = OsString::from("file=");
    spec.push(escape_commas(path.as_os_str()));
    spec.push(format!(
        ",format=raw,if=none,id=d{index},readonly={},cache=unsafe",
        if read_only { "on" } else { "off" }
    ));
    spec
}

fn escape_commas(value: &std::ffi::OsStr) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut out = Vec::with_capacity(value.len());
    for &byte in value.as_bytes() {
        out.push(byte);
        if byte == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push<const N: usize>(&mut self, words: [&str; N]) {
        self.0.extend(words.iter().map(OsString::from));
    }

    fn push_os(&mut self, word: impl Into<OsString>) {
        self.0.push(word.into());
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::controller::{DrivePlan, NicPlan};

    fn plan() -> BootPlan {
        let root = DrivePlan {
            path: PathBuf::from("/vms/a/root.ext4"),
            read_only: true,
        };
        let work = DrivePlan {
            path: PathBuf::from("/vms/a,b/work.ext4"),
            read_only: false,
        };
        BootPlan {
            id: "vm-1".into(),
            kernel: PathBuf::from("/k/vmlinux"),
            initrd: Some(PathBuf::from("/k/initrd.img")),
            vcpus: 2,
            mem_mib: 512,
            root: root.clone(),
            work: Some(work.clone()),
            drives: vec![root, work],
            cmdline: "console=ttyS0 root=/dev/vda rw".into(),
            ip: None,
            nic: Some(NicPlan {
                tap: "btap-1".into(),
                mac: Some("02:fc:ac:1e:00:05".parse().unwrap()),
            }),
            vsock: None,
        }
    }

    fn rendered(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn devices_follow_the_plan() {
        let qmp = PathBuf::from("/vms/a/api.sock.qmp");
        let vhost = PathBuf::from("/vms/a/api.sock.vhost");
        let args = args(
            &plan(),
            Accel::Tcg,
            Sockets {
                qmp: &qmp,
                vhost_vsock: Some(&vhost),
            },
        );
        let line = rendered(&args);
        for expected in [
            "-M microvm,acpi=on,rtc=on,pit=on,pic=on -accel tcg -cpu max",
            "-smp 2 -m 512M",
            "-object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem",
            "-device i8042 -no-reboot",
            "-qmp unix:/vms/a/api.sock.qmp,server=on,wait=off",
            "-kernel /k/vmlinux -initrd /k/initrd.img",
            "-drive file=/vms/a/root.ext4,format=raw,if=none,id=d0,readonly=on,cache=unsafe -device virtio-blk-device,drive=d0",
            "-drive file=/vms/a,,b/work.ext4,format=raw,if=none,id=d1,readonly=off,cache=unsafe -device virtio-blk-device,drive=d1",
            "-netdev tap,id=n0,ifname=btap-1,script=no,downscript=no,vhost=off -device virtio-net-device,netdev=n0,mac=02:fc:ac:1e:00:05",
            "-chardev socket,id=vsock,path=/vms/a/api.sock.vhost -device vhost-user-vsock-device,chardev=vsock,id=vsock0",
        ] {
            assert!(line.contains(expected), "{expected:?} missing from {line}");
        }
        // The command line is one argument, with the emulation hint.
        let append = args.iter().position(|a| a == "-append").unwrap();
        assert_eq!(
            args[append + 1].to_string_lossy(),
            format!(
                "console=ttyS0 root=/dev/vda rw {} cryptomgr.notests",
                emulated_tsc_arg()
            )
        );
    }

    #[test]
    fn kvm_keeps_the_command_line_and_skips_shared_memory_without_vsock() {
        let qmp = PathBuf::from("/q");
        let args = args(
            &plan(),
            Accel::Kvm,
            Sockets {
                qmp: &qmp,
                vhost_vsock: None,
            },
        );
        let line = rendered(&args);
        assert!(line.contains("-accel kvm -cpu host"), "{line}");
        assert!(!line.contains("memory-backend-memfd"), "{line}");
        assert!(!line.contains("vhost-user-vsock-device"), "{line}");
        let append = args.iter().position(|a| a == "-append").unwrap();
        assert_eq!(args[append + 1], "console=ttyS0 root=/dev/vda rw");
    }

    #[test]
    fn an_explicit_tsc_rate_is_kept() {
        let mut plan = plan();
        plan.cmdline = "console=ttyS0 tsc_early_khz=1000".into();
        assert_eq!(
            cmdline(&plan, Accel::Tcg),
            "console=ttyS0 tsc_early_khz=1000 cryptomgr.notests"
        );
    }

    #[test]
    fn the_emulated_tsc_rate_is_the_hosts() {
        let khz: u64 = emulated_tsc_arg()
            .strip_prefix("tsc_early_khz=")
            .unwrap()
            .parse()
            .unwrap();
        // Any x86_64 host of the last twenty years: 0.5 to 6 GHz.
        assert!((500_000..6_000_000).contains(&khz), "{khz} kHz");
        // Where the kernel knows the TSC's rate (a VM's "cpu MHz" is it),
        // the measurement agrees to within 2 %.
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let known = cpuinfo.contains(" tsc_known_freq") && cpuinfo.contains(" constant_tsc");
        let mhz = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("cpu MHz"))
            .and_then(|rest| {
                rest.trim_start_matches([' ', '\t', ':'])
                    .trim()
                    .parse::<f64>()
                    .ok()
            });
        if let (true, Some(mhz)) = (known, mhz) {
            let ratio = khz as f64 / (mhz * 1000.0);
            assert!(
                (0.98..1.02).contains(&ratio),
                "{khz} kHz measured, cpuinfo says {mhz} MHz"
            );
        }
    }
}
