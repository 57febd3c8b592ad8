//! The developer image (what `banger image bootstrap` builds by default) is
//! a box to work in: `vm run --rm . -- make test` builds and runs there and
//! banger exits with make's code (GNU make exits 2 when a recipe fails; its
//! output names the recipe's own code). The image's tree is bootstrapped once per
//! machine with banger's own bootstrap code and cached in `.cache/`
//! (`banger_testkit::fixtures::developer_rootfs`), then imported, so each
//! run gets the current guest files.

use std::path::Path;

use banger_testkit::{SimEnv, e2e_ready};

use crate::e2e_bootstrap::{MirrorProxy, banger_via_proxy, share_caches};

/// `git -C DIR ARGS` as the world's user.
fn git(sim: &SimEnv, dir: &Path, args: &[&str]) {
    let out = sim
        .host_command("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn make_test_in_the_developer_image_exits_with_makes_code() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    let rootfs = sim.readable(&banger_testkit::fixtures::developer_rootfs());
    sim.ok([
        "image",
        "import",
        &rootfs.to_string_lossy(),
        "--name",
        "developer",
    ]);

    // A project whose test target compiles a C program, runs it, then
    // exits 3.
    let repo = sim.env.root().join("project");
    std::fs::create_dir_all(&repo).unwrap();
    sim.give(&repo);
    git(&sim, &repo, &["init", "-q", "-b", "main"]);
    std::fs::write(
        repo.join("hello.c"),
        "#include <stdio.h>\nint main(void) { puts(\"hello from gcc\"); return 0; }\n",
    )
    .unwrap();
    std::fs::write(
        repo.join("Makefile"),
        "test:\n\tcc -o hello hello.c\n\t./hello\n\t@echo the tests fail\n\t@exit 3\n",
    )
    .unwrap();
    git(&sim, &repo, &["add", "-A"]);
    git(
        &sim,
        &repo,
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-qm",
            "init",
        ],
    );

    // `banger vm run --rm . -- make test`, from the project directory.
    let mut command = sim.banger_command();
    command
        .args(["vm", "run", "--rm", ".", "--", "make", "test"])
        .current_dir(&repo);
    let out = banger_testkit::env::run(command);
    if out.code != Some(2) {
        panic!(
            "expected make's exit code (2):\n{out}\n{}",
            sim.diagnostics()
        );
    }
    assert!(out.stdout.contains("hello from gcc"), "{out}");
    assert!(out.stdout.contains("the tests fail"), "{out}");
    assert!(
        out.stderr.contains("make: *** [Makefile:5: test] Error 3"),
        "make's own report:\n{out}"
    );
    assert!(out.stderr.contains("deleted (--rm)"), "{out}");
    // The rest of the developer toolbox is there.
    let tools = "set -e; tmux -V; jq --version; python3 -m venv /tmp/venv; /tmp/venv/bin/pip --version; \
                 docker --version; docker-compose --version; curl --version | head -n 1; wget --version | head -n 1; \
                 rsync --version | head -n 1; zstd --version; unzip -v | head -n 1; xz --version | head -n 1; \
                 ping -V; dig -v 2>&1; ssh -V 2>&1; less --version | head -n 1; command -v vi nano modprobe";
    let out = sim.ok(["vm", "run", "--rm", "--", tools]);
    for wanted in [
        "tmux ",
        "jq-",
        "pip ",
        "Docker version",
        "docker-compose version",
        "curl ",
        "GNU Wget",
        "rsync",
        "Zstandard",
        "UnZip",
        "xz (XZ Utils)",
        "ping from iputils",
        "DiG ",
        "OpenSSH",
        "less ",
        "/usr/bin/vi",
        "/usr/bin/nano",
        "modprobe",
    ] {
        assert!(out.stdout.contains(wanted), "{wanted} missing:\n{out}");
    }
    sim.assert_clean();
}

/// Docker in a real guest: the developer image on the qemu engine with the
/// bootstrapped kernel, whose modules reach the guest on the read-only
/// modules drive. dockerd starts under systemd, uses overlay2, and runs a
/// container from an image loaded locally (`docker import` of a tiny tree
/// made in the guest; no registry is reachable).
#[test]
fn docker_runs_in_the_developer_image_on_qemu() {
    if !e2e_ready() {
        return;
    }
    let vhost = match crate::e2e_qemu::vhost_device_vsock() {
        Ok(path) => path,
        Err(reason) => {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "{reason}; scripts/install-deps.sh installs it"
            );
            eprintln!(
                "skipped docker_runs_in_the_developer_image_on_qemu: {reason}; scripts/install-deps.sh installs it"
            );
            return;
        }
    };
    let sim = SimEnv::qemu(&format!("vhost_vsock_bin = \"{}\"\n", vhost.display()));
    let rootfs = sim.readable(&banger_testkit::fixtures::developer_rootfs());
    share_caches(&sim.env, sim.user());
    let proxy = MirrorProxy::start(&sim.netns);
    let out = banger_via_proxy(&sim, &proxy, &["kernel", "bootstrap", "debian"]);
    if !out.success() {
        panic!("kernel bootstrap failed:\n{out}\n{}", sim.diagnostics());
    }
    drop(proxy);
    sim.ok([
        "image",
        "import",
        &rootfs.to_string_lossy(),
        "--name",
        "developer",
        "--kernel-ref",
        "debian-bookworm-cloud",
    ]);
    let script = r#"set -e
for i in $(seq 180); do systemctl is-active --quiet docker && break; sleep 1; done
echo "docker.service: $(systemctl is-active docker)"
echo "modules: $(ls /lib/modules/$(uname -r)/modules.dep)"
docker info --format 'driver={{.Driver}}'
grep -qw overlay /proc/filesystems && echo "overlay: available"
mkdir -p /tmp/img/bin
cp /bin/true /tmp/img/bin/true
for lib in $(ldd /bin/true | grep -o '/[^ ]*'); do mkdir -p "/tmp/img$(dirname "$lib")"; cp "$lib" "/tmp/img$lib"; done
tar -C /tmp/img -c . | docker import - local/true >/dev/null
docker run --rm local/true /bin/true && echo "docker run: ok""#;
    let started = std::time::Instant::now();
    let out = sim.banger([
        "vm",
        "run",
        "--rm",
        "--vmm",
        "qemu",
        "--image",
        "developer",
        "--",
        script,
    ]);
    eprintln!("docker on qemu took {:.0?}", started.elapsed());
    if !out.success() {
        panic!("docker in the guest failed:\n{out}\n{}", sim.diagnostics());
    }
    for wanted in [
        "docker.service: active",
        "modules: /lib/modules/",
        "driver=overlay2",
        "overlay: available",
        "docker run: ok",
    ] {
        assert!(out.stdout.contains(wanted), "{wanted} missing:\n{out}");
    }
    sim.assert_clean();
}
