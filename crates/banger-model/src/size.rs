//! Byte sizes written the way users write them: `8G`, `512M`, `2GiB`.
//!
//! Units are binary (K = 1024). A bare number is refused because `8` would
//! mean eight bytes, which is never what anyone typing a disk size means.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;
pub const TIB: u64 = 1024 * GIB;

/// A size in bytes. Serialised as a plain integer of bytes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("size is empty; write it like 8G or 512M")]
    Empty,
    #[error("size {0:?} has no unit; write it like {0}G or {0}M")]
    MissingUnit(String),
    #[error("size {0:?} is not a number followed by K, M, G or T (e.g. 8G)")]
    Malformed(String),
    #[error("size {0:?} is too large")]
    Overflow(String),
    #[error("size must be greater than zero")]
    Zero,
}

impl ByteSize {
    pub const fn gib(n: u64) -> Self {
        Self(n * GIB)
    }

    pub const fn mib(n: u64) -> Self {
        Self(n * MIB)
    }

    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// Whole mebibytes, rounded down.
    pub const fn as_mib(self) -> u64 {
        self.0 / MIB
    }

    /// Approximate, for tables: `1.5 GiB`, `300 MiB`, `12 KiB`, `7 B`.
    pub fn human(self) -> String {
        let bytes = self.0;
        let (value, unit) = if bytes >= TIB {
            (bytes as f64 / TIB as f64, "TiB")
        } else if bytes >= GIB {
            (bytes as f64 / GIB as f64, "GiB")
        } else if bytes >= MIB {
            (bytes as f64 / MIB as f64, "MiB")
        } else if bytes >= KIB {
            (bytes as f64 / KIB as f64, "KiB")
        } else {
            return format!("{bytes} B");
        };
        if value >= 100.0 || (value - value.round()).abs() < 0.05 {
            format!("{value:.0} {unit}")
        } else {
            format!("{value:.1} {unit}")
        }
    }
}

impl fmt::Display for ByteSize {
    /// The exact compact form that [`FromStr`] reads back: `8G`, `1536M`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        for (unit, scale) in [("T", TIB), ("G", GIB), ("M", MIB), ("K", KIB)] {
            if bytes >= scale && bytes.is_multiple_of(scale) {
                return write!(f, "{}{unit}", bytes / scale);
            }
        }
        write!(f, "{bytes}B")
    }
}

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(SizeError::Empty);
        }
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        if digits.is_empty() {
            return Err(SizeError::Malformed(raw.to_owned()));
        }
        let scale = match unit.trim().to_ascii_lowercase().as_str() {
            "" => return Err(SizeError::MissingUnit(raw.to_owned())),
            "b" => 1,
            "k" | "kb" | "kib" => KIB,
            "m" | "mb" | "mib" => MIB,
            "g" | "gb" | "gib" => GIB,
            "t" | "tb" | "tib" => TIB,
            _ => return Err(SizeError::Malformed(raw.to_owned())),
        };
        let number: u64 = digits
            .parse()
            .map_err(|_| SizeError::Overflow(raw.to_owned()))?;
        let bytes = number
            .checked_mul(scale)
            .ok_or_else(|| SizeError::Overflow(raw.to_owned()))?;
        if bytes == 0 {
            return Err(SizeError::Zero);
        }
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_units() {
        assert_eq!("8G".parse::<ByteSize>().unwrap(), ByteSize::gib(8));
        assert_eq!("8GiB".parse::<ByteSize>().unwrap(), ByteSize::gib(8));
        assert_eq!("512m".parse::<ByteSize>().unwrap(), ByteSize::mib(512));
        assert_eq!("4096K".parse::<ByteSize>().unwrap(), ByteSize(4 * MIB));
        assert_eq!("1T".parse::<ByteSize>().unwrap(), ByteSize(TIB));
        assert_eq!("100B".parse::<ByteSize>().unwrap(), ByteSize(100));
    }

    #[test]
    fn rejects_bad_sizes() {
        assert_eq!("".parse::<ByteSize>(), Err(SizeError::Empty));
        assert_eq!(
            "8".parse::<ByteSize>(),
            Err(SizeError::MissingUnit("8".into()))
        );
        assert!(matches!(
            "G".parse::<ByteSize>(),
            Err(SizeError::Malformed(_))
        ));
        assert!(matches!(
            "-1G".parse::<ByteSize>(),
            Err(SizeError::Malformed(_))
        ));
        assert!(matches!(
            "8X".parse::<ByteSize>(),
            Err(SizeError::Malformed(_))
        ));
        assert!(matches!(
            "1.5G".parse::<ByteSize>(),
            Err(SizeError::Malformed(_))
        ));
        assert_eq!("0G".parse::<ByteSize>(), Err(SizeError::Zero));
        assert!(matches!(
            "99999999999999999999G".parse::<ByteSize>(),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(
            "20000000T".parse::<ByteSize>(),
            Err(SizeError::Overflow(_))
        ));
    }

    #[test]
    fn displays_compactly() {
        assert_eq!(ByteSize::gib(8).to_string(), "8G");
        assert_eq!(ByteSize::mib(1536).to_string(), "1536M");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        assert_eq!(ByteSize(3 * GIB / 2).human(), "1.5 GiB");
        assert_eq!(ByteSize(300 * MIB).human(), "300 MiB");
        assert_eq!(ByteSize(7).human(), "7 B");
    }

    proptest! {
        #[test]
        fn display_round_trips(bytes in 1u64..(1 << 50)) {
            let size = ByteSize(bytes);
            prop_assert_eq!(size.to_string().parse::<ByteSize>().unwrap(), size);
        }
    }
}
