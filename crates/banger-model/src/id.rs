//! Random identifiers for VMs, images and kernels.
//!
//! An id is 32 lowercase hex characters. Users may refer to a record by a
//! unique prefix of its id; [`Id::short`] is the 12-character form shown in
//! tables.

use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Length of the short form shown in tables.
pub const SHORT_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Id(String);

impl Id {
    /// A fresh random id.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    /// Wraps an id read back from storage.
    pub fn from_stored(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first [`SHORT_LEN`] characters.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(SHORT_LEN)]
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `reference` could be an id prefix at all (hex, non-empty).
pub fn looks_like_id_prefix(reference: &str) -> bool {
    !reference.is_empty() && reference.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_hex_and_distinct() {
        let a = Id::generate();
        let b = Id::generate();
        assert_eq!(a.as_str().len(), 32);
        assert!(looks_like_id_prefix(a.as_str()));
        assert_ne!(a, b);
        assert_eq!(a.short().len(), SHORT_LEN);
    }

    #[test]
    fn prefix_detection() {
        assert!(looks_like_id_prefix("abc123"));
        assert!(!looks_like_id_prefix(""));
        assert!(!looks_like_id_prefix("web-1"));
    }
}
