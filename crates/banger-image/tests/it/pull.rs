//! Pulls from a real registry (Debian's docker-registry on 127.0.0.1):
//! multi-layer images in OCI and Docker media types, gzip/zstd/plain
//! layers, indexes, digests, the cache, interrupted and resumed downloads,
//! token auth and redirects (through a recording proxy), hostile layers.

use std::path::Path;
use std::sync::Mutex;

use banger_image::progress::BlobState;
use banger_image::pull::PullError;
use banger_image::registry::ResolveError;
use banger_image::{BlobCache, ProgressEvent, PullOptions, Puller, Reference, UnpackOptions};

use crate::support::registry::{Layer, Registry, push_image, push_index, sha256_digest};
use crate::support::server::{Cut, Server};
use crate::support::tarball::Tarball;
use crate::support::{Sandbox, tree};

fn puller(cache: &Path) -> Puller {
    Puller::new(PullOptions::new(cache)).unwrap()
}

fn reference(raw: &str) -> Reference {
    raw.parse().unwrap()
}

/// A progress sink that keeps every event.
#[derive(Default)]
struct Recorder(Mutex<Vec<ProgressEvent>>);

impl Recorder {
    fn events(&self) -> Vec<ProgressEvent> {
        self.0.lock().unwrap().clone()
    }
}

