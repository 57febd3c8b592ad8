//! [`FakeNetOps`]: an in-memory [`NetOps`] that records every call, keeps a
//! model of the links and rules it "made", and fails chosen calls on demand,
//! so the daemon's rollback paths can be unit-tested without root.
//!
//! ```
//! use banger_net::fake::{FakeNetOps, Op};
//! use banger_net::NetOps;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let ops = FakeNetOps::new();
//! ops.fail_nth(Op::CreateTap, 2);
//! ops.ensure_bridge("br-banger", "172.30.0.1/24".parse().unwrap()).await.unwrap();
//! ops.create_tap("btap-a", "br-banger").await.unwrap();
//! assert!(ops.create_tap("btap-b", "br-banger").await.is_err());
//! assert_eq!(ops.taps().len(), 1);
//! # });
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use banger_model::Id;
use ipnet::Ipv4Net;

use crate::exec::ExecError;
use crate::link::{
    BridgeState, CreateTapError, DeleteTapError, EnsureBridgeError, ListLinksError, RenameTapError,
};
use crate::names::{validate_ifname, validate_tap_name};
use crate::nat::{AddNatError, IpForwardError, ListNatError, RemoveNatError};
use crate::ops::NetOps;

/// The kinds of [`NetOps`] calls, for failure injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    EnsureBridge,
    CreateTap,
    RenameTap,
    DeleteTap,
    DeleteSimVeth,
    ListLinks,
    AddVmNat,
    RemoveVmNat,
    ListNatTagged,
    EnableIpForward,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::EnsureBridge => "ensure_bridge",
            Self::CreateTap => "create_tap",
            Self::RenameTap => "rename_tap",
            Self::DeleteTap => "delete_tap",
            Self::DeleteSimVeth => "delete_sim_veth",
            Self::ListLinks => "list_links",
            Self::AddVmNat => "add_vm_nat",
            Self::RemoveVmNat => "remove_vm_nat",
            Self::ListNatTagged => "list_nat_tagged",
            Self::EnableIpForward => "enable_ip_forward",
        };
        f.write_str(name)
    }
}

/// One recorded call with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    EnsureBridge {
        name: String,
        address: Ipv4Net,
    },
    CreateTap {
        name: String,
        bridge: String,
    },
    RenameTap {
        from: String,
        to: String,
    },
    DeleteTap {
        name: String,
    },
    DeleteSimVeth {
        name: String,
    },
    ListLinks {
        prefix: String,
    },
    AddVmNat {
        vm_id: Id,
        guest_ip: Ipv4Addr,
        bridge: String,
    },
    RemoveVmNat {
        vm_id: Id,
    },
    ListNatTagged,
    EnableIpForward,
}

impl Call {
    pub fn op(&self) -> Op {
        match self {
            Self::EnsureBridge { .. } => Op::EnsureBridge,
            Self::CreateTap { .. } => Op::CreateTap,
            Self::RenameTap { .. } => Op::RenameTap,
            Self::DeleteTap { .. } => Op::DeleteTap,
            Self::DeleteSimVeth { .. } => Op::DeleteSimVeth,
            Self::ListLinks { .. } => Op::ListLinks,
            Self::AddVmNat { .. } => Op::AddVmNat,
            Self::RemoveVmNat { .. } => Op::RemoveVmNat,
            Self::ListNatTagged => Op::ListNatTagged,
            Self::EnableIpForward => Op::EnableIpForward,
        }
    }
}

/// When an operation should fail.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FailWhen {
    /// The nth call (1-based) of the operation.
    Nth(usize),
    Always,
}

/// A NAT entry the fake holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeNat {
    pub guest_ip: Ipv4Addr,
    pub bridge: String,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    counts: BTreeMap<Op, usize>,
    failures: Vec<(Op, FailWhen)>,
    bridges: BTreeMap<String, Ipv4Net>,
    /// TAP name → bridge it is attached to.
    taps: BTreeMap<String, String>,
    nat: BTreeMap<Id, FakeNat>,
    ip_forward: bool,
}

/// A recording, failure-injecting [`NetOps`]. See the module docs.
#[derive(Debug, Default)]
pub struct FakeNetOps {
    state: Mutex<State>,
}

fn injected(op: Op, n: usize) -> io::Error {
    io::Error::other(format!("injected failure of {op} call {n}"))
}

fn injected_exec(op: Op, n: usize) -> ExecError {
    ExecError::Spawn {
        program: "iptables".to_owned(),
        source: injected(op, n),
    }
}

