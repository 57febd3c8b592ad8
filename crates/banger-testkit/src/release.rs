//! Signed test releases for `banger update`: a throwaway minisign key (the
//! debug-build override `BANGER_UPDATE_TEST_PUBKEY` makes banger trust it)
//! and manifests in the release format.

use sha2::{Digest, Sha256};

use crate::http::{Route, StaticServer};

/// The environment variable debug builds read the trusted key from.
pub const TEST_KEY_ENV: &str = "BANGER_UPDATE_TEST_PUBKEY";

/// A minisign key pair made for one test.
#[derive(Debug)]
pub struct TestKey {
    pub public_base64: String,
    secret: minisign::SecretKey,
}

impl Default for TestKey {
    fn default() -> Self {
        Self::new()
    }
}

impl TestKey {
    pub fn new() -> Self {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().expect("generating a key");
        Self {
            public_base64: pair.pk.to_base64(),
            secret: pair.sk,
        }
    }

    /// The `.minisig` text for `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> String {
        minisign::sign(None, &self.secret, bytes, Some("banger test release"), None)
            .expect("signing")
            .to_string()
    }
}

/// The platform string this build's manifests carry (`x86_64-linux`).
pub fn this_target() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// `manifest.json` for `version` with `(name, bytes)` artifacts served at
/// `files/NAME`.
pub fn manifest(version: &str, target: &str, artifacts: &[(&str, &[u8])]) -> Vec<u8> {
    let artifacts: Vec<serde_json::Value> = artifacts
        .iter()
        .map(|(name, bytes)| {
            serde_json::json!({
                "name": name,
                "url": format!("files/{name}"),
                "sha256": hex::encode(Sha256::digest(bytes)),
                "size": bytes.len(),
            })
        })
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({
        "version": version,
        "target": target,
        "artifacts": artifacts,
    }))
    .unwrap()
}

/// Serves a signed release on `server`: `/manifest.json`, its signature,
/// and `/files/NAME` for each artifact.
pub fn publish(
    server: &StaticServer,
    key: &TestKey,
    version: &str,
    artifacts: &[(&str, &[u8])],
) -> Vec<u8> {
    let manifest = manifest(version, &this_target(), artifacts);
    server.route("/manifest.json", Route::Body(manifest.clone()));
    server.route(
        "/manifest.json.minisig",
        Route::Body(key.sign(&manifest).into_bytes()),
    );
    for (name, bytes) in artifacts {
        server.route(&format!("/files/{name}"), Route::Body(bytes.to_vec()));
    }
    manifest
}
