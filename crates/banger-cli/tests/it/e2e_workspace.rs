//! `vm run`, workspaces, export, ports and file sync, end to end.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use banger_testkit::{SimEnv, e2e_ready};
use serde_json::Value;

/// `git -C DIR ARGS` as the world's user (root for a root world).
fn git(sim: &SimEnv, dir: &Path, args: &[&str]) -> String {
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
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `git -C /root/repo ARGS` in VM `vm`, over `vm ssh`; its stdout.
fn guest_git(sim: &SimEnv, vm: &str, args: &[&str]) -> String {
    let mut command = vec!["vm", "ssh", vm, "--", "git", "-C", "/root/repo"];
    command.extend_from_slice(args);
    sim.ok(command).stdout
}

/// A repository with every kind of change a checkout can carry, the
/// world's user's.
fn messy_repo(sim: &SimEnv, root: &Path) -> PathBuf {
    let repo = root.join("project");
    std::fs::create_dir_all(&repo).unwrap();
    sim.give(&repo);
    git(sim, &repo, &["init", "-q", "-b", "main"]);
    git(sim, &repo, &["config", "user.name", "Repo Person"]);
    git(sim, &repo, &["config", "user.email", "repo@example.com"]);
    std::fs::write(repo.join("committed.txt"), "committed\n").unwrap();
    std::fs::write(repo.join("modified.txt"), "old\n").unwrap();
    std::fs::write(repo.join("deleted.txt"), "deleted\n").unwrap();
    std::fs::write(repo.join(".gitignore"), "*.log\n").unwrap();
    git(sim, &repo, &["add", "-A"]);
    git(sim, &repo, &["commit", "-qm", "init"]);
    std::fs::write(repo.join("modified.txt"), "new\n").unwrap();
    std::fs::remove_file(repo.join("deleted.txt")).unwrap();
    std::fs::write(repo.join("untracked dir ünï.txt"), "untracked\n").unwrap();
    std::fs::write(repo.join("ignored.log"), "ignored\n").unwrap();
    std::fs::write(
        repo.join("blob.bin"),
        (0..=255u8).cycle().take(4096).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(repo.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(repo.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("committed.txt", repo.join("link")).unwrap();
    sim.give(&repo);
    repo
}

/// `sha256 mode path` for every file in a tree, .git excluded, sorted.
const MANIFEST: &str = "find . -path ./.git -prune -o \\( -type f -o -type l \\) -printf '%m %y %p\\n' | sort; \
                        find . -path ./.git -prune -o -type f -print0 | sort -z | xargs -0 sha256sum";

fn host_manifest(repo: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(MANIFEST)
        .current_dir(repo)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn vm_run_carries_the_working_tree_exactly_and_returns_the_exit_code() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    let repo = messy_repo(&sim, sim.env.root());
    // The host's global identity goes to /root/.gitconfig.
    std::fs::write(
        sim.env.layout.home.join(".gitconfig"),
        "[user]\n\tname = Global Me\n\temail = me@example.com\n",
    )
    .unwrap();
    let mut expected = host_manifest(&repo);
    // Ignored files stay on the host.
    expected = expected
        .lines()
        .filter(|line| !line.contains("ignored.log"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(expected.contains("untracked dir"), "{expected}");

    let checks = format!(
        "{MANIFEST}; echo ---; git log --format=%s; git status --short; \
         git fsck --strict --no-dangling --no-progress && echo fsck ok; echo ---; \
         git config user.name; git config --global user.name; ./run.sh"
    );
    let out = sim.ok([
        "vm",
        "run",
        "--rm",
        &repo.to_string_lossy(),
        "--",
        "sh",
        "-c",
        &checks,
    ]);
    let (tree, rest) = out.stdout.split_once("---\n").expect("three sections");
    assert_eq!(
        tree.trim_end(),
        expected.trim_end(),
        "guest tree differs from the host's"
    );
    let (history, identity) = rest.split_once("---\n").unwrap();
    assert!(history.starts_with("init\n"), "{history}");
    assert!(history.contains(" M modified.txt"), "{history}");
    assert!(history.contains(" D deleted.txt"), "{history}");
    // Every object is there (they come from the repository's own object
    // directory, beside the staged clone's).
    assert!(history.ends_with("fsck ok\n"), "{history}");
    assert_eq!(identity, "Repo Person\nGlobal Me\nran\n");
    assert!(out.stderr.contains("deleted (--rm)"), "{out}");
    // Written into the work disk before boot, not streamed over SSH.
    assert!(out.stderr.contains("written before boot"), "{out}");

    let code = sim.banger([
        "vm",
        "run",
        "--rm",
        &repo.to_string_lossy(),
        "--",
        "sh",
        "-c",
        "exit 7",
    ]);
    code.assert_code(7);
    // Bare sandbox, no workspace, command mode.
    let bare = sim.ok([
        "vm",
        "run",
        "--rm",
        "--",
        "sh",
        "-c",
        "test ! -e /root/repo && echo bare",
    ]);
    assert_eq!(bare.stdout, "bare\n");
    assert_eq!(sim.ok(["vm", "list", "--json"]).stdout.trim(), "[]");
    sim.assert_clean();
}

/// `vm run` with a guest-only branch from another commit (no local
/// changes), and with --full-copy (the directory as it is, .git included):
/// both written before boot.
#[test]
fn vm_run_branches_and_full_copies_before_boot() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    let repo = messy_repo(&sim, sim.env.root());
    std::fs::write(repo.join("committed.txt"), "second\n").unwrap();
    git(
        &sim,
        &repo,
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@e",
            "commit",
            "-qm",
            "second",
            "--",
            "committed.txt",
        ],
    );
    let out = sim.ok([
        "vm",
        "run",
        "--rm",
        "--branch",
        "try",
        "--from",
        "HEAD~1",
        &repo.to_string_lossy(),
        "--",
        "git log -1 --format='%D %s'; cat committed.txt; \
         if test -e 'untracked dir ünï.txt'; then echo local changes came; fi",
    ]);
    assert!(out.stderr.contains("written before boot"), "{out}");
    assert!(
        out.stdout.starts_with("HEAD -> try init\ncommitted\n"),
        "{out}"
    );
    assert!(!out.stdout.contains("local changes came"), "{out}");

    let out = sim.ok([
        "vm",
        "run",
        "--rm",
        "--full-copy",
        &repo.to_string_lossy(),
        "--",
        "cat modified.txt ignored.log; git log --format=%s; git status --short",
    ]);
    assert!(out.stderr.contains("written before boot"), "{out}");
    // The directory as it is: ignored files too, the host's .git and index.
    assert!(
        out.stdout.starts_with("new\nignored\nsecond\ninit\n"),
        "{out}"
    );
    assert!(out.stdout.contains(" M modified.txt"), "{out}");
    sim.assert_clean();
}

/// A checkout another user owns, which the user trusts (git's
/// safe.directory): copied like their own.
#[test]
fn a_trusted_repository_of_another_user_is_copied() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    let repo = messy_repo(&sim, sim.env.root());
    let status = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&repo)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        sim.env.layout.home.join(".gitconfig"),
        format!("[safe]\n\tdirectory = {}\n", repo.display()),
    )
    .unwrap();
    let out = sim.ok([
        "vm",
        "run",
        "--rm",
        &repo.to_string_lossy(),
        "--",
        "cat modified.txt; git status --short",
    ]);
    assert!(out.stdout.starts_with("new\n"), "{out}");
    assert!(out.stdout.contains(" M modified.txt"), "{out}");
    assert!(out.stdout.contains(" D deleted.txt"), "{out}");
    sim.assert_clean();
}

/// 10k files, some changed, some new, some deleted: the guest's tree is
/// the host's, file for file, and git sees the same changes.
#[test]
fn a_ten_thousand_file_workspace_arrives_whole() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    let repo = sim.env.root().join("big");
    for dir in 0..100 {
        let dir_path = repo.join(format!("d{dir}"));
        std::fs::create_dir_all(&dir_path).unwrap();
        for file in 0..100 {
            std::fs::write(
                dir_path.join(format!("f{file}")),
                format!("{dir}/{file}\n").repeat(64),
            )
            .unwrap();
        }
    }
    sim.give(&repo);
    git(&sim, &repo, &["init", "-q", "-b", "main"]);
    git(&sim, &repo, &["add", "-A"]);
    git(
        &sim,
        &repo,
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@e",
            "commit",
            "-qm",
            "10k",
        ],
    );
    std::fs::write(repo.join("d1/f1"), "changed\n").unwrap();
    std::fs::remove_file(repo.join("d2/f2")).unwrap();
    std::fs::remove_dir_all(repo.join("d3")).unwrap();
    std::fs::write(repo.join("d4/new"), "new\n").unwrap();
    let expected = host_manifest(&repo);
    let host_status = git(&sim, &repo, &["status", "--short"]);
    // What the index's stat data does not vouch for: the changed and the
    // deleted files (the disk's index was filled in for the others, so
    // the guest's git does not read 10k files again to trust them).
    let host_unvouched = git(&sim, &repo, &["diff-files", "--name-only"]);
    assert_eq!(host_unvouched.lines().count(), 102);
    assert_eq!(expected.lines().count(), 2 * (10_000 - 1 - 100 + 1));
    // Files modified in the second the workspace is listed are compared
    // by content (git's racy-clean rule); none is, here.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let out = sim.ok([
        "vm",
        "run",
        "--rm",
        &repo.to_string_lossy(),
        "--",
        &format!("git diff-files --name-only; echo ---; {MANIFEST}; echo ---; git status --short"),
    ]);
    let mut sections = out.stdout.split("---\n");
    let (unvouched, tree, status) = (
        sections.next().unwrap(),
        sections.next().expect("three sections"),
        sections.next().expect("three sections"),
    );
    assert_eq!(unvouched, host_unvouched);
    assert!(tree == expected, "guest tree differs from the host's");
    assert_eq!(status, host_status);
    assert!(out.stderr.contains("written before boot"), "{out}");
    // The daemon says how far the write got, in bytes and files (without
    // a terminal, by tenths; this one is small enough for its last only),
    // and what it wrote: the working tree's 9901 files, the repository's
    // and the guest's own.
    let last = out
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("write_workspace: 100% ("))
        .unwrap_or_else(|| panic!("no last progress line: {out}"));
    let (copied, all) = last
        .strip_suffix(" files)")
        .and_then(|counts| counts.split_once(" of "))
        .unwrap_or_else(|| panic!("no file counts: {last}"));
    assert_eq!(copied, all, "{out}");
    let all: u64 = all.parse().expect("a count of files");
    assert!((9_901..11_000).contains(&all), "{all} files written: {out}");
    assert!(
        out.stderr
            .lines()
            .any(|line| line.starts_with("write_workspace")
                && line.contains(" done ")
                && line.contains(&format!("({all} files, "))),
        "{out}"
    );
    sim.assert_clean();
}

