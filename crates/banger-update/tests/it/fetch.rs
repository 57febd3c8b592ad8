//! Manifests are trusted only when signed by the expected key; binaries
//! only when they match the signed size and sha256. Refusals leave every
//! target untouched.

use banger_testkit::http::{Route, StaticServer};
use banger_testkit::release::{TestKey, publish, this_target};
use banger_update::{
    Downloader, FetchReleaseError, RealSwapFs, StageArtifactsError, VerifyManifestError,
    fetch_release, stage_artifacts, swap_all,
};

const BANGER: &[u8] = b"\x7fELF new banger";
const BANGERD: &[u8] = b"\x7fELF new bangerd";
const AGENT: &[u8] = b"\x7fELF new agent";

fn artifacts() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("banger", BANGER),
        ("bangerd", BANGERD),
        ("banger-vsock-agent", AGENT),
    ]
}

fn key_of(test_key: &TestKey) -> minisign_verify::PublicKey {
    minisign_verify::PublicKey::from_base64(&test_key.public_base64).unwrap()
}

fn downloader() -> Downloader {
    Downloader::new("banger-test").unwrap()
}

#[tokio::test]
async fn a_signed_release_is_fetched_staged_and_swapped() {
    let server = StaticServer::new();
    let key = TestKey::new();
    publish(&server, &key, "0.2.0", &artifacts());
    let release = fetch_release(&downloader(), &server.url(), &key_of(&key), &this_target())
        .await
        .unwrap();
    assert_eq!(release.version.to_string(), "0.2.0");

    let dir = tempfile::tempdir().unwrap();
    let wanted: Vec<_> = release
        .manifest
        .artifacts
        .iter()
        .map(|artifact| {
            let target = dir.path().join(&artifact.name);
            std::fs::write(&target, b"old").unwrap();
            (artifact.clone(), target)
        })
        .collect();
    let staged = stage_artifacts(&downloader(), &release, &wanted)
        .await
        .unwrap();
    // Staged, not yet swapped.
    for (_, target) in &wanted {
        assert_eq!(std::fs::read(target).unwrap(), b"old");
    }
    swap_all(staged, &RealSwapFs).unwrap();
    for (name, bytes) in artifacts() {
        assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), bytes);
    }
}

#[tokio::test]
async fn a_wrong_key_or_a_bad_signature_is_refused() {
    let server = StaticServer::new();
    let signer = TestKey::new();
    publish(&server, &signer, "0.2.0", &artifacts());
    let other = TestKey::new();
    let err = fetch_release(
        &downloader(),
        &server.url(),
        &key_of(&other),
        &this_target(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &err,
            FetchReleaseError::Verify {
                source: VerifyManifestError::Signature(_),
                ..
            }
        ),
        "{err:?}"
    );

    // A manifest changed after signing (here: a bigger version).
    let manifest = banger_testkit::release::manifest("9.9.9", &this_target(), &artifacts());
    server.route("/manifest.json", Route::Body(manifest));
    let err = fetch_release(
        &downloader(),
        &server.url(),
        &key_of(&signer),
        &this_target(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("refusing the release"), "{err}");

    // Garbage where the signature should be.
    server.route(
        "/manifest.json.minisig",
        Route::Body(b"untrusted comment: x\nAAAA\n".to_vec()),
    );
    let err = fetch_release(
        &downloader(),
        &server.url(),
        &key_of(&signer),
        &this_target(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FetchReleaseError::Verify { .. }), "{err:?}");

    // No signature at all.
    server.route("/manifest.json.minisig", Route::Status(404));
    let err = fetch_release(
        &downloader(),
        &server.url(),
        &key_of(&signer),
        &this_target(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FetchReleaseError::Download(_)), "{err:?}");
}

#[tokio::test]
async fn a_release_for_another_platform_or_missing_a_binary_is_refused() {
    let server = StaticServer::new();
    let key = TestKey::new();
    let manifest = banger_testkit::release::manifest("0.2.0", "aarch64-linux", &artifacts());
    server.route("/manifest.json", Route::Body(manifest.clone()));
    server.route(
        "/manifest.json.minisig",
        Route::Body(key.sign(&manifest).into_bytes()),
    );
    let err = fetch_release(&downloader(), &server.url(), &key_of(&key), &this_target())
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("Target"), "{err:?}");

    publish(&server, &key, "0.2.0", &artifacts()[..2]);
    let err = fetch_release(&downloader(), &server.url(), &key_of(&key), &this_target())
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("banger-vsock-agent"), "{err:?}");
}