fn exists() -> io::Error {
    io::Error::from_raw_os_error(libc::EEXIST)
}

impl FakeNetOps {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the others.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the `n`th call (1-based, counting from the fake's creation) of
    /// `op` fail.
    pub fn fail_nth(&self, op: Op, n: usize) {
        self.state().failures.push((op, FailWhen::Nth(n)));
    }

    /// Makes every call of `op` fail from now on.
    pub fn fail_always(&self, op: Op) {
        self.state().failures.push((op, FailWhen::Always));
    }

    /// Removes every injected failure.
    pub fn clear_failures(&self) {
        self.state().failures.clear();
    }

    /// Every call so far, failed ones included, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The calls of one kind.
    pub fn calls_of(&self, op: Op) -> Vec<Call> {
        self.state()
            .calls
            .iter()
            .filter(|c| c.op() == op)
            .cloned()
            .collect()
    }

    /// Bridges that exist, with their address.
    pub fn bridges(&self) -> BTreeMap<String, Ipv4Net> {
        self.state().bridges.clone()
    }

    /// TAPs that exist, with the bridge each is attached to.
    pub fn taps(&self) -> BTreeMap<String, String> {
        self.state().taps.clone()
    }

    /// VMs with NAT rules.
    pub fn nat(&self) -> BTreeMap<Id, FakeNat> {
        self.state().nat.clone()
    }

    pub fn ip_forward(&self) -> bool {
        self.state().ip_forward
    }

    /// Pretends a TAP exists (e.g. one left behind by a crash).
    pub fn insert_tap(&self, name: &str, bridge: &str) {
        self.state().taps.insert(name.to_owned(), bridge.to_owned());
    }

    /// Pretends a VM has NAT rules (e.g. left behind by a crash).
    pub fn insert_nat(&self, vm_id: Id, guest_ip: Ipv4Addr, bridge: &str) {
        self.state().nat.insert(
            vm_id,
            FakeNat {
                guest_ip,
                bridge: bridge.to_owned(),
            },
        );
    }

    /// Records `call`; returns `Some(n)` when this call (the nth of its kind)
    /// must fail.
    fn record(&self, state: &mut State, call: Call) -> Option<usize> {
        let op = call.op();
        state.calls.push(call);
        let n = {
            let count = state.counts.entry(op).or_default();
            *count += 1;
            *count
        };
        state
            .failures
            .iter()
            .any(|(failing, when)| {
                *failing == op
                    && match when {
                        FailWhen::Nth(k) => *k == n,
                        FailWhen::Always => true,
                    }
            })
            .then_some(n)
    }
}

#[async_trait]
impl NetOps for FakeNetOps {
    async fn ensure_bridge(
        &self,
        name: &str,
        address: Ipv4Net,
    ) -> Result<BridgeState, EnsureBridgeError> {
        let mut state = self.state();
        let call = Call::EnsureBridge {
            name: name.to_owned(),
            address,
        };
        if let Some(n) = self.record(&mut state, call) {
            return Err(EnsureBridgeError::Netlink {
                name: name.to_owned(),
                step: "create",
                source: injected(Op::EnsureBridge, n),
            });
        }
        validate_ifname(name).map_err(EnsureBridgeError::InvalidName)?;
        if state.taps.contains_key(name) {
            return Err(EnsureBridgeError::NotABridge {
                name: name.to_owned(),
                kind: "tun".to_owned(),
            });
        }
        let created = !state.bridges.contains_key(name);
        let previous = state.bridges.insert(name.to_owned(), address);
        let index = u32::try_from(
            state
                .bridges
                .keys()
                .position(|bridge| bridge == name)
                .unwrap_or_default(),
        )
        .unwrap_or(u32::MAX)
            + 1;
        Ok(BridgeState {
            index,
            created,
            address_added: previous != Some(address),
        })
    }

    async fn create_tap(&self, name: &str, bridge: &str) -> Result<bool, CreateTapError> {
        let mut state = self.state();
        let call = Call::CreateTap {
            name: name.to_owned(),
            bridge: bridge.to_owned(),
        };
        if let Some(n) = self.record(&mut state, call) {
            return Err(CreateTapError::Tun {
                name: name.to_owned(),
                step: "create",
                source: injected(Op::CreateTap, n),
            });
        }
        validate_tap_name(name).map_err(CreateTapError::InvalidName)?;
        validate_ifname(bridge).map_err(CreateTapError::InvalidName)?;
        if !state.bridges.contains_key(bridge) {
            return Err(CreateTapError::BridgeMissing {
                name: name.to_owned(),
                bridge: bridge.to_owned(),
            });
        }
        Ok(state
            .taps
            .insert(name.to_owned(), bridge.to_owned())
            .is_none())
    }