/// A sparse checkout: the files outside it are not in the working tree and
/// git does not call them deleted. The guest gets them from HEAD, as a
/// checkout would, and its git status is the host's.
#[test]
fn a_sparse_checkout_arrives_with_heads_files_and_the_hosts_status() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    let repo = sim.env.root().join("sparse");
    std::fs::create_dir_all(repo.join("in")).unwrap();
    std::fs::create_dir_all(repo.join("out")).unwrap();
    std::fs::write(repo.join("in/a"), "a\n").unwrap();
    std::fs::write(repo.join("out/b"), "b\n").unwrap();
    sim.give(&repo);
    git(&sim, &repo, &["init", "-q", "-b", "main"]);
    git(&sim, &repo, &["add", "-A"]);
    git(
        &sim,
        &repo,
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@e",
            "commit",
            "-qm",
            "c",
        ],
    );
    git(&sim, &repo, &["sparse-checkout", "set", "in"]);
    assert!(
        !repo.join("out/b").exists(),
        "out/ is outside the sparse checkout"
    );
    std::fs::write(repo.join("in/a"), "changed\n").unwrap();
    let host_status = git(&sim, &repo, &["status", "--short"]);
    assert_eq!(host_status, " M in/a\n");

    let out = sim.ok([
        "vm",
        "run",
        "--rm",
        &repo.to_string_lossy(),
        "--",
        "sh",
        "-c",
        "cat in/a out/b; echo ---; git status --short",
    ]);
    assert_eq!(
        out.stdout,
        format!("changed\nb\n---\n{host_status}"),
        "{out}"
    );
    sim.assert_clean();
}

