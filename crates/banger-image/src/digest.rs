//! Content digests (`sha256:<hex>`) and a hasher that produces them.
//!
//! Only sha256 is accepted: it is what every registry and every image in
//! practice uses, and refusing the rest keeps the cache layout one-level.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDigestError {
    #[error("digest {0:?} is not of the form sha256:<64 hex digits>")]
    Malformed(String),
    #[error("digest {0:?} uses an unsupported algorithm; only sha256 is supported")]
    Algorithm(String),
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let mut hasher = Hasher::new();
        hasher.update(bytes);
        hasher.finish()
    }

    /// A digest from a bare 64-digit hex string (as catalogs write it).
    pub fn from_hex(hex: &str) -> Result<Self, ParseDigestError> {
        if hex.len() == 64
            && hex
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        {
            Ok(Self {
                hex: hex.to_owned(),
            })
        } else {
            Err(ParseDigestError::Malformed(hex.to_owned()))
        }
    }

    /// The 64 hex digits, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// A short form for messages: `sha256:0123456789ab`.
    pub fn short(&self) -> String {
        format!("sha256:{}", &self.hex[..12])
    }
}

impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let Some((algorithm, hex)) = raw.split_once(':') else {
            return Err(ParseDigestError::Malformed(raw.to_owned()));
        };
        if algorithm != "sha256" {
            return Err(ParseDigestError::Algorithm(raw.to_owned()));
        }
        Self::from_hex(hex).map_err(|_| ParseDigestError::Malformed(raw.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// Streaming sha256 that also counts bytes.
#[derive(Debug, Clone, Default)]
pub struct Hasher {
    inner: Sha256,
    len: u64,
}

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        // sha2 0.11 digests no longer implement LowerHex: encode explicitly.
        Digest {
            hex: hex::encode(self.inner.finalize()),
        }
    }
}

/// A reader that hashes everything read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Hasher::new(),
        }
    }

    /// The digest of what was read, and the number of bytes.
    pub fn finish(self) -> (Digest, u64) {
        let len = self.hasher.len();
        (self.hasher.finish(), len)
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_known_value() {
        // sha256("abc")
        assert_eq!(
            Digest::of(b"abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parses_and_refuses() {
        let digest: Digest =
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
                .parse()
                .unwrap();
        assert_eq!(digest.short(), "sha256:ba7816bf8f01");
        assert!(matches!(
            "sha512:abcd".parse::<Digest>(),
            Err(ParseDigestError::Algorithm(_))
        ));
        for bad in [
            "sha256:",
            "sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "sha256:../../etc/passwd",
        ] {
            assert!(
                matches!(bad.parse::<Digest>(), Err(ParseDigestError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn serde_round_trip() {
        let digest = Digest::of(b"x");
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);
        assert!(serde_json::from_str::<Digest>("\"md5:00\"").is_err());
    }
}
