//! A git index filled in with stat data, judged by real git: entries filled
//! with the files' own stat are clean without git reading them (the index
//! is not rewritten by a refresh); a file changed since is still seen.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use banger_disk::git_index::{EntryStat, fill_stat};

fn git(dir: &Path, index: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_INDEX_FILE", index)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs")
}

fn ok(output: std::process::Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

fn stat_of(path: &Path) -> EntryStat {
    let meta = std::fs::symlink_metadata(path).unwrap();
    EntryStat {
        ctime: (meta.ctime() as u32, meta.ctime_nsec() as u32),
        mtime: (meta.mtime() as u32, meta.mtime_nsec() as u32),
        ino: meta.ino() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.len(),
    }
}

fn filled_index_is_trusted(object_format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("src")).unwrap();
    ok(git(
        &repo,
        &repo.join(".git/index"),
        &["init", "-q", &format!("--object-format={object_format}")],
    ));
    std::fs::write(repo.join("README"), b"readme\n").unwrap();
    std::fs::write(repo.join("src/main.rs"), b"fn main() {}\n").unwrap();
    std::os::unix::fs::symlink("README", repo.join("link")).unwrap();
    let index = repo.join(".git/index");
    ok(git(&repo, &index, &["add", "-A"]));
    ok(git(
        &repo,
        &index,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "commit",
            "-qm",
            "c",
        ],
    ));
    // What the client stages: HEAD read into an index with no stat data.
    let staged = dir.path().join("staged-index");
    ok(git(&repo, &staged, &["read-tree", "HEAD"]));
    // Modified after the listing, before the write: left empty, so seen.
    std::thread::sleep(std::time::Duration::from_millis(10));
    let mut bytes = std::fs::read(&staged).unwrap();
    let filled = fill_stat(&mut bytes, |path| match path {
        b"README" | b"link" => Some(stat_of(&repo.join(std::str::from_utf8(path).unwrap()))),
        _ => None,
    })
    .unwrap();
    assert_eq!(filled, 2);
    std::fs::write(&staged, &bytes).unwrap();
    // git reads it (the checksum holds) and trusts the filled entries.
    ok(git(&repo, &staged, &["ls-files", "--debug"]));
    // diff-files lists what the stat data does not vouch for: only
    // src/main.rs, which has none.
    let unvouched = git(&repo, &staged, &["diff-files", "--name-only"]);
    assert_eq!(ok(unvouched), "src/main.rs\n");
    let before = std::fs::read(&staged).unwrap();
    ok(git(&repo, &staged, &["update-index", "-q", "--refresh"]));
    let after = std::fs::read(&staged).unwrap();
    // The refresh wrote src/main.rs's stat data only: the filled entries
    // were not touched (same bytes there).
    let entry = |index: &[u8], name: &[u8]| {
        let at = index.windows(name.len()).position(|w| w == name).unwrap();
        index[at - 62 - if object_format == "sha256" { 12 } else { 0 }..at].to_vec()
    };
    assert_eq!(entry(&before, b"README"), entry(&after, b"README"));
    assert_eq!(entry(&before, b"link"), entry(&after, b"link"));
    assert_ne!(
        entry(&before, b"src/main.rs"),
        entry(&after, b"src/main.rs")
    );

    // A file changed under a filled entry, to the same size: seen.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(repo.join("README"), b"README\n").unwrap();
    assert_eq!(
        ok(git(&repo, &staged, &["diff-files", "--name-only"])),
        "README\n"
    );
}

#[test]
fn a_filled_sha1_index_is_trusted_by_git() {
    filled_index_is_trusted("sha1");
}

#[test]
fn a_filled_sha256_index_is_trusted_by_git() {
    filled_index_is_trusted("sha256");
}
