//! The test-image fixture scripts under `tests/fixtures/`: a real
//! docker-registry on loopback (inside a fresh network namespace when root),
//! a tiny rootfs packed and pushed as OCI, the manifest and layer served back.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{have, output, repo_root};

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

#[test]
fn fixture_scripts_are_shellcheck_clean() {
    if !have("shellcheck", "fixture_scripts_are_shellcheck_clean") {
        return;
    }
    for script in ["debian-rootfs.sh", "oci-image.sh", "registry.sh"] {
        let (code, stdout, stderr) = output(
            Command::new("shellcheck")
                .arg("--severity=style")
                .arg(fixture(script)),
        );
        assert_eq!(code, 0, "shellcheck {script}:\n{stdout}{stderr}");
    }
}

/// Stops the registry even when the test fails half-way.
struct RegistryGuard(PathBuf);

impl Drop for RegistryGuard {
    fn drop(&mut self) {
        let _ = Command::new(fixture("registry.sh"))
            .arg("stop")
            .arg(&self.0)
            .status();
    }
}

const SCENARIO: &str = r#"
set -euo pipefail
if [ "$NETNS" = 1 ]; then ip link set lo up; fi
trap '"$FIX/registry.sh" stop "$REG"' EXIT
"$FIX/registry.sh" start "$REG" "$PORT"
"$FIX/oci-image.sh" "$TAR" "127.0.0.1:$PORT" banger/tiny:test >"$OUT/digest"
curl -fsS -D "$OUT/headers" -o "$OUT/manifest.json" \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://127.0.0.1:$PORT/v2/banger/tiny/manifests/test"
layer="$(jq -r '.layers[0].digest' "$OUT/manifest.json")"
curl -fsS -o "$OUT/layer" "http://127.0.0.1:$PORT/v2/banger/tiny/blobs/$layer"
sha256sum "$OUT/layer" | cut -d' ' -f1 >"$OUT/layer.sha256"
gzip -dc "$OUT/layer" | tar -tvf - --numeric-owner >"$OUT/layer.list"
"#;

fn read(dir: &Path, name: &str) -> String {
    fs_err::read_to_string(dir.join(name)).expect("scenario output")
}

#[test]
fn registry_serves_an_image_pushed_by_oci_image_sh() {
    let test = "registry_serves_an_image_pushed_by_oci_image_sh";
    for tool in [
        "docker-registry",
        "skopeo",
        "jq",
        "curl",
        "gzip",
        "tar",
        "sha256sum",
    ] {
        if !have(tool, test) {
            return;
        }
    }
    let root = nix::unistd::geteuid().is_root();
    let netns = root && have("unshare", test) && have("ip", test);

    let dir = tempfile::tempdir().expect("tempdir");
    let (tree, tar, reg, out) = (
        dir.path().join("tree"),
        dir.path().join("rootfs.tar"),
        dir.path().join("registry"),
        dir.path().join("out"),
    );
    fs_err::create_dir_all(tree.join("etc")).expect("tree");
    fs_err::create_dir_all(&out).expect("out");
    fs_err::write(tree.join("etc/os-release"), "ID=banger-test\n").expect("file");
    let (code, _, stderr) = output(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&tree)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    assert_eq!(code, 0, "tar: {stderr}");

    // A fresh namespace has every port free; on the host, ask the kernel.
    let port = if netns {
        5000
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port()
    };
    let _guard = RegistryGuard(reg.clone());
    let mut cmd = if netns {
        let mut cmd = Command::new("unshare");
        cmd.args(["--net", "--", "bash", "-c", SCENARIO]);
        cmd
    } else {
        let mut cmd = Command::new("bash");
        cmd.args(["-c", SCENARIO]);
        cmd
    };
    cmd.env("NETNS", if netns { "1" } else { "0" })
        .env("FIX", repo_root().join("tests/fixtures"))
        .env("REG", &reg)
        .env("PORT", port.to_string())
        .env("TAR", &tar)
        .env("OUT", &out);
    let (code, stdout, stderr) = output(&mut cmd);
    let log = fs_err::read_to_string(reg.join("registry.log")).unwrap_or_default();
    assert_eq!(
        code, 0,
        "scenario failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nregistry log:\n{log}"
    );

    let manifest: serde_json::Value =
        serde_json::from_str(&read(&out, "manifest.json")).expect("manifest is JSON");
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    // The digest oci-image.sh printed is the one the registry serves.
    let digest = read(&out, "digest").trim().to_owned();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let headers = read(&out, "headers").to_lowercase();
    assert!(
        headers.contains(&format!("docker-content-digest: {digest}")),
        "{headers}"
    );

    // The layer blob matches its digest and holds the tree, owned by root.
    let layer_digest = layers[0]["digest"].as_str().expect("digest");
    assert_eq!(
        format!("sha256:{}", read(&out, "layer.sha256").trim()),
        layer_digest
    );
    let listing = read(&out, "layer.list");
    let os_release = listing
        .lines()
        .find(|l| l.ends_with("./etc/os-release"))
        .unwrap_or_else(|| panic!("etc/os-release not in the layer:\n{listing}"));
    assert!(os_release.contains(" 0/0 "), "{os_release}");

    // The access log counts blob downloads: exactly the one above.
    let blob_gets = log
        .lines()
        .filter(|l| l.contains(&format!("\"GET /v2/banger/tiny/blobs/{layer_digest} ")))
        .count();
    assert_eq!(blob_gets, 1, "registry log:\n{log}");

    // Stopped: pidfile gone, nothing serves the storage any more.
    assert!(!reg.join("registry.pid").exists(), "pidfile left behind");
    let config = reg.join("config.yml");
    let (_, running, _) = output(Command::new("pgrep").arg("-f").arg(config.as_os_str()));
    assert_eq!(running.trim(), "", "registry still running");
}

/// Builds the real Debian fixture (needs root, debootstrap and the Debian
/// mirror; about a minute uncached), then checks that a second run is a
/// no-op. Run with `cargo test -p banger-guest -- --ignored`.
#[test]
#[ignore = "builds a Debian rootfs with debootstrap: network, root, ~1 minute"]
fn debian_rootfs_builds_once_and_is_reused() {
    let test = "debian_rootfs_builds_once_and_is_reused";
    if !banger_testkit::root_or_skip(test, "debootstrap") {
        return;
    }
    if !have("debootstrap", test) {
        return;
    }
    let outdir = repo_root().join(".cache/fixtures/debian-bookworm");
    let script = fixture("debian-rootfs.sh");
    let (code, stdout, stderr) = output(Command::new(&script).arg(&outdir));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let os_release =
        fs_err::read_to_string(outdir.join("rootfs/etc/os-release")).expect("os-release");
    assert!(
        os_release.contains("VERSION_CODENAME=bookworm"),
        "{os_release}"
    );
    for path in [
        "usr/sbin/sshd",
        "usr/bin/git",
        "usr/bin/python3",
        "lib/systemd/systemd",
    ] {
        assert!(outdir.join("rootfs").join(path).exists(), "{path} missing");
    }
    assert!(
        !outdir
            .join("rootfs/usr/local/libexec/banger-first-boot")
            .exists(),
        "the fixture must not install guest files"
    );
    let (code, stdout, _) = output(Command::new(&script).arg(&outdir));
    assert_eq!(code, 0);
    assert!(stdout.contains("is up to date"), "{stdout}");
}
