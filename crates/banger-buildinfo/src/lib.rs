//! Build identity shared by `banger`, `bangerd`, `banger-vsock-agent` and
//! `banger-simvm`: the crate version, the git commit and the build time are
//! stamped at compile time by `build.rs`.
//!
//! The CLI compares its own [`BuildInfo::build_id`] with the running
//! daemon's and restarts the daemon when they differ.

use serde::{Deserialize, Serialize};

/// The identity of one build of banger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// Crate version, e.g. `0.1.0`.
    pub version: String,
    /// Short git commit of the tree the binary was built from, or `unknown`.
    pub commit: String,
    /// Build time, seconds since the Unix epoch.
    pub build_epoch: u64,
    /// The identity compared between CLI and daemon:
    /// `<version>-<commit>-<hash of the source tree>`.
    pub build_id: String,
}

impl BuildInfo {
    /// The identity of the running binary.
    pub fn current() -> Self {
        let build_epoch = env!("BANGER_BUILD_EPOCH").parse().unwrap_or(0);
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            commit: env!("BANGER_GIT_COMMIT").to_owned(),
            build_epoch,
            build_id: format!(
                "{}-{}-{}",
                env!("CARGO_PKG_VERSION"),
                env!("BANGER_GIT_COMMIT"),
                env!("BANGER_SOURCE_HASH")
            ),
        }
    }

    /// The build time as an RFC 3339 UTC timestamp.
    pub fn build_time(&self) -> String {
        format_epoch_utc(self.build_epoch)
    }

    /// One-line summary: `0.1.0 (commit abc123, built 2026-11-22T10:00:00Z)`.
    pub fn summary(&self) -> String {
        format!(
            "{} (commit {}, built {})",
            self.version,
            self.commit,
            self.build_time()
        )
    }
}

/// The running binary's [`BuildInfo::summary`], for `--version` flags.
pub fn version_line() -> &'static str {
    static LINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LINE.get_or_init(|| BuildInfo::current().summary())
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` without a
/// date library (civil-from-days, Howard Hinnant's algorithm).
fn format_epoch_utc(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_epochs() {
        assert_eq!(format_epoch_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_epoch_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_epoch_utc(1_795_350_896), "2026-11-22T12:34:56Z");
    }

    #[test]
    fn current_build_is_stamped() {
        let info = BuildInfo::current();
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert!(!info.commit.is_empty());
        assert!(info.build_id.starts_with(&info.version));
    }
}
