//! Catalog downloads from a local HTTP server: a correct and a corrupted
//! artifact, size mismatches, hostile archives, atomic publishing, the
//! plain-http policy.

use std::path::Path;
use std::sync::Mutex;

use banger_image::catalog::{
    ExtractArtifactError, FetchArtifactError, InstallKernelError, LoadCatalogError,
};
use banger_image::http::HttpError;
use banger_image::{
    ArtifactStore, Catalog, HttpClient, ImageSourceRef, ProgressEvent, Timeouts, TransportPolicy,
    UnpackOptions, extract_artifact, install_kernel, publish_dir, resolve_image,
};
use serde_json::json;

use crate::support::server::Server;
use crate::support::tarball::{Tarball, zstd};
use crate::support::{Sandbox, tree};

fn http() -> HttpClient {
    HttpClient::new(TransportPolicy::default(), Timeouts::default()).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

struct Served {
    server: Server,
    _dir: tempfile::TempDir,
    kernel: Vec<u8>,
    catalog_url: String,
}

/// Serves a kernel artifact, an image artifact, a corrupted kernel (its
/// sha256 in the catalog does not match), a kernel whose size is wrong, a
/// hostile image, and the catalog listing them.
async fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let mut kernel = Tarball::new();
    kernel
        .file("vmlinux", b"\x7fELF fake kernel")
        .file("initrd.img", b"fake initrd");
    let kernel = zstd(&kernel.bytes());
    let mut image = Tarball::new();
    image
        .dir("etc")
        .file("etc/os-release", b"ID=golden\n")
        .symlink("bin", "usr/bin")
        .file_with("usr/bin/sh", b"sh", 0o755, 0, 0, 0);
    let image = zstd(&image.bytes());
    let mut evil = Tarball::new();
    evil.file("../../evil", b"x");
    let evil = zstd(&evil.bytes());
    let mut corrupted = kernel.clone();
    let last = corrupted.len() - 1;
    corrupted[last] ^= 0x55;
    for (name, bytes) in [
        ("kernel.tar.zst", &kernel),
        ("image.tar.zst", &image),
        ("corrupt.tar.zst", &corrupted),
        ("evil.tar.zst", &evil),
    ] {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let server = Server::files(dir.path()).await;
    let url = |name: &str| format!("http://{}/{name}", server.addr());
    let arch = std::env::consts::ARCH;
    let artifact = |name: &str, bytes: &[u8]| json!({ "url": url(name), "sha256": sha256_hex(bytes), "size": bytes.len() });
    let catalog = json!({
        "version": 1,
        "kernels": [
            { "name": "test-kernel", "description": "fake", "arch": arch, "artifact": artifact("kernel.tar.zst", &kernel) },
            // The catalog describes the good kernel; the server sends corrupted bytes.
            { "name": "corrupt-kernel", "arch": arch, "artifact": { "url": url("corrupt.tar.zst"), "sha256": sha256_hex(&kernel), "size": kernel.len() } },
            { "name": "short-kernel", "arch": arch, "artifact": { "url": url("kernel.tar.zst"), "sha256": sha256_hex(&kernel), "size": kernel.len() - 10 } },
            { "name": "missing-kernel", "arch": arch, "artifact": { "url": url("nope.tar.zst"), "sha256": sha256_hex(b"x"), "size": 1 } },
            { "name": "image-as-kernel", "arch": arch, "artifact": artifact("image.tar.zst", &image) },
        ],
        "images": [
            { "name": "golden", "arch": arch, "kernel": "test-kernel", "artifact": artifact("image.tar.zst", &image) },
            { "name": "evil", "arch": arch, "kernel": "test-kernel", "artifact": artifact("evil.tar.zst", &evil) },
        ],
    });
    std::fs::write(
        dir.path().join("catalog.json"),
        serde_json::to_vec(&catalog).unwrap(),
    )
    .unwrap();
    let catalog_url = url("catalog.json");
    Served {
        server,
        _dir: dir,
        kernel,
        catalog_url,
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<ProgressEvent>>);

impl banger_image::Progress for Recorder {
    fn event(&self, event: &ProgressEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

fn no_partials(cache: &Path) {
    let tmp = cache.join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|dir| dir.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "temporary downloads left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_from_a_served_catalog_is_verified_and_published() {
    let served = serve().await;
    let http = http();
    let catalog = Catalog::load(Some(&served.catalog_url), &http)
        .await
        .unwrap();
    let entry = catalog.kernel("test-kernel").expect("listed").clone();
    let cache = tempfile::tempdir().unwrap();
    let store = ArtifactStore::new(http.clone(), cache.path());
    let state = tempfile::tempdir().unwrap();
    let dest = state.path().join("kernels/abc");
    let recorder = Recorder::default();

    let files = install_kernel(&store, &entry, &dest, &recorder)
        .await
        .unwrap();
    assert_eq!(files.vmlinux, dest.join("vmlinux"));
    assert_eq!(
        std::fs::read(&files.vmlinux).unwrap(),
        b"\x7fELF fake kernel"
    );
    assert_eq!(
        files.initrd.as_deref(),
        Some(dest.join("initrd.img").as_path())
    );
    assert_eq!(
        std::fs::read(store.cached_path(&entry.artifact)).unwrap(),
        served.kernel,
        "verified artifact is cached"
    );
    // Nothing but the published directory in the parent.
    assert_eq!(
        tree(&state.path().join("kernels")),
        ["abc", "abc/initrd.img", "abc/vmlinux"]
    );
    no_partials(cache.path());
    let events = recorder.0.lock().unwrap().clone();
    assert!(events.iter().any(|event| matches!(
        event,
        ProgressEvent::Download { artifact, state: banger_image::BlobState::Verified, done, total }
            if artifact == "test-kernel" && done == total
    )));

    // A second install comes from the cache: no second download.
    let gets = || {
        served
            .server
            .seen()
            .iter()
            .filter(|seen| seen.path == "/kernel.tar.zst")
            .count()
    };
    assert_eq!(gets(), 1);
    install_kernel(
        &store,
        &entry,
        &state.path().join("kernels/def"),
        &banger_image::NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(gets(), 1);

    // Publishing never replaces an existing kernel.
    let err = install_kernel(&store, &entry, &dest, &banger_image::NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, InstallKernelError::Publish(_)), "{err}");
    assert_eq!(
        tree(&state.path().join("kernels")).len(),
        6,
        "a failed publish left a staging directory"
    );

    // An archive without vmlinux is not a kernel.
    let entry = catalog.kernel("image-as-kernel").unwrap().clone();
    let err = install_kernel(
        &store,
        &entry,
        &state.path().join("kernels/ghi"),
        &banger_image::NoProgress,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            InstallKernelError::Missing {
                file: "vmlinux",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(tree(&state.path().join("kernels")).len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_and_wrongly_sized_artifacts_are_deleted_with_a_clear_error() {
    let served = serve().await;
    let http = http();
    let catalog = Catalog::load(Some(&served.catalog_url), &http)
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let store = ArtifactStore::new(http, cache.path());

    let entry = catalog.kernel("corrupt-kernel").unwrap().clone();
    let dest = cache.path().join("never");
    let err = install_kernel(&store, &entry, &dest, &banger_image::NoProgress)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, InstallKernelError::Fetch(inner) if matches!(**inner, FetchArtifactError::Sha256 { .. })),
        "{message}"
    );
    assert!(
        message.contains("corrupt-kernel") && message.contains("deleted"),
        "{message}"
    );
    assert!(!store.cached_path(&entry.artifact).exists());
    assert!(!dest.exists());
    no_partials(cache.path());

    let entry = catalog.kernel("short-kernel").unwrap().clone();
    let err = store
        .download(&entry.name, &entry.artifact, &banger_image::NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchArtifactError::Size { .. }), "{err}");
    assert!(err.to_string().contains("short-kernel"));
    no_partials(cache.path());

    let entry = catalog.kernel("missing-kernel").unwrap().clone();
    let err = store
        .download(&entry.name, &entry.artifact, &banger_image::NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FetchArtifactError::Http { source: HttpError::Status { status, .. }, .. } if status.as_u16() == 404),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_images_extract_into_staging_and_names_resolve_catalog_first() {
    let served = serve().await;
    let http = http();
    let catalog = Catalog::load(Some(&served.catalog_url), &http)
        .await
        .unwrap();
    let ImageSourceRef::Catalog(entry) = resolve_image(&catalog, "golden").unwrap() else {
        panic!("golden is a catalog image");
    };
    assert!(matches!(
        resolve_image(&catalog, "debian:bookworm").unwrap(),
        ImageSourceRef::Oci(_)
    ));
    let cache = tempfile::tempdir().unwrap();
    let store = ArtifactStore::new(http, cache.path());
    let file = store
        .download(&entry.name, &entry.artifact, &banger_image::NoProgress)
        .await
        .unwrap();
    let sandbox = Sandbox::new();
    let size = extract_artifact(
        &entry.name,
        &entry.artifact,
        &file,
        &sandbox.staging(),
        UnpackOptions::default(),
    )
    .unwrap();
    assert_eq!(
        tree(&sandbox.staging()),
        [
            "bin",
            "etc",
            "etc/os-release",
            "usr",
            "usr/bin",
            "usr/bin/sh"
        ]
    );
    assert_eq!(size.inodes, 7);
    let published = sandbox.dir.path().join("published");
    publish_dir(&sandbox.staging(), &published).unwrap();
    assert!(published.join("etc/os-release").exists());

    // A cached artifact that changed on disk is caught at extraction.
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let other = Sandbox::new();
    let err = extract_artifact(
        &entry.name,
        &entry.artifact,
        &file,
        &other.staging(),
        UnpackOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ExtractArtifactError::Corrupt { .. } | ExtractArtifactError::Unpack { .. }
        ),
        "{err}"
    );
    assert!(!file.exists());
    assert!(!other.staging().exists());

    // A hostile golden image is refused like a hostile layer.
    let ImageSourceRef::Catalog(evil) = resolve_image(&catalog, "evil").unwrap() else {
        panic!("evil is a catalog image");
    };
    let file = store
        .download(&evil.name, &evil.artifact, &banger_image::NoProgress)
        .await
        .unwrap();
    let sandbox = Sandbox::new();
    let err = extract_artifact(
        &evil.name,
        &evil.artifact,
        &file,
        &sandbox.staging(),
        UnpackOptions::default(),
    )
    .unwrap_err();
    let message = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        message.contains("artifact evil") && message.contains("../../evil"),
        "{message}"
    );
    assert!(!sandbox.staging().exists());
    sandbox.assert_untouched();
}

#[tokio::test]
async fn catalogs_over_plain_http_must_be_local() {
    let err = Catalog::load(Some("http://catalog.example.com/catalog.json"), &http())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LoadCatalogError::Fetch {
                source: HttpError::Insecure { .. },
                ..
            }
        ),
        "{err}"
    );
    // Listed as insecure: allowed by policy (the request itself then fails
    // here, since this machine has no route to it; the policy is what is tested).
    let policy = TransportPolicy {
        insecure_hosts: vec!["catalog.example.com".into()],
    };
    let client = HttpClient::new(policy, Timeouts::default()).unwrap();
    assert!(
        client
            .check_url("http://catalog.example.com/catalog.json")
            .is_ok()
    );
    // No configured URL: the embedded catalog.
    let embedded = Catalog::load(None, &http()).await.unwrap();
    assert_eq!(embedded, Catalog::embedded());
}