/// A checkout whose tracked directories were replaced by symlinks out of
/// the repository (absolute, and `../..`): the guest gets the symlinks as
/// symlinks and git's view of the tree; nothing outside the repository is
/// read.
#[test]
fn directories_swapped_for_symlinks_out_of_the_repo_are_not_read_through() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    let root = sim.env.root();
    let repo = root.join("work/project");
    std::fs::create_dir_all(repo.join("conf")).unwrap();
    std::fs::create_dir_all(repo.join("lib")).unwrap();
    std::fs::write(repo.join("conf/app.txt"), "tracked config\n").unwrap();
    std::fs::write(repo.join("lib/mod.txt"), "tracked lib\n").unwrap();
    sim.give(&root.join("work"));
    git(&sim, &repo, &["init", "-q", "-b", "main"]);
    git(&sim, &repo, &["add", "-A"]);
    git(
        &sim,
        &repo,
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@e",
            "commit",
            "-qm",
            "init",
        ],
    );
    let secret = "SECRET-outside-the-repository";
    let outside = root.join("secrets");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("app.txt"), secret).unwrap();
    std::fs::write(root.join("mod.txt"), secret).unwrap();
    std::fs::remove_dir_all(repo.join("conf")).unwrap();
    std::os::unix::fs::symlink(&outside, repo.join("conf")).unwrap();
    std::fs::remove_dir_all(repo.join("lib")).unwrap();
    std::os::unix::fs::symlink("../..", repo.join("lib")).unwrap();
    let host_status = git(&sim, &repo, &["status", "--short"]);

    let out = sim.ok([
        "vm",
        "run",
        "--rm",
        &repo.to_string_lossy(),
        "--",
        "sh",
        "-c",
        "git status --short; echo ---; readlink conf lib; echo ---; \
         grep -rl SECRET-outside /root | wc -l",
    ]);
    let sections: Vec<&str> = out.stdout.split("---\n").collect();
    assert_eq!(sections.len(), 3, "{out}");
    assert_eq!(sections[0], host_status, "guest and host git status differ");
    assert_eq!(
        sections[1],
        format!("{}\n../..\n", outside.display()),
        "{out}"
    );
    let leaked: usize = sections[2].trim().parse().unwrap();
    println!("files in the guest holding bytes from outside the repository: {leaked}");
    assert_eq!(leaked, 0, "{out}");
    // Nor was anything outside touched (a tracked file beneath the
    // swapped directory is gone from the workspace, not from its target).
    assert_eq!(
        std::fs::read_to_string(outside.join("app.txt")).unwrap_or_default(),
        secret,
        "a file outside the repository was removed"
    );
    sim.assert_clean();
}

