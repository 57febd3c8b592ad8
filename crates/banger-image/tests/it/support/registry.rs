//! A real registry for tests: Debian's `docker-registry` (distribution
//! 2.8) on 127.0.0.1, filesystem storage in a temp dir, no auth, its access
//! log kept so tests can count blob downloads. Images are pushed with the
//! registry API (blob uploads and manifest PUTs) from the test itself.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use sha2::Digest as _;

pub(crate) const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

pub(crate) struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// Starts a registry; `None` (with a printed reason) when the binary is
    /// missing.
    pub(crate) fn start() -> Option<Self> {
        if !Path::new(REGISTRY_BIN).exists() {
            banger_testkit::skip(
                std::thread::current().name().unwrap_or("a registry test"),
                &format!("{REGISTRY_BIN} is not installed (apt-get install docker-registry)"),
                banger_testkit::Prerequisite::ProvidedByCi,
            );
            return None;
        }
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
                     http:\n  addr: 127.0.0.1:{port}\n",
                    dir.path().join("storage").display()
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            let mut registry = Self { child, dir, port };
            if registry.wait_ready() {
                return Some(registry);
            }
            eprintln!(
                "registry on port {port} did not come up; retrying:\n{}",
                registry.log()
            );
        }
        panic!("docker-registry did not start");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `127.0.0.1:PORT`.
    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Access-log lines of blob GETs so far.
    pub(crate) fn blob_gets(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|line| line.contains("\"GET /v2/") && line.contains("/blobs/sha256:"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(
    client: &TestClient,
    method: Method,
    url: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, hyper::HeaderMap, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(url);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let request = request.body(Full::new(Bytes::from(body))).unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

/// Uploads a blob (monolithic POST + PUT); returns its digest.
pub(crate) async fn push_blob(registry: &str, repo: &str, bytes: &[u8]) -> String {
    let client = client();
    let digest = sha256_digest(bytes);
    let (status, headers, body) = send(
        &client,
        Method::POST,
        &format!("http://{registry}/v2/{repo}/blobs/uploads/"),
        None,
        Vec::new(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let location = headers["location"].to_str().unwrap().to_owned();
    let location = if location.starts_with("http") {
        location
    } else {
        format!("http://{registry}{location}")
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let (status, _, body) = send(
        &client,
        Method::PUT,
        &format!("{location}{separator}digest={digest}"),
        Some("application/octet-stream"),
        bytes.to_vec(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    digest
}

pub(crate) async fn push_manifest(
    registry: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> String {
    let (status, _, body) = send(
        &client(),
        Method::PUT,
        &format!("http://{registry}/v2/{repo}/manifests/{reference}"),
        Some(media_type),
        bytes.to_vec(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    sha256_digest(bytes)
}

/// A layer blob and its media type.
pub(crate) struct Layer {
    pub(crate) media_type: &'static str,
    pub(crate) blob: Vec<u8>,
}

impl Layer {
    pub(crate) fn gzip(tar: &[u8]) -> Self {
        Self {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
            blob: super::tarball::gzip(tar),
        }
    }

    pub(crate) fn zstd(tar: &[u8]) -> Self {
        Self {
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd",
            blob: super::tarball::zstd(tar),
        }
    }

    pub(crate) fn plain(tar: &[u8]) -> Self {
        Self {
            media_type: "application/vnd.oci.image.layer.v1.tar",
            blob: tar.to_vec(),
        }
    }

    pub(crate) fn docker_gzip(tar: &[u8]) -> Self {
        Self {
            media_type: "application/vnd.docker.image.rootfs.diff.tar.gzip",
            blob: super::tarball::gzip(tar),
        }
    }

    pub(crate) fn digest(&self) -> String {
        sha256_digest(&self.blob)
    }
}

/// What [`push_image`] pushed.
pub(crate) struct Pushed {
    pub(crate) manifest_digest: String,
    pub(crate) manifest_size: usize,
    pub(crate) layer_digests: Vec<String>,
}

/// Pushes layers, a config and a manifest (OCI, or Docker schema 2 when
/// `docker`), tagged `tag`.
pub(crate) async fn push_image(
    registry: &str,
    repo: &str,
    tag: &str,
    layers: &[Layer],
    docker: bool,
    arch: &str,
) -> Pushed {
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Env": ["PATH=/usr/bin:/bin", "BANGER_TEST=1"], "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": [] },
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = push_blob(registry, repo, &config).await;
    let mut layer_digests = Vec::new();
    let mut descriptors = Vec::new();
    for layer in layers {
        let digest = push_blob(registry, repo, &layer.blob).await;
        descriptors.push(
            json!({ "mediaType": layer.media_type, "digest": digest, "size": layer.blob.len() }),
        );
        layer_digests.push(digest);
    }
    let (manifest_type, config_type) = if docker {
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
        )
    } else {
        (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
        )
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": { "mediaType": config_type, "digest": config_digest, "size": config.len() },
        "layers": descriptors,
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = push_manifest(registry, repo, tag, manifest_type, &manifest).await;
    Pushed {
        manifest_digest,
        manifest_size: manifest.len(),
        layer_digests,
    }
}

/// Pushes an index of already-pushed manifests `(digest, size, arch)`.
pub(crate) async fn push_index(
    registry: &str,
    repo: &str,
    tag: &str,
    entries: &[(&str, usize, &str)],
    docker: bool,
) -> String {
    let (index_type, manifest_type) = if docker {
        (
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
    } else {
        (
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
        )
    };
    let manifests: Vec<_> = entries
        .iter()
        .map(|(digest, size, arch)| {
            json!({
                "mediaType": manifest_type,
                "digest": digest,
                "size": size,
                "platform": { "os": "linux", "architecture": arch },
            })
        })
        .collect();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": index_type,
        "manifests": manifests,
    }))
    .unwrap();
    push_manifest(registry, repo, tag, index_type, &index).await
}