    async fn rename_tap(&self, from: &str, to: &str) -> Result<(), RenameTapError> {
        let mut state = self.state();
        let call = Call::RenameTap {
            from: from.to_owned(),
            to: to.to_owned(),
        };
        let failed = |step, source| RenameTapError::Netlink {
            from: from.to_owned(),
            to: to.to_owned(),
            step,
            source,
        };
        if let Some(n) = self.record(&mut state, call) {
            return Err(failed("rename", injected(Op::RenameTap, n)));
        }
        validate_tap_name(from).map_err(RenameTapError::InvalidName)?;
        validate_tap_name(to).map_err(RenameTapError::InvalidName)?;
        if state.taps.contains_key(to) || state.bridges.contains_key(to) {
            return Err(failed("rename", exists()));
        }
        let bridge = state
            .taps
            .remove(from)
            .ok_or_else(|| RenameTapError::NotFound {
                name: from.to_owned(),
            })?;
        state.taps.insert(to.to_owned(), bridge);
        Ok(())
    }

    async fn delete_tap(&self, name: &str) -> Result<bool, DeleteTapError> {
        let mut state = self.state();
        let call = Call::DeleteTap {
            name: name.to_owned(),
        };
        if let Some(n) = self.record(&mut state, call) {
            return Err(DeleteTapError::Netlink {
                name: name.to_owned(),
                source: injected(Op::DeleteTap, n),
            });
        }
        validate_tap_name(name).map_err(DeleteTapError::InvalidName)?;
        Ok(state.taps.remove(name).is_some())
    }

    async fn delete_sim_veth(&self, name: &str) -> Result<bool, DeleteTapError> {
        let mut state = self.state();
        let call = Call::DeleteSimVeth {
            name: name.to_owned(),
        };
        if let Some(n) = self.record(&mut state, call) {
            return Err(DeleteTapError::Netlink {
                name: name.to_owned(),
                source: injected(Op::DeleteSimVeth, n),
            });
        }
        crate::names::validate_sim_veth_name(name).map_err(DeleteTapError::InvalidName)?;
        // The fake models no veths: banger-simvm makes them, not banger.
        Ok(false)
    }

    async fn list_links(&self, prefix: &str) -> Result<Vec<String>, ListLinksError> {
        let mut state = self.state();
        let call = Call::ListLinks {
            prefix: prefix.to_owned(),
        };
        if let Some(n) = self.record(&mut state, call) {
            return Err(ListLinksError::Netlink(injected(Op::ListLinks, n)));
        }
        let names: BTreeSet<&String> = state.bridges.keys().chain(state.taps.keys()).collect();
        Ok(names
            .into_iter()
            .filter(|name| name.starts_with(prefix))
            .cloned()
            .collect())
    }

