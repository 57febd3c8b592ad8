//! A full state filesystem: banger's state dir on a small loop-mounted
//! ext4 that is then filled. Operations that need room fail with
//! `resource_exhausted` and a hint, lose nothing and leak nothing; once
//! there is room again, banger catches up without a restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use banger_testkit::{SimEnv, e2e_ready};
use serde_json::Value;

/// An ext4 filesystem in a sparse file, loop-mounted at `dir`.
struct LoopMount {
    dir: PathBuf,
    image: PathBuf,
}

impl LoopMount {
    fn new(dir: &Path, size_mib: u64) -> Self {
        let image = dir.with_extension("img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(size_mib << 20)
            .unwrap();
        // No blocks reserved for root: the daemon may run as root.
        run(
            "mkfs.ext4",
            &["-q", "-F", "-m", "0", &image.to_string_lossy()],
        );
        std::fs::create_dir_all(dir).unwrap();
        run(
            "mount",
            &[
                "-o",
                "loop",
                &image.to_string_lossy(),
                &dir.to_string_lossy(),
            ],
        );
        Self {
            dir: dir.to_owned(),
            image,
        }
    }

    /// Allocates every free block into files under `fill/`.
    fn fill(&self) -> PathBuf {
        let fill = self.dir.join("fill");
        std::fs::create_dir_all(&fill).unwrap();
        let stat = nix::sys::statvfs::statvfs(&self.dir).unwrap();
        let free = stat.blocks_available() * stat.fragment_size();
        let big = std::fs::File::create(fill.join("big")).unwrap();
        let _ = nix::fcntl::fallocate(
            &big,
            nix::fcntl::FallocateFlags::empty(),
            0,
            i64::try_from(free).unwrap(),
        );
        // Whatever fallocate left: small files until the filesystem says no.
        let block = vec![0u8; 4096];
        for n in 0.. {
            if std::fs::write(fill.join(format!("small{n}")), &block).is_err() {
                break;
            }
        }
        fill
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        // The daemon's last files may take a moment to close.
        for _ in 0..50 {
            let unmounted = Command::new("umount").arg(&self.dir).status();
            if unmounted.is_ok_and(|status| status.success()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // `mount -o loop` set autoclear: the loop device goes with the
        // last mount of it — a deleted sim guest's mount namespace, which
        // held a copy of this mount, is freed by the kernel a little later
        // (seconds after a guest wrote a lot; up to a minute while the
        // rest of the suite loads the disks). Detach it if it lingers.
        let attached = || {
            Command::new("losetup")
                .arg("-j")
                .arg(&self.image)
                .output()
                .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
                .unwrap_or_default()
        };
        for _ in 0..1200 {
            if attached().trim().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for line in attached().lines() {
            if let Some((device, _)) = line.split_once(':') {
                let _ = Command::new("losetup").args(["-d", device]).status();
            }
        }
        let _ = std::fs::remove_file(&self.image);
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
}

fn vms(sim: &SimEnv) -> Vec<Value> {
    serde_json::from_str(&sim.ok(["vm", "list", "--json"]).stdout).unwrap()
}

fn says_full(out: &banger_testkit::Output) -> bool {
    out.stderr.contains("No space left on device") || out.stderr.contains("disk is full")
}

#[test]
fn a_full_state_filesystem_fails_clearly_and_banger_catches_up_after() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    // Before the first command, so that all of banger's state lands there.
    let mount = LoopMount::new(&sim.env.root().join("state"), 3072);
    sim.give(&mount.dir);
    sim.import_fixture();
    // 3 GiB cannot hold an 8G work disk plus the image's root: refused
    // with the numbers, unless overcommitting is asked for.
    let refused = sim.banger(["vm", "create", "--name", "full", "--disk-size", "8G"]);
    assert_ne!(refused.code, Some(0), "{refused}");
    assert!(refused.stderr.contains("may grow to"), "{refused}");
    assert!(refused.stderr.contains("--allow-overcommit"), "{refused}");
    println!("small disk: vm create said:\n{}", refused.stderr);
    assert!(vms(&sim).is_empty());
    sim.ok([
        "vm",
        "create",
        "--name",
        "full",
        "--disk-size",
        "8G",
        "--allow-overcommit",
    ]);
    let shown: Value =
        serde_json::from_str(&sim.ok(["vm", "show", "full", "--json"]).stdout).unwrap();
    assert_eq!(shown["disks"]["work"]["provisioned"], 8u64 << 30, "{shown}");
    assert!(shown["disks"]["work"]["allocated"].as_u64().unwrap() < 1 << 30);
    let fill = mount.fill();

    // Creating needs room: refused with the cause and a hint, nothing kept.
    let create = sim.banger(["vm", "create", "--name", "more", "--allow-overcommit"]);
    assert_ne!(create.code, Some(0), "{create}");
    assert!(
        says_full(&create) && create.stderr.contains("hint: "),
        "{create}"
    );
    println!("full disk: vm create said:\n{}", create.stderr);
    let import = sim.banger([
        "image",
        "import",
        &sim.fixture_rootfs().to_string_lossy(),
        "--name",
        "again",
    ]);
    assert_ne!(import.code, Some(0), "{import}");
    assert!(
        says_full(&import) && import.stderr.contains("hint: "),
        "{import}"
    );
    // vm list warns about the space left.
    let list = sim.ok(["vm", "list"]);
    assert!(
        list.stderr.contains("warning: ") && list.stderr.contains("free"),
        "{list}"
    );
    let names: Vec<String> = vms(&sim)
        .iter()
        .map(|vm| vm["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["full"]);
    let images = sim.ok(["image", "list", "--json"]).stdout;
    assert!(!images.contains("\"again\""), "{images}");

    // A stop either gets recorded (SQLite may reuse its log's pages) or
    // fails saying why; it never reports a stop the store did not take.
    let stop = sim.banger(["vm", "stop", "full"]);
    let recorded_state = vms(&sim)[0]["state"].as_str().unwrap().to_owned();
    if stop.success() {
        assert_eq!(recorded_state, "stopped", "{stop}");
        println!("full disk: the stop was recorded (the store reused its log's pages)");
    } else {
        assert!(says_full(&stop), "{stop}");
        assert_ne!(recorded_state, "stopped");
        // No answer of "running" without a VMM behind it.
        let start = sim.banger(["vm", "start", "full"]);
        assert!(!start.success() && says_full(&start), "{start}");
        println!(
            "full disk: the stop failed with the cause and was not reported done:\n{}",
            stop.stderr
        );
    }

    std::fs::remove_dir_all(&fill).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while vms(&sim)[0]["state"] != "stopped" {
        assert!(
            Instant::now() < deadline,
            "the record never caught up:\n{}",
            sim.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    sim.ok(["vm", "start", "full"]);
    let hostname = sim.ok(["vm", "ssh", "full", "--", "hostname"]).stdout;
    assert_eq!(hostname.trim(), "full");
    sim.ok(["vm", "create", "--name", "more", "--allow-overcommit"]);
    sim.ok(["vm", "delete", "full", "more"]);
    // The test's own mount is not a leak: gone before the check.
    sim.env.stop_daemon();
    drop(mount);
    sim.assert_clean();
}

/// A guest filling its (overcommitted) disk: before the host filesystem is
/// full, `vm list` and the daemon's log warn, and `vm show` counts the
/// blocks the guest took.
#[test]
fn a_guest_filling_the_host_is_warned_about_before_it_is_full() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    let mount = LoopMount::new(&sim.env.root().join("state"), 3072);
    sim.give(&mount.dir);
    sim.import_fixture();
    sim.ok(["vm", "create", "--name", "filler", "--allow-overcommit"]);
    let list = sim.ok(["vm", "list"]);
    assert!(!list.stderr.contains("warning:"), "{list}");
    let fs = nix::sys::statvfs::statvfs(&mount.dir).unwrap();
    let free_mib = (fs.blocks_available() * fs.fragment_size()) >> 20;
    // Leave 512 MiB: below the 1 GiB threshold, short of full.
    let write_mib = free_mib.saturating_sub(512);
    let out = sim.ok([
        "vm",
        "ssh",
        "filler",
        "--",
        "dd",
        "if=/dev/zero",
        "of=/root/big",
        "bs=1M",
        &format!("count={write_mib}"),
        "conv=fsync",
    ]);
    assert!(out.stderr.contains("copied"), "{out}");
    let list = sim.ok(["vm", "list"]);
    assert!(
        list.stderr.contains("warning: ") && list.stderr.contains("free"),
        "{list}"
    );
    let shown: Value =
        serde_json::from_str(&sim.ok(["vm", "show", "filler", "--json"]).stdout).unwrap();
    let allocated = shown["disks"]["work"]["allocated"].as_u64().unwrap();
    assert!(allocated >= write_mib << 20, "{shown}");
    println!(
        "guest wrote {write_mib} MiB of the {free_mib} MiB free; vm list warned: {}",
        list.stderr.trim()
    );
    // The daemon's monitor logs it too (it looks every 20 s).
    sim.env.wait_for(
        "the daemon to log the low space",
        Duration::from_secs(30),
        || {
            sim.env
                .daemon_log()
                .contains("state filesystem low on space")
        },
    );
    // Written back before the delete, so the guest's teardown has little
    // left to flush into the loop-mounted state filesystem.
    sim.ok(["vm", "ssh", "filler", "--", "sync"]);
    sim.ok(["vm", "delete", "filler"]);
    sim.env.stop_daemon();
    drop(mount);
    sim.assert_clean();
}