#[test]
fn export_returns_guest_commits_and_uncommitted_work_as_one_patch() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    let repo = messy_repo(&sim, sim.env.root());
    git(&sim, &repo, &["add", "-A"]);
    git(&sim, &repo, &["commit", "-qm", "host work"]);
    let base = git(&sim, &repo, &["rev-parse", "HEAD"]).trim().to_owned();

    sim.ok(["vm", "create", "--name", "dev"]);
    let prepared = sim.ok(["vm", "workspace", "prepare", "dev", &repo.to_string_lossy()]);
    assert!(prepared.stderr.contains("workspace:"), "{prepared}");
    let vm: Value = serde_json::from_str(&sim.ok(["vm", "show", "dev", "--json"]).stdout).unwrap();
    assert_eq!(vm["workspace"]["head_commit"], base.as_str());
    // The default base is the workspace as copied in: here HEAD's tree.
    let copied_in = vm["workspace"]["base_commit"].as_str().unwrap().to_owned();
    let tree_of =
        |commit: &str| guest_git(&sim, "dev", &["rev-parse", &format!("{commit}^{{tree}}")]);
    assert_eq!(tree_of(&copied_in), tree_of(&base));

    // Work in the guest: a commit, then an uncommitted edit and a new binary file.
    sim.ok([
        "vm",
        "ssh",
        "dev",
        "--",
        "sh",
        "-c",
        "cd /root/repo && echo guest >> committed.txt && git commit -qam 'guest commit' \
         && echo uncommitted > modified.txt && head -c 100 /dev/urandom > new.bin",
    ]);
    let patch_file = sim.env.root().join("work.patch");
    let out = sim.ok([
        "vm",
        "workspace",
        "export",
        "dev",
        "--output",
        &patch_file.to_string_lossy(),
    ]);
    assert!(out.stderr.contains(&format!("base: {copied_in}")), "{out}");

    git(
        &sim,
        &repo,
        &["apply", "--index", &patch_file.to_string_lossy()],
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("committed.txt")).unwrap(),
        "committed\nguest\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("modified.txt")).unwrap(),
        "uncommitted\n"
    );
    let guest_bin = sim
        .ok(["vm", "ssh", "dev", "--", "sha256sum", "/root/repo/new.bin"])
        .stdout;
    let host_bin = Command::new("sha256sum")
        .arg(repo.join("new.bin"))
        .output()
        .unwrap();
    assert_eq!(
        guest_bin.split_whitespace().next(),
        String::from_utf8_lossy(&host_bin.stdout)
            .split_whitespace()
            .next()
    );

    // A guest-only branch from another commit.
    let out = sim.ok([
        "vm",
        "workspace",
        "prepare",
        "dev",
        &repo.to_string_lossy(),
        "--branch",
        "try",
        "--from",
        "HEAD~1",
    ]);
    assert!(out.stderr.contains("workspace:"), "{out}");
    let branch = guest_git(&sim, "dev", &["log", "-1", "--format=%D %s"]);
    assert_eq!(branch.trim(), "HEAD -> try init");
    sim.ok(["vm", "delete", "dev"]);
    sim.assert_clean();
}