    async fn add_vm_nat(
        &self,
        vm_id: &Id,
        guest_ip: Ipv4Addr,
        bridge: &str,
    ) -> Result<(), AddNatError> {
        let mut state = self.state();
        let call = Call::AddVmNat {
            vm_id: vm_id.clone(),
            guest_ip,
            bridge: bridge.to_owned(),
        };
        if let Some(n) = self.record(&mut state, call) {
            return Err(AddNatError::Insert {
                vm_id: vm_id.to_string(),
                table: "filter",
                chain: "FORWARD".to_owned(),
                source: injected_exec(Op::AddVmNat, n),
            });
        }
        let raw = vm_id.as_str();
        if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AddNatError::InvalidVmId(raw.to_owned()));
        }
        validate_ifname(bridge).map_err(AddNatError::InvalidBridge)?;
        state.nat.insert(
            vm_id.clone(),
            FakeNat {
                guest_ip,
                bridge: bridge.to_owned(),
            },
        );
        Ok(())
    }

    async fn remove_vm_nat(&self, vm_id: &Id) -> Result<usize, RemoveNatError> {
        let mut state = self.state();
        let call = Call::RemoveVmNat {
            vm_id: vm_id.clone(),
        };
        if let Some(n) = self.record(&mut state, call) {
            return Err(RemoveNatError::Delete {
                vm_id: vm_id.to_string(),
                table: "nat",
                chain: "POSTROUTING".to_owned(),
                source: injected_exec(Op::RemoveVmNat, n),
            });
        }
        // Three rules per VM, as the real implementation adds.
        Ok(if state.nat.remove(vm_id).is_some() {
            3
        } else {
            0
        })
    }

    async fn list_nat_tagged(&self) -> Result<BTreeSet<Id>, ListNatError> {
        let mut state = self.state();
        if let Some(n) = self.record(&mut state, Call::ListNatTagged) {
            return Err(ListNatError::Run {
                table: "filter",
                source: injected_exec(Op::ListNatTagged, n),
            });
        }
        Ok(state.nat.keys().cloned().collect())
    }

    async fn enable_ip_forward(&self) -> Result<bool, IpForwardError> {
        let mut state = self.state();
        if let Some(n) = self.record(&mut state, Call::EnableIpForward) {
            return Err(IpForwardError::Write(injected(Op::EnableIpForward, n)));
        }
        let was_off = !state.ip_forward;
        state.ip_forward = true;
        Ok(was_off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        Id::from_stored(format!("{n:02x}").repeat(16))
    }

    #[tokio::test]
    async fn models_links_and_records_calls() {
        let ops = FakeNetOps::new();
        let net: Ipv4Net = "172.30.0.1/24".parse().unwrap();
        assert!(ops.ensure_bridge("br-banger", net).await.unwrap().created);
        assert!(!ops.ensure_bridge("br-banger", net).await.unwrap().created);
        assert!(ops.create_tap("btap-pool-0", "br-banger").await.unwrap());
        ops.rename_tap("btap-pool-0", "btap-0123456789")
            .await
            .unwrap();
        assert!(matches!(
            ops.rename_tap("btap-pool-0", "btap-x").await,
            Err(RenameTapError::NotFound { .. })
        ));
        assert_eq!(
            ops.list_links("btap-").await.unwrap(),
            vec!["btap-0123456789".to_owned()]
        );
        assert!(ops.delete_tap("btap-0123456789").await.unwrap());
        assert!(!ops.delete_tap("btap-0123456789").await.unwrap());
        assert!(matches!(
            ops.create_tap("btap-y", "br-missing").await,
            Err(CreateTapError::BridgeMissing { .. })
        ));
        assert!(matches!(
            ops.delete_tap("eth0").await,
            Err(DeleteTapError::InvalidName(_))
        ));
        assert_eq!(
            ops.calls()[..3],
            [
                Call::EnsureBridge {
                    name: "br-banger".into(),
                    address: net
                },
                Call::EnsureBridge {
                    name: "br-banger".into(),
                    address: net
                },
                Call::CreateTap {
                    name: "btap-pool-0".into(),
                    bridge: "br-banger".into()
                },
            ]
        );
        assert_eq!(ops.calls_of(Op::DeleteTap).len(), 3);
    }

    #[tokio::test]
    async fn injects_the_nth_failure_only() {
        let ops = FakeNetOps::new();
        ops.fail_nth(Op::AddVmNat, 2);
        let ip = Ipv4Addr::new(172, 30, 0, 2);
        ops.add_vm_nat(&id(1), ip, "br-banger").await.unwrap();
        let err = ops.add_vm_nat(&id(2), ip, "br-banger").await.unwrap_err();
        assert!(
            format!("{err:?}").contains("injected failure of add_vm_nat call 2"),
            "{err:?}"
        );
        ops.add_vm_nat(&id(3), ip, "br-banger").await.unwrap();
        assert_eq!(
            ops.list_nat_tagged().await.unwrap(),
            BTreeSet::from([id(1), id(3)])
        );
        assert_eq!(ops.remove_vm_nat(&id(1)).await.unwrap(), 3);
        assert_eq!(ops.remove_vm_nat(&id(1)).await.unwrap(), 0);
        assert_eq!(ops.calls_of(Op::AddVmNat).len(), 3);
    }

    #[tokio::test]
    async fn always_failing_ops_and_clearing() {
        let ops = FakeNetOps::new();
        ops.fail_always(Op::EnableIpForward);
        assert!(ops.enable_ip_forward().await.is_err());
        assert!(ops.enable_ip_forward().await.is_err());
        assert!(!ops.ip_forward());
        ops.clear_failures();
        assert!(ops.enable_ip_forward().await.unwrap());
        assert!(!ops.enable_ip_forward().await.unwrap());
        assert!(ops.ip_forward());
    }
}
