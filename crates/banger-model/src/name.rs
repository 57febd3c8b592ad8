//! Names of VMs, images and kernels.
//!
//! A VM's name becomes its hostname and its `<name>.vm` DNS record, so every
//! name must be a DNS label: 1–63 characters of `a-z`, `0-9` and `-`, not
//! starting or ending with `-`.

use std::fmt;

use rand::Rng;
use rand::seq::IndexedRandom;
use serde::{Deserialize, Serialize};

/// Longest DNS label.
pub const MAX_LEN: usize = 63;

/// A validated name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

/// Why a string is not a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name {0:?} is longer than {MAX_LEN} characters")]
    TooLong(String),
    #[error(
        "name {name:?} contains {found:?}; use lowercase letters, digits and '-' (a DNS label)"
    )]
    BadCharacter { name: String, found: char },
    #[error("name {0:?} must not start or end with '-'")]
    EdgeHyphen(String),
}

impl Name {
    /// Validates `raw` as a DNS label.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        if raw.len() > MAX_LEN {
            return Err(NameError::TooLong(raw.to_owned()));
        }
        if let Some(found) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadCharacter {
                name: raw.to_owned(),
                found,
            });
        }
        if raw.starts_with('-') || raw.ends_with('-') {
            return Err(NameError::EdgeHyphen(raw.to_owned()));
        }
        Ok(Self(raw.to_owned()))
    }

    /// A random friendly name such as `brave-otter-42`.
    pub fn random() -> Self {
        Self::random_with(&mut rand::rng())
    }

    /// A random friendly name drawn from `rng`.
    pub fn random_with(rng: &mut impl Rng) -> Self {
        let adjective = ADJECTIVES.choose(rng).copied().unwrap_or("quick");
        let noun = NOUNS.choose(rng).copied().unwrap_or("box");
        let suffix: u16 = rng.random_range(10..100);
        Self(format!("{adjective}-{noun}-{suffix}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Name> for String {
    fn from(name: Name) -> Self {
        name.0
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

const ADJECTIVES: &[&str] = &[
    "able", "amber", "bold", "brave", "brisk", "calm", "clever", "cosmic", "crisp", "dapper",
    "eager", "fancy", "fuzzy", "gentle", "glad", "golden", "happy", "hardy", "jolly", "keen",
    "lucky", "mellow", "merry", "nimble", "noble", "plucky", "proud", "quick", "quiet", "rapid",
    "shiny", "silent", "snappy", "spry", "steady", "sunny", "swift", "tidy", "vivid", "witty",
];

const NOUNS: &[&str] = &[
    "badger", "beacon", "bison", "comet", "crane", "falcon", "ferret", "finch", "gecko", "heron",
    "ibex", "jaguar", "kestrel", "koala", "lemur", "lynx", "marmot", "meadow", "moose", "newt",
    "otter", "owl", "panda", "pebble", "puffin", "quail", "raven", "river", "robin", "salmon",
    "sparrow", "spruce", "tapir", "tiger", "walrus", "willow", "wombat", "yak", "zebra", "heron",
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "web", "web-1", "1web", "a-b-c", &"x".repeat(63)] {
            assert_eq!(Name::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_each_bad_shape() {
        assert_eq!(Name::parse(""), Err(NameError::Empty));
        assert!(matches!(
            Name::parse(&"x".repeat(64)),
            Err(NameError::TooLong(_))
        ));
        assert!(matches!(
            Name::parse("Web"),
            Err(NameError::BadCharacter { found: 'W', .. })
        ));
        assert!(matches!(
            Name::parse("web_1"),
            Err(NameError::BadCharacter { found: '_', .. })
        ));
        assert!(matches!(
            Name::parse("a.vm"),
            Err(NameError::BadCharacter { found: '.', .. })
        ));
        assert!(matches!(Name::parse("-web"), Err(NameError::EdgeHyphen(_))));
        assert!(matches!(Name::parse("web-"), Err(NameError::EdgeHyphen(_))));
    }

    #[test]
    fn error_message_says_what_to_do() {
        let message = Name::parse("My VM").unwrap_err().to_string();
        assert!(
            message.contains("lowercase letters, digits and '-'"),
            "{message}"
        );
    }

    #[test]
    fn deserialising_validates() {
        let bad: Result<Name, _> = serde_json::from_str("\"UPPER\"");
        assert!(bad.is_err());
        let good: Name = serde_json::from_str("\"lower\"").unwrap();
        assert_eq!(good.as_str(), "lower");
    }

    proptest! {
        #[test]
        fn random_names_are_valid(seed in any::<u64>()) {
            use rand::SeedableRng;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let name = Name::random_with(&mut rng);
            prop_assert!(Name::parse(name.as_str()).is_ok());
        }

        #[test]
        fn parse_never_panics(raw in ".{0,80}") {
            let _ = Name::parse(&raw);
        }
    }
}
