//! `banger doctor`'s readiness checks: what this host offers, judged
//! pass/warn/fail, each non-pass with the command or setting that fixes it.
//!
//! Checks are data ([`banger_model::check::DoctorCheck`]): a name, a
//! status, what was found and the fix. Every check is a plain function over
//! the [`Host`] seam and over facts its caller already knows (the daemon's
//! config, storage probe, DNS state), so each one is unit-tested
//! pass/warn/fail against [`FakeHost`]; [`RealHost`] asks the machine.
//!
//! Who runs what: the daemon runs [`host_checks`] and the daemon-only
//! checks (storage, default image, DNS) in `doctor.run`, because it is the
//! process that needs the privileges and knows the state; the CLI adds the
//! checks about its user (the daemon itself, the `~/.ssh/config` include)
//! and runs [`host_checks`] itself when no daemon can be reached.
//!
//! Layout:
//! - [`host`]: the [`Host`] trait and the probe results it returns.
//! - [`real`]: [`RealHost`], the machine itself.
//! - `kvm`: the `/dev/kvm` ioctls.
//! - [`exec`]: the only module that starts processes (`firecracker --version`).
//! - [`ownership`]: files in banger's directories that another user owns.
//! - [`checks`]: one function per check, and [`host_checks`].
//! - [`fake`]: [`FakeHost`], a scriptable host for tests.

pub mod checks;
pub mod exec;
pub mod fake;
pub mod host;
mod kvm;
pub mod ownership;
pub mod real;

pub use banger_model::check::{CheckStatus, DoctorCheck};
pub use checks::{
    CatalogLookup, Companion, DnsFacts, HelperFacts, HostInputs, ImageFacts, IncludeState,
    ResolveProbe, RoutingFacts, StorageFacts, host_checks,
};
pub use fake::FakeHost;
pub use host::{DeviceProbe, ForeignFiles, Host, KvmProbe, Privileges, Space};
pub use real::RealHost;

/// How many checks passed, warned and failed.
pub fn tally(checks: &[DoctorCheck]) -> (usize, usize, usize) {
    checks
        .iter()
        .fold((0, 0, 0), |(p, w, f), check| match check.status {
            CheckStatus::Pass => (p + 1, w, f),
            CheckStatus::Warn => (p, w + 1, f),
            CheckStatus::Fail => (p, w, f + 1),
        })
}