/// The round trip on the same checkout: export's default base is the
/// workspace as copied in, uncommitted and untracked work included, so the
/// patch applies to the host checkout as it still is.
#[test]
fn export_applies_to_the_unchanged_host_checkout() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    let repo = messy_repo(&sim, sim.env.root());
    sim.ok(["vm", "create", "--name", "dev"]);
    sim.ok(["vm", "workspace", "prepare", "dev", &repo.to_string_lossy()]);
    let vm: Value = serde_json::from_str(&sim.ok(["vm", "show", "dev", "--json"]).stdout).unwrap();
    let head = git(&sim, &repo, &["rev-parse", "HEAD"]).trim().to_owned();
    assert_eq!(vm["workspace"]["head_commit"], head.as_str());
    assert_ne!(vm["workspace"]["base_commit"], head.as_str());
    // The guest: a commit on top of the host's work, then more edits.
    sim.ok([
        "vm",
        "ssh",
        "dev",
        "--",
        "sh",
        "-c",
        "cd /root/repo && echo guest >> modified.txt && git add -A && git commit -qm guest \
         && echo more >> committed.txt && printf 'new\\n' > guest-new.txt && rm run.sh",
    ]);
    let guest_tree = sim
        .ok([
            "vm",
            "ssh",
            "dev",
            "--",
            "sh",
            "-c",
            &format!("cd /root/repo && {MANIFEST}"),
        ])
        .stdout;
    let guest_status = || guest_git(&sim, "dev", &["status", "--short"]);
    let status_before = guest_status();
    assert!(
        status_before.contains("?? guest-new.txt"),
        "{status_before}"
    );
    let patch = sim.env.root().join("work.patch");
    sim.ok([
        "vm",
        "workspace",
        "export",
        "dev",
        "--output",
        &patch.to_string_lossy(),
    ]);
    // Exporting staged nothing in the guest.
    assert_eq!(guest_status(), status_before);
    git(&sim, &repo, &["apply", &patch.to_string_lossy()]);
    let host_tree: String = host_manifest(&repo)
        .lines()
        .filter(|line| !line.contains("ignored.log"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(
        host_tree, guest_tree,
        "host after git apply differs from the guest"
    );
    sim.ok(["vm", "delete", "dev"]);
    sim.assert_clean();
}

#[test]
fn bad_workspace_input_creates_no_vm() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    let root = sim.env.root();
    let plain = root.join("not-a-repo");
    std::fs::create_dir_all(&plain).unwrap();
    let bare = root.join("bare.git");
    git(
        &sim,
        root,
        &["init", "-q", "--bare", &bare.to_string_lossy()],
    );
    let with_sub = messy_repo(&sim, &root.join("sub"));
    std::fs::write(
        with_sub.join(".gitmodules"),
        "[submodule \"x\"]\n\tpath = x\n\turl = ../x\n",
    )
    .unwrap();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            vec![
                "vm".into(),
                "run".into(),
                plain.to_string_lossy().into(),
                "--".into(),
                "true".into(),
            ],
            1,
            "not inside a git repository",
        ),
        (
            vec!["vm".into(), "run".into(), bare.to_string_lossy().into()],
            1,
            "bare repository",
        ),
        (
            vec![
                "vm".into(),
                "run".into(),
                root.join("nope").to_string_lossy().into(),
            ],
            1,
            "does not exist",
        ),
        (
            vec![
                "vm".into(),
                "run".into(),
                "--from".into(),
                "main".into(),
                ".".into(),
            ],
            2,
            "--branch",
        ),
        (
            vec!["vm".into(), "run".into(), with_sub.to_string_lossy().into()],
            1,
            "--full-copy",
        ),
        (
            vec![
                "vm".into(),
                "run".into(),
                "--branch".into(),
                "x".into(),
                "--from".into(),
                "nowhere".into(),
                with_sub.to_string_lossy().into(),
                "--full-copy".into(),
            ],
            1,
            "does not name a commit",
        ),
    ];
    for (args, code, message) in cases {
        let out = sim.banger(&args);
        out.assert_code(code);
        assert!(
            out.stderr.contains(message),
            "{args:?} should say {message:?}:\n{out}"
        );
    }
    assert_eq!(sim.ok(["vm", "list", "--json"]).stdout.trim(), "[]");
    sim.assert_clean();
}

