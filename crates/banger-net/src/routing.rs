//! Routing `.vm` lookups from the host's resolver to banger's DNS server.
//!
//! [`DnsRouting`] is the seam: the daemon applies routing when it starts (and
//! when records change, which is harmless to repeat) and reverts it on
//! shutdown. [`Resolvectl`] does it for systemd-resolved by configuring the
//! banger bridge as a link whose DNS server is banger's listener and whose
//! routing domain is `~vm`; [`FakeDnsRouting`] records calls for tests.
//! Other resolvers are covered by `docs/dns-routing.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::exec::{self, ExecError};
use crate::names::{InvalidIfName, validate_ifname};

/// The routing domain banger claims: `~vm` routes `*.vm` without making
/// `vm` a search domain.
pub const ROUTING_DOMAIN: &str = "~vm";

/// Where systemd-resolved's varlink socket lives while it runs.
const RESOLVED_SOCKET: &str = "/run/systemd/resolve/io.systemd.Resolve";

/// Whether systemd-resolved appears to be running on this host.
pub fn systemd_resolved_active() -> bool {
    Path::new(RESOLVED_SOCKET).exists()
}

/// Why routing could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyDnsRoutingError {
    /// Asked of `banger-helper`, which refused or failed.
    #[error("banger-helper cannot route {ROUTING_DOMAIN} to {dns} on link {link}")]
    Helper {
        link: String,
        dns: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid link name for DNS routing")]
    InvalidLink(#[source] InvalidIfName),
    #[error("cannot route {ROUTING_DOMAIN} to {dns} on link {link}")]
    Resolver {
        link: String,
        dns: SocketAddr,
        #[source]
        source: ExecError,
    },
}

/// Why routing could not be reverted.
#[derive(Debug, thiserror::Error)]
pub enum RevertDnsRoutingError {
    /// Asked of `banger-helper`, which refused or failed.
    #[error("banger-helper cannot revert DNS routing on link {link}")]
    Helper {
        link: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid link name for DNS routing")]
    InvalidLink(#[source] InvalidIfName),
    #[error("cannot revert DNS routing on link {link}")]
    Resolver {
        link: String,
        #[source]
        source: ExecError,
    },
}

/// Routes `.vm` queries to banger's DNS server through a link.
#[async_trait]
pub trait DnsRouting: Send + Sync + fmt::Debug {
    /// Sends `*.vm` queries to `dns`, scoped to `link` (the banger bridge).
    async fn apply(&self, link: &str, dns: SocketAddr) -> Result<(), ApplyDnsRoutingError>;

    /// Removes what [`DnsRouting::apply`] set on `link`.
    async fn revert(&self, link: &str) -> Result<(), RevertDnsRoutingError>;
}

/// [`DnsRouting`] through `resolvectl` (systemd-resolved).
///
/// `apply` runs `resolvectl dns LINK ADDR:PORT`, `resolvectl domain LINK ~vm`
/// and `resolvectl default-route LINK false` (the link must not attract
/// other queries); `revert` runs `resolvectl revert LINK`. The settings are
/// runtime-only: resolved forgets them when the link goes away.
#[derive(Debug, Clone)]
pub struct Resolvectl {
    program: PathBuf,
}

impl Default for Resolvectl {
    fn default() -> Self {
        Self::new("resolvectl")
    }
}

impl Resolvectl {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }

    /// The argv lists `apply` runs, in order.
    pub fn apply_commands(link: &str, dns: SocketAddr) -> Vec<Vec<String>> {
        vec![
            vec!["dns".into(), link.into(), dns.to_string()],
            vec!["domain".into(), link.into(), ROUTING_DOMAIN.into()],
            vec!["default-route".into(), link.into(), "false".into()],
        ]
    }

    /// The argv `revert` runs.
    pub fn revert_command(link: &str) -> Vec<String> {
        vec!["revert".into(), link.into()]
    }
}

#[async_trait]
impl DnsRouting for Resolvectl {
    async fn apply(&self, link: &str, dns: SocketAddr) -> Result<(), ApplyDnsRoutingError> {
        validate_ifname(link).map_err(ApplyDnsRoutingError::InvalidLink)?;
        for args in Self::apply_commands(link, dns) {
            exec::run(&self.program, &args).await.map_err(|source| {
                ApplyDnsRoutingError::Resolver {
                    link: link.to_owned(),
                    dns,
                    source,
                }
            })?;
        }
        tracing::info!(link, %dns, domain = ROUTING_DOMAIN, "DNS routing applied");
        Ok(())
    }

    async fn revert(&self, link: &str) -> Result<(), RevertDnsRoutingError> {
        validate_ifname(link).map_err(RevertDnsRoutingError::InvalidLink)?;
        exec::run(&self.program, &Self::revert_command(link))
            .await
            .map_err(|source| RevertDnsRoutingError::Resolver {
                link: link.to_owned(),
                source,
            })?;
        tracing::info!(link, "DNS routing reverted");
        Ok(())
    }
}

/// A recorded [`DnsRouting`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingCall {
    Apply { link: String, dns: SocketAddr },
    Revert { link: String },
}

#[derive(Debug, Default)]
struct FakeRoutingState {
    calls: Vec<RoutingCall>,
    applies: usize,
    reverts: usize,
    fail_apply: Vec<usize>,
    fail_revert: Vec<usize>,
    active: BTreeMap<String, SocketAddr>,
}

/// A recording [`DnsRouting`] with failure injection.
#[derive(Debug, Default)]
pub struct FakeDnsRouting {
    state: Mutex<FakeRoutingState>,
}

fn injected(what: &str, n: usize) -> ExecError {
    ExecError::Spawn {
        program: "resolvectl".to_owned(),
        source: std::io::Error::other(format!("injected failure of {what} call {n}")),
    }
}

impl FakeDnsRouting {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, FakeRoutingState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fails the `n`th (1-based) `apply`.
    pub fn fail_apply_nth(&self, n: usize) {
        self.state().fail_apply.push(n);
    }

    /// Fails the `n`th (1-based) `revert`.
    pub fn fail_revert_nth(&self, n: usize) {
        self.state().fail_revert.push(n);
    }

    pub fn calls(&self) -> Vec<RoutingCall> {
        self.state().calls.clone()
    }

    /// Links with routing applied and not reverted.
    pub fn active(&self) -> BTreeMap<String, SocketAddr> {
        self.state().active.clone()
    }
}

#[async_trait]
impl DnsRouting for FakeDnsRouting {
    async fn apply(&self, link: &str, dns: SocketAddr) -> Result<(), ApplyDnsRoutingError> {
        let mut state = self.state();
        state.calls.push(RoutingCall::Apply {
            link: link.to_owned(),
            dns,
        });
        state.applies += 1;
        let n = state.applies;
        if state.fail_apply.contains(&n) {
            return Err(ApplyDnsRoutingError::Resolver {
                link: link.to_owned(),
                dns,
                source: injected("apply", n),
            });
        }
        validate_ifname(link).map_err(ApplyDnsRoutingError::InvalidLink)?;
        state.active.insert(link.to_owned(), dns);
        Ok(())
    }

    async fn revert(&self, link: &str) -> Result<(), RevertDnsRoutingError> {
        let mut state = self.state();
        state.calls.push(RoutingCall::Revert {
            link: link.to_owned(),
        });
        state.reverts += 1;
        let n = state.reverts;
        if state.fail_revert.contains(&n) {
            return Err(RevertDnsRoutingError::Resolver {
                link: link.to_owned(),
                source: injected("revert", n),
            });
        }
        validate_ifname(link).map_err(RevertDnsRoutingError::InvalidLink)?;
        state.active.remove(link);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn dns() -> SocketAddr {
        "127.0.0.1:42069".parse().unwrap()
    }

    /// Writes an executable script and waits until it can be executed: a
    /// process forked meanwhile by another test thread may briefly hold our
    /// write descriptor, which makes exec fail with ETXTBSY.
    async fn write_script(path: &Path, body: &str) {
        fs_err::write(path, body).unwrap();
        fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        loop {
            match exec::run(path, &["probe".to_owned()]).await {
                Err(ExecError::Spawn { source, .. })
                    if source.raw_os_error() == Some(libc::ETXTBSY) =>
                {
                    tokio::task::yield_now().await;
                }
                Err(error) => panic!("cannot run {}: {error}", path.display()),
                Ok(_) => return,
            }
        }
    }

    #[test]
    fn resolvectl_argv() {
        assert_eq!(
            Resolvectl::apply_commands("br-banger", dns()),
            vec![
                vec!["dns", "br-banger", "127.0.0.1:42069"],
                vec!["domain", "br-banger", "~vm"],
                vec!["default-route", "br-banger", "false"],
            ]
        );
        assert_eq!(
            Resolvectl::revert_command("br-banger"),
            vec!["revert", "br-banger"]
        );
    }

    /// Runs the real exec path against a stand-in `resolvectl` script that
    /// logs its argv, since systemd-resolved is not on the test machines.
    #[tokio::test]
    async fn resolvectl_runs_each_command() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls.log");
        let script = dir.path().join("resolvectl");
        write_script(
            &script,
            &format!(
                "#!/bin/sh\n[ \"$1\" = probe ] && exit 0\necho \"$@\" >> '{}'\n",
                log.display()
            ),
        )
        .await;

        let routing = Resolvectl::new(&script);
        routing.apply("br-banger", dns()).await.unwrap();
        routing.revert("br-banger").await.unwrap();
        assert_eq!(
            fs_err::read_to_string(&log).unwrap(),
            "dns br-banger 127.0.0.1:42069\ndomain br-banger ~vm\ndefault-route br-banger false\nrevert br-banger\n"
        );
        assert!(matches!(
            routing.apply("bad name", dns()).await,
            Err(ApplyDnsRoutingError::InvalidLink(_))
        ));
    }

    #[tokio::test]
    async fn failing_resolvectl_is_reported_with_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("resolvectl");
        write_script(
            &script,
            "#!/bin/sh\n[ \"$1\" = probe ] && exit 0\necho 'Failed to set DNS' >&2\nexit 1\n",
        )
        .await;
        let err = Resolvectl::new(&script)
            .apply("br-banger", dns())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("br-banger"), "{err}");
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("Failed to set DNS"), "{source}");
    }

    #[tokio::test]
    async fn fake_records_and_fails_on_demand() {
        let fake = FakeDnsRouting::new();
        fake.fail_apply_nth(2);
        fake.apply("br-banger", dns()).await.unwrap();
        assert!(fake.apply("br-banger", dns()).await.is_err());
        assert_eq!(fake.active().get("br-banger"), Some(&dns()));
        fake.revert("br-banger").await.unwrap();
        assert!(fake.active().is_empty());
        assert_eq!(
            fake.calls(),
            vec![
                RoutingCall::Apply {
                    link: "br-banger".into(),
                    dns: dns()
                },
                RoutingCall::Apply {
                    link: "br-banger".into(),
                    dns: dns()
                },
                RoutingCall::Revert {
                    link: "br-banger".into()
                },
            ]
        );
    }
}