/// Each way a binary can arrive wrong, and that nothing is left staged or
/// replaced afterwards.
#[tokio::test]
async fn bad_downloads_are_refused_before_anything_is_replaced() {
    let cases: Vec<(&str, Route)> = vec![
        ("shorter than signed", Route::Body(AGENT[..5].to_vec())),
        ("longer than signed", Route::Body([AGENT, b"xx"].concat())),
        (
            "same size, other bytes",
            Route::Body(AGENT.iter().map(|b| b ^ 1).collect()),
        ),
        (
            "connection cut mid-body",
            Route::Cut {
                body: AGENT[..4].to_vec(),
                declared: AGENT.len(),
            },
        ),
        ("missing", Route::Status(404)),
    ];
    for (case, route) in cases {
        let server = StaticServer::new();
        let key = TestKey::new();
        publish(&server, &key, "0.2.0", &artifacts());
        server.route("/files/banger-vsock-agent", route);
        let release = fetch_release(&downloader(), &server.url(), &key_of(&key), &this_target())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let wanted: Vec<_> = release
            .manifest
            .artifacts
            .iter()
            .map(|artifact| {
                let target = dir.path().join(&artifact.name);
                std::fs::write(&target, b"old").unwrap();
                (artifact.clone(), target)
            })
            .collect();
        let err = stage_artifacts(&downloader(), &release, &wanted)
            .await
            .unwrap_err();
        match case {
            "shorter than signed" => {
                assert!(
                    matches!(err, StageArtifactsError::Size { .. }),
                    "{case}: {err:?}"
                )
            }
            "same size, other bytes" => {
                assert!(
                    matches!(err, StageArtifactsError::Digest { .. }),
                    "{case}: {err:?}"
                )
            }
            _ => assert!(
                matches!(err, StageArtifactsError::Download { .. }),
                "{case}: {err:?}"
            ),
        }
        // Every target untouched, nothing staged left behind.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["banger", "banger-vsock-agent", "bangerd"], "{case}");
        for (_, target) in &wanted {
            assert_eq!(std::fs::read(target).unwrap(), b"old", "{case}");
        }
    }
}

#[tokio::test]
async fn redirects_are_followed_and_plain_http_elsewhere_refused() {
    let server = StaticServer::new();
    let key = TestKey::new();
    publish(&server, &key, "0.2.0", &artifacts());
    server.route(
        "/latest/manifest.json",
        Route::Redirect("/manifest.json".into()),
    );
    server.route(
        "/latest/manifest.json.minisig",
        Route::Redirect(format!("{}/manifest.json.minisig", server.url())),
    );
    let release = fetch_release(
        &downloader(),
        &format!("{}/latest", server.url()),
        &key_of(&key),
        &this_target(),
    )
    .await
    .unwrap();
    assert_eq!(release.version.to_string(), "0.2.0");

    server.route(
        "/away/manifest.json",
        Route::Redirect("http://example.invalid/manifest.json".into()),
    );
    let err = fetch_release(
        &downloader(),
        &format!("{}/away", server.url()),
        &key_of(&key),
        &this_target(),
    )
    .await
    .unwrap_err();
    assert!(format!("{err:?}").contains("Insecure"), "{err:?}");
}