#[test]
fn ports_show_http_and_https_listeners_at_their_vm_name() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    sim.ok(["vm", "create", "--name", "web"]);
    let start = "cd /tmp && openssl req -x509 -newkey rsa:2048 -nodes -keyout k.pem -out c.pem -days 1 -subj /CN=web 2>/dev/null \
                 && (setsid python3 -m http.server 8080 >/dev/null 2>&1 < /dev/null &) \
                 && (setsid openssl s_server -accept 8443 -cert c.pem -key k.pem -www >/dev/null 2>&1 < /dev/null &)";
    sim.ok(["vm", "ssh", "web", "--", "sh", "-c", start]);
    let mut rows = Vec::new();
    sim.wait_for("both servers to listen", Duration::from_secs(20), || {
        let out = sim.ok(["vm", "ports", "web", "--json"]);
        rows = serde_json::from_str::<Vec<Value>>(&out.stdout).unwrap();
        rows.iter().any(|row| row["port"] == 8080) && rows.iter().any(|row| row["port"] == 8443)
    });
    let find = |port: u16| rows.iter().find(|row| row["port"] == port).unwrap().clone();
    assert_eq!(find(8080)["endpoint"], "http://web.vm:8080");
    assert_eq!(find(8080)["process"], "python3");
    assert_eq!(find(8443)["endpoint"], "https://web.vm:8443");
    assert_eq!(find(8443)["process"], "openssl");
    assert_eq!(find(22)["endpoint"], "tcp web.vm:22");
    // sshd listens on 0.0.0.0 and :: but shows once.
    assert_eq!(
        rows.iter().filter(|row| row["port"] == 22).count(),
        1,
        "{rows:?}"
    );
    let ip = find(22)["address"]
        .as_str()
        .unwrap()
        .trim_start_matches("tcp ")
        .trim_end_matches(":22")
        .to_owned();
    assert_eq!(find(8443)["address"], format!("https://{ip}:8443"));
    // web.vm does not resolve in the test's namespace (no resolver routes
    // .vm there): the table shows the address form and says why.
    let table = sim.ok(["vm", "ports", "web"]);
    assert!(table.stdout.starts_with("PROTO"), "{table}");
    assert!(
        table.stdout.contains(&format!("https://{ip}:8443")),
        "{table}"
    );
    assert!(
        table
            .stderr
            .contains("web.vm does not resolve on this host"),
        "{table}"
    );
    // Where it resolves (here through the namespace's own /etc/hosts, which
    // `ip netns exec` mounts from /etc/netns/NS/), the table shows the name.
    let etc = std::path::PathBuf::from("/etc/netns").join(&sim.netns);
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("hosts"),
        format!("127.0.0.1 localhost\n{ip} web.vm\n"),
    )
    .unwrap();
    let table = sim.banger(["vm", "ports", "web"]);
    let _ = std::fs::remove_dir_all(&etc);
    // Only when empty: /etc/netns may have been there before.
    let _ = std::fs::remove_dir("/etc/netns");
    assert!(table.success(), "{table}");
    assert!(table.stdout.contains("https://web.vm:8443"), "{table}");
    assert!(!table.stderr.contains("does not resolve"), "{table}");
    sim.ok(["vm", "delete", "web"]);
    sim.assert_clean();
}

