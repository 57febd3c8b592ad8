//! The developer image (what `banger image bootstrap` builds by default) is
//! a box to work in: `vm run --rm . -- make test` builds and runs there and
//! banger exits with make's code (GNU make exits 2 when a recipe fails; its
//! output names the recipe's own code). The image's tree is bootstrapped once per
//! machine with banger's own bootstrap code and cached in `.cache/`
//! (`banger_testkit::fixtures::developer_rootfs`), then imported, so each
//! run gets the current guest files.

use std::path::Path;
use std::process::Command;

use banger_testkit::{SimEnv, binary, e2e_ready};

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
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
    let rootfs = banger_testkit::fixtures::developer_rootfs();
    let sim = SimEnv::new("");
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
    git(&repo, &["init", "-q", "-b", "main"]);
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
    git(&repo, &["add", "-A"]);
    git(
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
    let mut command = sim.in_netns(binary("banger"));
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
