//! The public key release manifests must be signed with.
//!
//! [`RELEASE_PUBLIC_KEY`] is compiled into every build. Only debug builds
//! (`cfg(debug_assertions)`: what `cargo test` and `cargo build` produce)
//! accept another key from [`TEST_KEY_ENV`], so the test suite can sign
//! releases of its own; a release build ignores the variable.

/// banger's release signing key (minisign public key, base64).
///
/// PLACEHOLDER until the first release: this key was generated during
/// development and its secret half was destroyed, so nothing can be signed
/// with it and `banger update` refuses every manifest. Before the first
/// release a maintainer generates the real key (`cargo run -p banger-update
/// --example release -- keygen KEYFILE`), keeps the secret offline and puts
/// the printed public key here (`docs/releasing.md`).
pub const RELEASE_PUBLIC_KEY: &str = "RWQQA0y2wItVZNbJDPrYpO55chHwPFmLKWIPOQqJJQk2mbCq8Sk2PuI+";

/// Debug builds only: a minisign public key (base64) used instead of
/// [`RELEASE_PUBLIC_KEY`].
pub const TEST_KEY_ENV: &str = "BANGER_UPDATE_TEST_PUBKEY";

#[derive(Debug, thiserror::Error)]
#[error("the {which} update key {key:?} is not a minisign public key: {source}")]
pub struct ReleaseKeyError {
    which: &'static str,
    key: String,
    #[source]
    source: minisign_verify::Error,
}

/// The key manifests are verified against.
pub fn release_key() -> Result<minisign_verify::PublicKey, ReleaseKeyError> {
    let (which, key) = chosen_key();
    minisign_verify::PublicKey::from_base64(&key).map_err(|source| ReleaseKeyError {
        which,
        key,
        source,
    })
}

#[cfg(debug_assertions)]
fn chosen_key() -> (&'static str, String) {
    match std::env::var(TEST_KEY_ENV) {
        Ok(key) if !key.is_empty() => ("test", key),
        _ => ("release", RELEASE_PUBLIC_KEY.to_owned()),
    }
}

#[cfg(not(debug_assertions))]
fn chosen_key() -> (&'static str, String) {
    ("release", RELEASE_PUBLIC_KEY.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_key_parses() {
        minisign_verify::PublicKey::from_base64(RELEASE_PUBLIC_KEY).unwrap();
    }
}