#[test]
fn file_sync_copies_host_files_into_the_guest_at_start() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new(
        "[[file_sync]]\nhost = \"~/token\"\nguest = \"~/.config/app/token\"\n\n\
         [[file_sync]]\nhost = \"~/tools\"\nguest = \"~/tools\"\n\n\
         [[file_sync]]\nhost = \"~/script\"\nguest = \"~/bin/script\"\nmode = \"0755\"\n\n\
         [[file_sync]]\nhost = \"~/missing\"\nguest = \"~/missing\"\n",
    );
    let home = &sim.env.layout.home;
    std::fs::write(home.join("token"), "s3cret\n").unwrap();
    std::fs::create_dir_all(home.join("tools/sub")).unwrap();
    std::fs::write(home.join("tools/sub/a.txt"), "a\n").unwrap();
    std::fs::write(home.join("tools/run"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        home.join("tools/run"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::fs::write(home.join("script"), "#!/bin/sh\necho hi\n").unwrap();
    sim.give(home);
    sim.import_fixture();
    let out = sim.ok(["vm", "create", "--name", "sync"]);
    assert!(
        out.stderr.contains("missing does not exist; skipped"),
        "{out}"
    );
    let listing = sim.ok([
        "vm", "ssh", "sync", "--", "sh", "-c",
        "stat -c '%a %n' /root/.config/app/token /root/tools/run /root/tools/sub/a.txt /root/bin/script; cat /root/.config/app/token; /root/bin/script",
    ]);
    assert_eq!(
        listing.stdout,
        "600 /root/.config/app/token\n750 /root/tools/run\n644 /root/tools/sub/a.txt\n755 /root/bin/script\ns3cret\nhi\n"
    );
    // Refreshed at the next start.
    std::fs::write(home.join("token"), "rotated\n").unwrap();
    sim.ok(["vm", "restart", "sync"]);
    assert_eq!(
        sim.ok(["vm", "ssh", "sync", "--", "cat", "/root/.config/app/token"])
            .stdout,
        "rotated\n"
    );
    sim.ok(["vm", "delete", "sync"]);
    sim.assert_clean();
}

/// Interactive workspace sessions install the repo's pinned tools with the
/// image's mise (best effort); command mode skips it. A stand-in `mise`
/// (placed where mise installs itself, via file_sync) records its calls.
#[test]
fn interactive_workspace_sessions_bootstrap_mise_tools() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new(
        "[[file_sync]]\nhost = \"~/fake-mise\"\nguest = \"~/.local/bin/mise\"\nmode = \"0755\"\n",
    );
    std::fs::write(
        sim.env.layout.home.join("fake-mise"),
        "#!/bin/sh\necho \"$*\" >> /root/mise-calls\n",
    )
    .unwrap();
    sim.give(&sim.env.layout.home);
    sim.import_fixture();
    let repo = messy_repo(&sim, sim.env.root());
    std::fs::write(repo.join(".tool-versions"), "python 3.12\n").unwrap();
    // Command mode: no bootstrap.
    let out = sim.ok([
        "vm",
        "run",
        "--name",
        "cmd",
        &repo.to_string_lossy(),
        "--",
        "true",
    ]);
    assert!(!out.stderr.contains("installing tools"), "{out}");
    let calls = sim.banger(["vm", "ssh", "cmd", "--", "cat", "/root/mise-calls"]);
    assert_ne!(calls.code, Some(0), "mise ran in command mode: {calls}");
    // Interactive mode (stdin is not a terminal here, so the shell exits at once).
    let out = sim.ok(["vm", "run", "--name", "shell", &repo.to_string_lossy()]);
    assert!(out.stderr.contains("installing tools with mise"), "{out}");
    let calls = sim.ok(["vm", "ssh", "shell", "--", "cat", "/root/mise-calls"]);
    assert_eq!(calls.stdout, "trust --yes .\ninstall --yes\n");
    sim.ok(["vm", "delete", "cmd", "shell"]);
    sim.assert_clean();
}

/// `-p` publishes a guest's web server on the host's loopback; a port in
/// use is refused before a VM exists; `vm port-forward` adds and removes
/// forwards on a running VM; forwards come back after a restart and are
/// gone after stop and delete.
#[test]
fn published_ports_reach_the_guest_and_go_away_with_it() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    let curl = |port: u16| {
        sim.exec(
            "curl",
            [
                "-sS",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{port}/marker.txt"),
            ],
        )
    };
    let serve = |name: &str| {
        let start = "echo published-ok > /root/marker.txt && cd /root \
                     && (setsid python3 -m http.server 8000 >/dev/null 2>&1 < /dev/null &)";
        sim.ok(["vm", "ssh", name, "--", "sh", "-c", start]);
    };
    let out = sim.ok(["vm", "create", "--name", "web", "-p", "18080:8000"]);
    assert!(
        out.stderr.contains("published 127.0.0.1:18080 → web:8000"),
        "{out}"
    );
    serve("web");
    sim.wait_for(
        "the guest's server through the forward",
        Duration::from_secs(20),
        || curl(18080).stdout == "published-ok\n",
    );
    let shown: Value =
        serde_json::from_str(&sim.ok(["vm", "show", "web", "--json"]).stdout).unwrap();
    assert_eq!(
        shown["ports"],
        serde_json::json!([{"host_addr": "127.0.0.1", "host_port": 18080, "guest_port": 8000}])
    );
    let ports = sim.ok(["vm", "ports", "web"]).stdout;
    assert!(ports.contains("127.0.0.1:18080"), "{ports}");

    // A port in use (by web) refuses a second VM before it exists.
    let out = sim.banger(["vm", "create", "--name", "clash", "-p", "18080:80"]);
    out.assert_code(1);
    assert!(
        out.stderr
            .contains("port 127.0.0.1:18080 is already in use"),
        "{out}"
    );
    let names = sim.ok(["vm", "list", "--json"]).stdout;
    assert!(!names.contains("clash"), "{names}");

    // Added and removed on the running VM.
    sim.ok(["vm", "port-forward", "web", "18081:8000"]);
    assert_eq!(curl(18081).stdout, "published-ok\n");
    sim.ok(["vm", "port-forward", "web", "--remove", "18080:8000"]);
    assert!(!curl(18080).success(), "18080 still forwarded");

    // Back after a restart (the guest's server is started again).
    sim.ok(["vm", "restart", "web"]);
    serve("web");
    sim.wait_for("the forward after restart", Duration::from_secs(20), || {
        curl(18081).stdout == "published-ok\n"
    });
    sim.ok(["vm", "stop", "web"]);
    assert!(!curl(18081).success(), "forwarded while stopped");
    sim.ok(["vm", "start", "web"]);
    sim.ok(["vm", "delete", "web"]);
    // Nothing listens any more: the port can be bound again.
    let out = sim.exec("sh", ["-c", "ss -ltn | grep -c ':1808[01] ' || true"]);
    assert_eq!(out.stdout.trim(), "0", "{out}");
    sim.assert_clean();
}