impl banger_image::Progress for Recorder {
    fn event(&self, event: &ProgressEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

/// Three layers (gzip, zstd, plain) exercising whiteouts, opaque dirs,
/// hard links across layers, symlink chains and file → dir replacement.
fn fixture_layers() -> Vec<Layer> {
    let mut one = Tarball::new();
    one.dir("etc")
        .file("etc/os-release", b"ID=banger-test\n")
        .file("etc/remove-me", b"x")
        .dir("usr/bin")
        .file_with("usr/bin/busybox", b"#!busybox", 0o755, 0, 0, 1_600_000_000)
        .symlink("bin", "usr/bin")
        .dir("opt/old")
        .file("opt/old/file", b"old")
        .file("replaced", b"file");
    let mut two = Tarball::new();
    two.whiteout("etc/remove-me")
        .opaque("opt/old")
        .file("opt/old/new", b"new")
        .hardlink("usr/bin/sh", "usr/bin/busybox")
        .dir("replaced")
        .file("replaced/child", b"child")
        .symlink("sbin", "bin");
    let mut three = Tarball::new();
    three.file("sbin/tool", b"tool").file("etc/arch", b"amd64");
    vec![
        Layer::gzip(&one.bytes()),
        Layer::zstd(&two.bytes()),
        Layer::plain(&three.bytes()),
    ]
}

fn check_fixture_tree(staging: &Path) {
    assert_eq!(
        tree(staging),
        [
            "bin",
            "etc",
            "etc/arch",
            "etc/os-release",
            "opt",
            "opt/old",
            "opt/old/new",
            "replaced",
            "replaced/child",
            "sbin",
            "usr",
            "usr/bin",
            "usr/bin/busybox",
            "usr/bin/sh",
            "usr/bin/tool",
        ]
    );
    use std::os::unix::fs::MetadataExt;
    let busybox = std::fs::metadata(staging.join("usr/bin/busybox")).unwrap();
    assert_eq!(
        busybox.ino(),
        std::fs::metadata(staging.join("usr/bin/sh")).unwrap().ino()
    );
    assert_eq!(
        std::fs::read(staging.join("usr/bin/tool")).unwrap(),
        b"tool"
    );
    assert_eq!(std::fs::read(staging.join("etc/arch")).unwrap(), b"amd64");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_a_multi_layer_image_then_hits_the_cache() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let addr = registry.addr();
    let layers = fixture_layers();
    let pushed = push_image(&addr, "test/multi", "v1", &layers, false, "amd64").await;
    let cache = tempfile::tempdir().unwrap();
    let puller = puller(cache.path());
    let sandbox = Sandbox::new();
    let recorder = Recorder::default();

    let pulled = puller
        .pull(
            &reference(&format!("{addr}/test/multi:v1")),
            &sandbox.staging(),
            UnpackOptions::default(),
            &recorder,
        )
        .await
        .unwrap();
    check_fixture_tree(&sandbox.staging());
    sandbox.assert_untouched();

    let metadata = &pulled.metadata;
    assert_eq!(metadata.reference, format!("{addr}/test/multi:v1"));
    assert_eq!(metadata.manifest_digest.to_string(), pushed.manifest_digest);
    let layer_digests: Vec<String> = metadata
        .layer_digests
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(layer_digests, pushed.layer_digests);
    assert!(metadata.config.env.contains(&"BANGER_TEST=1".to_owned()));
    assert_eq!(
        metadata.compressed_size,
        layers
            .iter()
            .map(|layer| layer.blob.len() as u64)
            .sum::<u64>()
    );
    assert!(metadata.uncompressed_size > metadata.compressed_size / 2);
    let banger_model::image::ImageSource::Pull {
        layer_digests: recorded,
        ..
    } = metadata.source()
    else {
        panic!("not a pull source");
    };
    assert_eq!(recorded, pushed.layer_digests);
    assert_eq!(pulled.stats.blobs_downloaded, 3);
    assert_eq!(pulled.stats.blobs_cached, 0);
    assert_eq!(pulled.content.inodes, 15); // root + 15 entries, hard-linked sh once
    for digest in &pushed.layer_digests {
        let hex = digest.trim_start_matches("sha256:");
        assert!(cache.path().join("blobs/sha256").join(hex).is_file());
    }

    let events = recorder.events();
    assert!(matches!(
        events.first(),
        Some(ProgressEvent::Resolved {
            layers: 3,
            cached_bytes: 0,
            ..
        })
    ));
    let verified = events
        .iter()
        .filter(|event| {
            matches!(
                event,
                ProgressEvent::Blob {
                    state: BlobState::Verified,
                    ..
                }
            )
        })
        .count();
    assert_eq!(verified, 3);
    let applied: Vec<usize> = events
        .iter()
        .filter_map(|event| match event {
            ProgressEvent::LayerApplied { index, .. } => Some(*index),
            _ => None,
        })
        .collect();
    assert_eq!(applied, [0, 1, 2]);
    let Some(ProgressEvent::Blob {
        overall_done,
        overall_total,
        ..
    }) = events
        .iter()
        .rev()
        .find(|event| matches!(event, ProgressEvent::Blob { .. }))
    else {
        panic!("no blob events");
    };
    assert_eq!(overall_done, overall_total);

    // Second pull: the registry serves no blob at all.
    let gets_before = registry.blob_gets().len();
    assert!(gets_before >= 4, "config + 3 layers: {gets_before}");
    let second = Sandbox::new();
    let recorder = Recorder::default();
    let again = puller
        .pull(
            &reference(&format!("{addr}/test/multi:v1")),
            &second.staging(),
            UnpackOptions::default(),
            &recorder,
        )
        .await
        .unwrap();
    check_fixture_tree(&second.staging());
    assert_eq!(
        registry.blob_gets().len(),
        gets_before,
        "second pull downloaded blobs:\n{}",
        registry.log()
    );
    assert_eq!(again.stats.blobs_downloaded, 0);
    assert_eq!(again.stats.blobs_cached, 3);
    assert_eq!(again.stats.bytes_downloaded, 0);
    assert!(recorder.events().iter().any(|event| matches!(
        event,
        ProgressEvent::Resolved { cached_bytes, total_bytes, .. } if cached_bytes == total_bytes
    )));

    // A pull by digest names the same image.
    let third = Sandbox::new();
    let pinned = puller
        .pull(
            &reference(&format!("{addr}/test/multi@{}", pushed.manifest_digest)),
            &third.staging(),
            UnpackOptions::default(),
            &banger_image::NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(pinned.metadata.manifest_digest, metadata.manifest_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolves_indexes_and_docker_media_types() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let addr = registry.addr();
    let layer_for = |arch: &str| {
        let mut tarball = Tarball::new();
        tarball.file("etc/arch", arch.as_bytes());
        tarball.bytes()
    };
    for docker in [false, true] {
        let repo = if docker { "test/docker" } else { "test/oci" };
        let make = |tar: &[u8]| {
            if docker {
                Layer::docker_gzip(tar)
            } else {
                Layer::gzip(tar)
            }
        };
        let amd = push_image(
            &addr,
            repo,
            "amd64",
            &[make(&layer_for("amd64"))],
            docker,
            "amd64",
        )
        .await;
        let arm = push_image(
            &addr,
            repo,
            "arm64",
            &[make(&layer_for("arm64"))],
            docker,
            "arm64",
        )
        .await;
        let index = push_index(
            &addr,
            repo,
            "multi",
            &[
                (&arm.manifest_digest, arm.manifest_size, "arm64"),
                (&amd.manifest_digest, amd.manifest_size, "amd64"),
            ],
            docker,
        )
        .await;
        let cache = tempfile::tempdir().unwrap();
        let sandbox = Sandbox::new();
        let pulled = puller(cache.path())
            .pull(
                &reference(&format!("{addr}/{repo}:multi")),
                &sandbox.staging(),
                UnpackOptions::default(),
                &banger_image::NoProgress,
            )
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(sandbox.staging().join("etc/arch")).unwrap(),
            b"amd64",
            "{repo}"
        );
        assert_eq!(
            pulled.metadata.manifest_digest.to_string(),
            amd.manifest_digest
        );
        assert_eq!(pulled.metadata.platform, "linux/amd64");

        let resolved = puller(cache.path())
            .resolve(&reference(&format!("{addr}/{repo}:multi")))
            .await
            .unwrap();
        assert_eq!(resolved.index_digest.unwrap().to_string(), index);

        // An arm64 puller picks the other entry.
        let mut options = PullOptions::new(cache.path());
        options.platform = banger_image::Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: None,
        };
        let arm_sandbox = Sandbox::new();
        Puller::new(options)
            .unwrap()
            .pull(
                &reference(&format!("{addr}/{repo}:multi")),
                &arm_sandbox.staging(),
                UnpackOptions::default(),
                &banger_image::NoProgress,
            )
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(arm_sandbox.staging().join("etc/arch")).unwrap(),
            b"arm64"
        );
    }

    // No image for the platform: a clear error listing what there is.
    let mut options = PullOptions::new(tempfile::tempdir().unwrap().path());
    options.platform.architecture = "riscv64".into();
    let err = Puller::new(options)
        .unwrap()
        .resolve(&reference(&format!("{addr}/test/oci:multi")))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ResolveError::NoPlatform { .. }), "{message}");
    assert!(
        message.contains("linux/riscv64") && message.contains("linux/arm64"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_images_and_wrong_digests_are_clear_errors() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let addr = registry.addr();
    let cache = tempfile::tempdir().unwrap();
    let puller = puller(cache.path());
    let err = puller
        .resolve(&reference(&format!("{addr}/test/none:nope")))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ResolveError::NotFound { .. }), "{message}");
    assert!(
        message.contains("test/none:nope") && message.contains("MANIFEST_UNKNOWN"),
        "{message}"
    );

    let pushed = push_image(
        &addr,
        "test/dig",
        "v1",
        &fixture_layers()[..1],
        false,
        "amd64",
    )
    .await;
    let wrong = sha256_digest(b"something else");
    let err = puller
        .resolve(&reference(&format!("{addr}/test/dig@{wrong}")))
        .await
        .unwrap_err();
    assert!(matches!(err, ResolveError::NotFound { .. }), "{err}");
    assert!(!pushed.manifest_digest.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_pull_resumes_from_cached_and_partial_blobs() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let proxy = Server::proxy(&registry.addr()).await;
    let addr = proxy.addr();
    // A big incompressible layer plus two small ones.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..6 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut big = Tarball::new();
    big.file("noise", &noise);
    let mut layers = fixture_layers();
    layers.insert(1, Layer::gzip(&big.bytes()));
    let big_digest = layers[1].digest();
    let big_size = layers[1].blob.len() as u64;
    let pushed = push_image(
        &registry.addr(),
        "test/resume",
        "v1",
        &layers,
        false,
        "amd64",
    )
    .await;
    let cache_dir = tempfile::tempdir().unwrap();
    let mut options = PullOptions::new(cache_dir.path());
    options.retries = 1;
    let puller = Puller::new(options).unwrap();

    // Every attempt at the big blob dies after 1 MiB: the pull fails.
    proxy.cut(Cut {
        path_contains: big_digest.clone(),
        after: 1024 * 1024,
        times: 2,
        stall: false,
    });
    let sandbox = Sandbox::new();
    let err = puller
        .pull(
            &reference(&format!("{addr}/test/resume:v1")),
            &sandbox.staging(),
            UnpackOptions::default(),
            &banger_image::NoProgress,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Blob { .. }), "{err}");
    assert!(
        !sandbox.staging().exists(),
        "a failed pull left its staging directory"
    );
    sandbox.assert_untouched();
    // The second attempt asked for the rest, not the whole blob.
    let big_gets: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|seen| seen.path.contains(&big_digest))
        .collect();
    assert_eq!(big_gets.len(), 2, "{big_gets:?}");
    assert_eq!(big_gets[0].range, None);
    assert_eq!(big_gets[1].range.as_deref(), Some("bytes=1048576-"));
    // Only complete, verified blobs are in the cache; the rest is partial.
    let cache = BlobCache::new(cache_dir.path());
    assert!(!cache.blob_path(&big_digest.parse().unwrap()).exists());
    let partial = cache_dir.path().join("incoming").join(format!(
        "{}.partial",
        big_digest.trim_start_matches("sha256:")
    ));
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 2 * 1024 * 1024);
    for blob in std::fs::read_dir(cache_dir.path().join("blobs/sha256")).unwrap() {
        let blob = blob.unwrap().path();
        let bytes = std::fs::read(&blob).unwrap();
        assert_eq!(
            sha256_digest(&bytes),
            format!("sha256:{}", blob.file_name().unwrap().to_str().unwrap())
        );
    }

    // Resume: the small layers come from the cache, the big one from byte 2 MiB on.
    proxy.clear_seen();
    let sandbox = Sandbox::new();
    let pulled = puller
        .pull(
            &reference(&format!("{addr}/test/resume:v1")),
            &sandbox.staging(),
            UnpackOptions::default(),
            &banger_image::NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(sandbox.staging().join("noise")).unwrap(),
        noise
    );
    let blob_gets: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|seen| seen.path.contains("/blobs/"))
        .collect();
    assert_eq!(
        blob_gets.len(),
        1,
        "only the partial blob is fetched again: {blob_gets:?}"
    );
    assert_eq!(blob_gets[0].range.as_deref(), Some("bytes=2097152-"));
    assert_eq!(blob_gets[0].bytes(), big_size - 2 * 1024 * 1024);
    assert_eq!(pulled.stats.bytes_resumed, 2 * 1024 * 1024);
    assert_eq!(pulled.stats.bytes_downloaded, big_size - 2 * 1024 * 1024);
    assert_eq!(
        pulled.metadata.manifest_digest.to_string(),
        pushed.manifest_digest
    );
    assert!(!partial.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_retried_within_one_pull() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let proxy = Server::proxy(&registry.addr()).await;
    let layers = fixture_layers();
    let target = layers[0].digest();
    push_image(
        &registry.addr(),
        "test/retry",
        "v1",
        &layers,
        false,
        "amd64",
    )
    .await;
    proxy.cut(Cut {
        path_contains: target.clone(),
        after: 100,
        times: 1,
        stall: false,
    });
    let cache = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new();
    let recorder = Recorder::default();
    puller(cache.path())
        .pull(
            &reference(&format!("{}/test/retry:v1", proxy.addr())),
            &sandbox.staging(),
            UnpackOptions::default(),
            &recorder,
        )
        .await
        .unwrap();
    check_fixture_tree(&sandbox.staging());
    assert!(recorder.events().iter().any(|event| matches!(
        event,
        ProgressEvent::Blob {
            state: BlobState::Retrying,
            ..
        }
    )));
    let ranges: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|seen| seen.path.contains(&target))
        .map(|seen| seen.range)
        .collect();
    assert_eq!(ranges, [None, Some("bytes=100-".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_token_auth_and_cross_host_redirects() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let proxy = Server::proxy(&registry.addr()).await;
    proxy.require_token("anon-token-123");
    proxy.redirect_blobs();
    push_image(
        &registry.addr(),
        "library/authed",
        "v1",
        &fixture_layers(),
        false,
        "amd64",
    )
    .await;
    let cache = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new();
    puller(cache.path())
        .pull(
            &reference(&format!("{}/library/authed:v1", proxy.addr())),
            &sandbox.staging(),
            UnpackOptions::default(),
            &banger_image::NoProgress,
        )
        .await
        .unwrap();
    check_fixture_tree(&sandbox.staging());
    let seen = proxy.seen();
    let token_requests: Vec<_> = seen
        .iter()
        .filter(|seen| seen.path.starts_with("/token"))
        .collect();
    // One challenge, one token, reused for the rest of the pull.
    assert_eq!(token_requests.len(), 1, "{seen:?}");
    assert!(
        token_requests[0]
            .path
            .contains("scope=repository%3Alibrary%2Fauthed%3Apull")
    );
    assert_eq!(seen.iter().filter(|seen| seen.status == 401).count(), 1);
    // Blobs were answered by redirects to the registry itself.
    assert!(seen.iter().filter(|seen| seen.status == 307).count() >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_layers_from_the_registry_are_refused() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let addr = registry.addr();
    let mut good = Tarball::new();
    good.file("etc/ok", b"ok");
    let mut evil = Tarball::new();
    evil.file("etc/fine", b"fine")
        .hardlink("shadow", "/etc/shadow");
    let layers = [Layer::gzip(&good.bytes()), Layer::gzip(&evil.bytes())];
    let evil_digest = layers[1].digest();
    push_image(&addr, "test/evil", "v1", &layers, false, "amd64").await;
    let cache = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new();
    let err = puller(cache.path())
        .pull(
            &reference(&format!("{addr}/test/evil:v1")),
            &sandbox.staging(),
            UnpackOptions::default(),
            &banger_image::NoProgress,
        )
        .await
        .unwrap_err();
    let PullError::Unpack { source, .. } = &err else {
        panic!("expected an unpack error: {err}");
    };
    let message = source.to_string();
    assert!(
        message.contains(&evil_digest)
            && message.contains("\"shadow\"")
            && message.contains("/etc/shadow"),
        "{message}"
    );
    assert!(!sandbox.staging().exists());
    sandbox.assert_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_cached_blob_is_detected_and_deleted() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let addr = registry.addr();
    let layers = fixture_layers();
    push_image(&addr, "test/corrupt", "v1", &layers, false, "amd64").await;
    let cache_dir = tempfile::tempdir().unwrap();
    let puller = puller(cache_dir.path());
    let sandbox = Sandbox::new();
    puller
        .pull(
            &reference(&format!("{addr}/test/corrupt:v1")),
            &sandbox.staging(),
            UnpackOptions::default(),
            &banger_image::NoProgress,
        )
        .await
        .unwrap();
    // Flip bytes in a cached layer without changing its size.
    let blob = puller
        .cache()
        .blob_path(&layers[2].digest().parse().unwrap());
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let second = Sandbox::new();
    let err = puller
        .pull(
            &reference(&format!("{addr}/test/corrupt:v1")),
            &second.staging(),
            UnpackOptions::default(),
            &banger_image::NoProgress,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Unpack { .. }), "{err}");
    assert!(!blob.exists(), "the corrupt blob stays cached");
    assert!(!second.staging().exists());
    // And the next pull fetches it again.
    let third = Sandbox::new();
    puller
        .pull(
            &reference(&format!("{addr}/test/corrupt:v1")),
            &third.staging(),
            UnpackOptions::default(),
            &banger_image::NoProgress,
        )
        .await
        .unwrap();
    check_fixture_tree(&third.staging());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_pull_removes_its_staging_directory() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let proxy = Server::proxy(&registry.addr()).await;
    let mut layers = fixture_layers();
    let mut slow = Tarball::new();
    slow.file("slow", &vec![1u8; 512 * 1024]);
    layers.push(Layer::plain(&slow.bytes()));
    let slow_digest = layers[3].digest();
    push_image(&registry.addr(), "test/drop", "v1", &layers, false, "amd64").await;
    // The last layer hangs halfway: the first three get applied meanwhile.
    proxy.cut(Cut {
        path_contains: slow_digest,
        after: 1000,
        times: 1,
        stall: true,
    });
    let cache = tempfile::tempdir().unwrap();
    let puller = puller(cache.path());
    let sandbox = Sandbox::new();
    let recorder = Recorder::default();
    let target = reference(&format!("{}/test/drop:v1", proxy.addr()));
    let staging = sandbox.staging();
    let mut pull = Box::pin(puller.pull(&target, &staging, UnpackOptions::default(), &recorder));
    // Run the pull until three layers are applied, then drop it.
    let applied = |recorder: &Recorder| {
        recorder
            .events()
            .iter()
            .filter(|event| matches!(event, ProgressEvent::LayerApplied { .. }))
            .count()
    };
    for _ in 0..600 {
        tokio::select! {
            result = &mut pull => panic!("the stalled pull finished: {:?}", result.map(|_| ())),
            () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
        if applied(&recorder) == 3 {
            break;
        }
    }
    assert_eq!(applied(&recorder), 3);
    assert!(sandbox.staging().join("etc/arch").exists());
    drop(pull);
    assert!(
        !sandbox.staging().exists(),
        "a dropped pull left its staging directory"
    );
    sandbox.assert_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_an_image_pushed_by_skopeo() {
    if !banger_testkit::have_or_skip("pulls_an_image_pushed_by_skopeo", "skopeo", "skopeo") {
        return;
    }
    let Some(registry) = Registry::start() else {
        return;
    };
    // An OCI layout on disk, pushed by skopeo like any image tool would.
    let layout = tempfile::tempdir().unwrap();
    let blobs = layout.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let digest = sha256_digest(bytes);
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes).unwrap();
        serde_json::json!({ "digest": digest, "size": bytes.len() })
    };
    let mut descriptors = Vec::new();
    for layer in fixture_layers() {
        let mut descriptor = put(&layer.blob);
        descriptor["mediaType"] = layer.media_type.into();
        descriptors.push(descriptor);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Env": ["FROM_SKOPEO=1"] },
        "rootfs": { "type": "layers", "diff_ids": [] }
    }))
    .unwrap();
    let mut config_descriptor = put(&config);
    config_descriptor["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_descriptor,
        "layers": descriptors,
    }))
    .unwrap();
    let mut manifest_descriptor = put(&manifest);
    manifest_descriptor["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
    manifest_descriptor["annotations"] =
        serde_json::json!({ "org.opencontainers.image.ref.name": "v1" });
    std::fs::write(
        layout.path().join("index.json"),
        serde_json::to_vec(
            &serde_json::json!({ "schemaVersion": 2, "manifests": [manifest_descriptor] }),
        )
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let output = std::process::Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:v1", layout.path().display()))
        .arg(format!("docker://{}/test/skopeo:v1", registry.addr()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let cache = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new();
    let pulled = puller(cache.path())
        .pull(
            &reference(&format!("{}/test/skopeo:v1", registry.addr())),
            &sandbox.staging(),
            UnpackOptions::default(),
            &banger_image::NoProgress,
        )
        .await
        .unwrap();
    check_fixture_tree(&sandbox.staging());
    assert_eq!(pulled.metadata.config.env, ["FROM_SKOPEO=1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_layers_fills_the_cache_without_unpacking() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let addr = registry.addr();
    let pushed = push_image(
        &addr,
        "test/prefetch",
        "v1",
        &fixture_layers(),
        false,
        "amd64",
    )
    .await;
    let cache = tempfile::tempdir().unwrap();
    let puller = puller(cache.path());
    let image = puller
        .resolve(&reference(&format!("{addr}/test/prefetch:v1")))
        .await
        .unwrap();
    assert_eq!(image.layers().len(), 3);
    let stats = puller
        .fetch_layers(&image, &banger_image::NoProgress)
        .await
        .unwrap();
    assert_eq!((stats.blobs_downloaded, stats.blobs_cached), (3, 0));
    for digest in &pushed.layer_digests {
        assert!(
            puller.cache().contains(
                &digest.parse().unwrap(),
                image
                    .layers()
                    .iter()
                    .find(|l| l.digest.to_string() == *digest)
                    .unwrap()
                    .size
            )
        );
    }
    let sandbox = Sandbox::new();
    let pulled = puller
        .pull_resolved(
            &image,
            &sandbox.staging(),
            UnpackOptions::default(),
            &banger_image::NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(pulled.stats.blobs_cached, 3);
    check_fixture_tree(&sandbox.staging());
}
