//! The maintainers' release tool (see docs/releasing.md).
//!
//! ```text
//! cargo run -p banger-update --example release -- keygen SECRET_KEY [--unencrypted]
//! cargo run -p banger-update --example release -- manifest --version V --key SECRET_KEY DIR
//! ```
//!
//! `keygen` writes a new minisign secret key (password-protected unless
//! `--unencrypted`) and prints the public key to put into
//! `crates/banger-update/src/key.rs`. `manifest` writes `DIR/manifest.json`
//! for the binaries in DIR and signs it as `DIR/manifest.json.minisig`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use banger_update::{Artifact, BINARIES, Manifest, Version};
use sha2::{Digest, Sha256};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("keygen") => keygen(&args[1..]),
        Some("manifest") => manifest(&args[1..]),
        _ => Err("usage: release keygen SECRET_KEY [--unencrypted] | release manifest --version V --key SECRET_KEY DIR".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(args: &[String]) -> Result<(), String> {
    let path = args
        .first()
        .ok_or("keygen needs a path for the secret key")?;
    let path = PathBuf::from(path);
    if path.exists() {
        return Err(format!("{} exists; not overwriting a key", path.display()));
    }
    let pair = if args.iter().any(|arg| arg == "--unencrypted") {
        minisign::KeyPair::generate_unencrypted_keypair()
    } else {
        minisign::KeyPair::generate_encrypted_keypair(None)
    }
    .map_err(|err| err.to_string())?;
    let secret = pair
        .sk
        .to_box(Some("banger release key"))
        .map_err(|err| err.to_string())?
        .into_string();
    write_private(&path, secret.as_bytes())?;
    println!("{}", pair.pk.to_base64());
    eprintln!(
        "secret key written to {}; put the public key above into crates/banger-update/src/key.rs",
        path.display()
    );
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|err| format!("{}: {err}", path.display()))?;
    file.write_all(bytes)
        .map_err(|err| format!("{}: {err}", path.display()))
}

fn manifest(args: &[String]) -> Result<(), String> {
    let mut version = None;
    let mut key = None;
    let mut dir = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--version" => version = iter.next().cloned(),
            "--key" => key = iter.next().cloned(),
            other => dir = Some(PathBuf::from(other)),
        }
    }
    let version = version.ok_or("--version is required")?;
    version.parse::<Version>().map_err(|err| err.to_string())?;
    let key = key.ok_or("--key is required")?;
    let dir = dir.ok_or("the directory of binaries is required")?;

    let mut artifacts = Vec::new();
    for (name, required) in BINARIES {
        let path = dir.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(_) if !required => continue,
            Err(err) => return Err(format!("{}: {err}", path.display())),
        };
        artifacts.push(Artifact {
            name: (*name).to_owned(),
            url: (*name).to_owned(),
            sha256: hex::encode(Sha256::digest(&bytes)),
            size: bytes.len() as u64,
        });
    }
    let manifest = Manifest {
        version: version.clone(),
        target: banger_update::this_target(),
        artifacts,
        notes: None,
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|err| err.to_string())?;
    let secret = minisign::SecretKeyBox::from_string(
        &std::fs::read_to_string(&key).map_err(|err| format!("{key}: {err}"))?,
    )
    .map_err(|err| err.to_string())?
    .into_secret_key(None)
    .map_err(|err| err.to_string())?;
    let signature = minisign::sign(
        None,
        &secret,
        text.as_slice(),
        Some(&format!("banger {version}")),
        None,
    )
    .map_err(|err| err.to_string())?;
    std::fs::write(dir.join("manifest.json"), &text).map_err(|err| err.to_string())?;
    std::fs::write(dir.join("manifest.json.minisig"), signature.to_string())
        .map_err(|err| err.to_string())?;
    eprintln!(
        "wrote {0}/manifest.json and {0}/manifest.json.minisig for banger {version}",
        dir.display()
    );
    Ok(())
}