/// `vm cp` both ways with a directory tree (modes, symlinks, content), into
/// an existing directory and as a new name, and `-` as a tar stream.
#[test]
fn vm_cp_copies_trees_both_ways_keeping_modes() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    sim.ok(["vm", "create", "--name", "box"]);
    let root = sim.env.root();
    let tree = root.join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::write(tree.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(tree.join("run.sh"), std::fs::Permissions::from_mode(0o751)).unwrap();
    std::fs::write(tree.join("sub/secret"), "s3cret\n").unwrap();
    std::fs::set_permissions(
        tree.join("sub/secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(
        tree.join("sub/deeper/blob.bin"),
        (0..=255u8).cycle().take(1 << 20).collect::<Vec<_>>(),
    )
    .unwrap();
    std::os::unix::fs::symlink("run.sh", tree.join("link")).unwrap();
    sim.give(&tree);
    let manifest = |dir: &str| format!("cd {dir} && {MANIFEST}");
    let host_tree = host_manifest(&tree);

    // Into the VM as a new name, then into an existing directory.
    sim.ok(["vm", "cp", &tree.to_string_lossy(), "box:/root/copied"]);
    let guest = sim.ok([
        "vm",
        "ssh",
        "box",
        "--",
        "sh",
        "-c",
        &manifest("/root/copied"),
    ]);
    assert_eq!(guest.stdout, host_tree);
    sim.ok(["vm", "ssh", "box", "--", "mkdir", "/root/inbox"]);
    sim.ok(["vm", "cp", &tree.to_string_lossy(), "box:inbox"]);
    let guest = sim.ok([
        "vm",
        "ssh",
        "box",
        "--",
        "sh",
        "-c",
        &manifest("/root/inbox/tree"),
    ]);
    assert_eq!(guest.stdout, host_tree);

    // Out of the VM as a new name, and a single file into a directory.
    let back = root.join("back");
    sim.ok(["vm", "cp", "box:/root/copied", &back.to_string_lossy()]);
    assert_eq!(host_manifest(&back), host_tree);
    sim.ok(["vm", "cp", "box:/etc/hostname", &root.to_string_lossy()]);
    assert_eq!(
        std::fs::read_to_string(root.join("hostname")).unwrap(),
        "box\n"
    );

    // Tar streams both ways.
    let out = sim.exec_as_user(
        "sh",
        [
            "-c",
            &format!(
                "{} vm cp box:/root/copied - | tar -t | sort",
                banger_testkit::binary("banger").display()
            ),
        ],
    );
    assert!(out.stdout.contains("copied/sub/deeper/blob.bin"), "{out}");
    let out = sim.exec_as_user(
        "sh",
        [
            "-c",
            &format!(
                "tar -c -C {} run.sh | {} vm cp - box:/tmp && echo sent",
                tree.display(),
                banger_testkit::binary("banger").display()
            ),
        ],
    );
    assert_eq!(out.stdout, "sent\n", "{out}");
    let mode = sim.ok(["vm", "ssh", "box", "--", "stat", "-c", "%a", "/tmp/run.sh"]);
    assert_eq!(mode.stdout.trim(), "751");

    // Both sides on the host, or a missing guest path: clear errors.
    let out = sim.banger(["vm", "cp", "a", "b"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("one side of `vm cp` must be a VM"),
        "{out}"
    );
    let out = sim.banger(["vm", "cp", "box:/nope", &root.to_string_lossy()]);
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("/nope: no such file or directory"),
        "{out}"
    );
    sim.ok(["vm", "delete", "box"]);
    sim.assert_clean();
}

/// `vm run --rm` names the workspace changes it discards, and with
/// `--export FILE` saves them first as a patch for the host checkout.
#[test]
fn vm_run_rm_names_or_exports_the_changes_it_deletes() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    let repo = messy_repo(&sim, sim.env.root());
    let work = "echo changed >> committed.txt && echo fresh > created.txt";
    let out = sim.ok([
        "vm",
        "run",
        "--rm",
        &repo.to_string_lossy(),
        "--",
        "sh",
        "-c",
        work,
    ]);
    assert!(
        out.stderr
            .contains("workspace: discarding 2 files changed in")
            && out.stderr.contains("committed.txt, created.txt"),
        "{out}"
    );
    let patch = sim.env.root().join("kept.patch");
    let out = sim.ok([
        "vm",
        "run",
        "--rm",
        "--export",
        &patch.to_string_lossy(),
        &repo.to_string_lossy(),
        "--",
        "sh",
        "-c",
        work,
    ]);
    assert!(out.stderr.contains("2 files changed"), "{out}");
    assert!(out.stderr.contains("deleted (--rm)"), "{out}");
    git(&sim, &repo, &["apply", &patch.to_string_lossy()]);
    assert_eq!(
        std::fs::read_to_string(repo.join("created.txt")).unwrap(),
        "fresh\n"
    );
    // --export without --rm or a path is a usage error.
    let out = sim.banger(["vm", "run", "--export", "x.patch", "--", "true"]);
    out.assert_code(2);
    assert_eq!(sim.ok(["vm", "list", "--json"]).stdout.trim(), "[]");
    sim.assert_clean();
}
