//! NAT for `--nat` VMs, with the `iptables` binary.
//!
//! Each NAT VM gets three rules, every one tagged with the comment
//! `banger:<vm-id>` so teardown and reconcile find exactly that VM's rules:
//!
//! ```text
//! -t nat    -I POSTROUTING 1 -s <ip>/32 ! -o <bridge> -m comment --comment banger:<id> -j MASQUERADE
//! -t filter -I FORWARD 1 -s <ip>/32 -i <bridge> ! -o <bridge> -m comment --comment banger:<id> -j ACCEPT
//! -t filter -I FORWARD 1 -d <ip>/32 -o <bridge> -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment banger:<id> -j ACCEPT
//! ```
//!
//! # Why `iptables` and not a table of our own in nftables
//!
//! The forward accepts have to live in the `filter` table's `FORWARD` chain
//! itself. Hosts that run Docker (and many firewalls) set that chain's policy
//! to DROP. In nftables every base chain hooked at `forward` sees the packet
//! and a drop in any of them is final, so an `accept` in a separate
//! `table inet banger` could not overrule Docker's DROP; only a rule placed
//! before it in the same chain can. The `iptables` binary writes to that chain
//! through whichever backend the host uses (iptables-nft or legacy), the same
//! one Docker, libvirt and ufw use, so banger's rules sit next to theirs and
//! show up in `iptables-save`. Rules are inserted at the top for that reason.
//! The costs: a process per rule change (a few milliseconds, only on NAT VM
//! start/stop) and parsing `iptables -S` text to find tagged rules, which the
//! comment tag makes unambiguous. Rules are deleted by their full spec, never by
//! position, so concurrent changes by other tools cannot make us delete theirs.

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use banger_model::Id;

use crate::exec::{self, ExecError};
use crate::names::{InvalidIfName, validate_ifname};

/// Comment prefix of every rule banger adds; the VM id follows.
pub const TAG_PREFIX: &str = "banger:";

/// Where the kernel's IPv4 forwarding switch lives (per network namespace).
pub const IP_FORWARD_PATH: &str = "/proc/sys/net/ipv4/ip_forward";

/// The comment that tags a VM's rules: `banger:<vm-id>`.
pub fn tag(vm_id: &Id) -> String {
    format!("{TAG_PREFIX}{vm_id}")
}

/// An iptables table banger writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Filter,
    Nat,
}

impl Table {
    pub const ALL: [Table; 2] = [Table::Filter, Table::Nat];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Filter => "filter",
            Self::Nat => "nat",
        }
    }
}

/// One rule: its table, chain and the arguments after the chain name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: Table,
    pub chain: String,
    pub spec: Vec<String>,
}

impl Rule {
    /// The VM id in the rule's `banger:` comment, if it has one.
    pub fn tag_id(&self) -> Option<&str> {
        self.spec
            .windows(2)
            .filter(|pair| pair[0] == "--comment")
            .find_map(|pair| pair[1].strip_prefix(TAG_PREFIX))
            .filter(|id| !id.is_empty())
    }

    /// argv (after the program) that inserts the rule at the top of its chain.
    fn insert_args(&self) -> Vec<String> {
        let mut args = table_args(self.table);
        args.extend(["-I".to_owned(), self.chain.clone(), "1".to_owned()]);
        args.extend(self.spec.iter().cloned());
        args
    }

    /// argv (after the program) that deletes the rule by its full spec.
    fn delete_args(&self) -> Vec<String> {
        let mut args = table_args(self.table);
        args.extend(["-D".to_owned(), self.chain.clone()]);
        args.extend(self.spec.iter().cloned());
        args
    }
}

fn table_args(table: Table) -> Vec<String> {
    // -w: wait for the xtables lock instead of failing when another tool
    // (or a concurrent banger call) holds it; harmless with iptables-nft.
    vec!["-w".to_owned(), "-t".to_owned(), table.as_str().to_owned()]
}

/// The rules that give the guest at `guest_ip` on `bridge` outbound NAT.
pub fn vm_rules(vm_id: &Id, guest_ip: Ipv4Addr, bridge: &str) -> Vec<Rule> {
    let tag = tag(vm_id);
    let ip = format!("{guest_ip}/32");
    let strings = |parts: &[&str]| parts.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    vec![
        Rule {
            table: Table::Nat,
            chain: "POSTROUTING".to_owned(),
            spec: strings(&[
                "-s",
                &ip,
                "!",
                "-o",
                bridge,
                "-m",
                "comment",
                "--comment",
                &tag,
                "-j",
                "MASQUERADE",
            ]),
        },
        Rule {
            table: Table::Filter,
            chain: "FORWARD".to_owned(),
            spec: strings(&[
                "-s",
                &ip,
                "-i",
                bridge,
                "!",
                "-o",
                bridge,
                "-m",
                "comment",
                "--comment",
                &tag,
                "-j",
                "ACCEPT",
            ]),
        },
        Rule {
            table: Table::Filter,
            chain: "FORWARD".to_owned(),
            spec: strings(&[
                "-d",
                &ip,
                "-o",
                bridge,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-m",
                "comment",
                "--comment",
                &tag,
                "-j",
                "ACCEPT",
            ]),
        },
    ]
}

/// A line of `iptables -S` that could not be split into words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse iptables rule line {line:?}: unterminated quote")]
pub struct ParseRuleError {
    pub line: String,
}

/// The rules (`-A CHAIN ...` lines) in `iptables -t <table> -S` output.
/// Policy (`-P`) and chain (`-N`) lines are skipped.
pub fn parse_rules(table: Table, output: &str) -> Result<Vec<Rule>, ParseRuleError> {
    let mut rules = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        if !line.starts_with("-A ") {
            continue;
        }
        let words = split_words(line).ok_or_else(|| ParseRuleError {
            line: line.to_owned(),
        })?;
        let mut words = words.into_iter().skip(1);
        let Some(chain) = words.next() else { continue };
        rules.push(Rule {
            table,
            chain,
            spec: words.collect(),
        });
    }
    Ok(rules)
}

/// Splits a line the way iptables quotes it in `-S` output: words separated
/// by spaces, double quotes around words with special characters, `\"` and
/// `\\` escaped inside quotes. `None` on an unterminated quote.
fn split_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Some(words);
        }
        let mut word = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
            if c != '"' {
                word.push(c);
                continue;
            }
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => word.push(chars.next()?),
                    other => word.push(other),
                }
            }
        }
        words.push(word);
    }
}

/// Why NAT for a VM could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AddNatError {
    #[error("vm id {0:?} is not a hex id; refusing to tag firewall rules with it")]
    InvalidVmId(String),
    #[error("invalid bridge name for NAT rules")]
    InvalidBridge(#[source] InvalidIfName),
    #[error("cannot clear earlier NAT rules of vm {vm_id}")]
    Clear {
        vm_id: String,
        #[source]
        source: RemoveNatError,
    },
    /// Asked of `banger-helper`, which refused or failed.
    #[error("banger-helper cannot add NAT rules for vm {vm_id}")]
    Helper {
        vm_id: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot add NAT rule for vm {vm_id} in {table}/{chain}")]
    Insert {
        vm_id: String,
        table: &'static str,
        chain: String,
        #[source]
        source: ExecError,
    },
}

/// Why a VM's NAT rules could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveNatError {
    #[error("cannot list iptables rules")]
    List(#[source] ListNatError),
    /// Asked of `banger-helper`, which refused or failed.
    #[error("banger-helper cannot remove NAT rules of vm {vm_id}")]
    Helper {
        vm_id: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot delete NAT rule of vm {vm_id} from {table}/{chain}")]
    Delete {
        vm_id: String,
        table: &'static str,
        chain: String,
        #[source]
        source: ExecError,
    },
}

/// Why the tagged rules could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListNatError {
    /// Asked of `banger-helper`, which refused or failed.
    #[error("banger-helper cannot list NAT rules")]
    Helper(#[source] io::Error),
    #[error("cannot list iptables {table} rules")]
    Run {
        table: &'static str,
        #[source]
        source: ExecError,
    },
    #[error("cannot parse iptables {table} rules")]
    Parse {
        table: &'static str,
        #[source]
        source: ParseRuleError,
    },
}

/// Why IPv4 forwarding could not be switched on.
#[derive(Debug, thiserror::Error)]
pub enum IpForwardError {
    #[error("cannot enable IPv4 forwarding")]
    Write(#[source] io::Error),
}

/// The `iptables` program banger drives.
#[derive(Debug, Clone)]
pub struct Iptables {
    program: PathBuf,
}

impl Default for Iptables {
    fn default() -> Self {
        Self::new("iptables")
    }
}

impl Iptables {
    /// `program` is a path or a name looked up in `PATH`.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    async fn run(&self, args: &[String]) -> Result<String, ExecError> {
        exec::run(&self.program, args).await
    }

    /// Every rule of `table`.
    pub async fn rules(&self, table: Table) -> Result<Vec<Rule>, ListNatError> {
        let output = self
            .run(&[
                "-w".to_owned(),
                "-t".to_owned(),
                table.as_str().to_owned(),
                "-S".to_owned(),
            ])
            .await
            .map_err(|source| ListNatError::Run {
                table: table.as_str(),
                source,
            })?;
        parse_rules(table, &output).map_err(|source| ListNatError::Parse {
            table: table.as_str(),
            source,
        })
    }

    /// Every rule in the filter and nat tables carrying a `banger:` tag.
    pub async fn tagged_rules(&self) -> Result<Vec<Rule>, ListNatError> {
        let mut tagged = Vec::new();
        for table in Table::ALL {
            tagged.extend(
                self.rules(table)
                    .await?
                    .into_iter()
                    .filter(|rule| rule.tag_id().is_some()),
            );
        }
        Ok(tagged)
    }

    /// The VM ids that have tagged rules (for reconcile).
    pub async fn list_tagged(&self) -> Result<BTreeSet<Id>, ListNatError> {
        Ok(self
            .tagged_rules()
            .await?
            .iter()
            .filter_map(Rule::tag_id)
            .map(Id::from_stored)
            .collect())
    }

    /// Adds the VM's NAT rules; rules it already had are replaced, so calling
    /// this twice (or after a crash) leaves exactly one set.
    pub async fn add_vm_nat(
        &self,
        vm_id: &Id,
        guest_ip: Ipv4Addr,
        bridge: &str,
    ) -> Result<(), AddNatError> {
        if !is_hex_id(vm_id) {
            return Err(AddNatError::InvalidVmId(vm_id.to_string()));
        }
        validate_ifname(bridge).map_err(AddNatError::InvalidBridge)?;
        self.remove_vm_nat(vm_id)
            .await
            .map_err(|source| AddNatError::Clear {
                vm_id: vm_id.to_string(),
                source,
            })?;
        for rule in vm_rules(vm_id, guest_ip, bridge) {
            if let Err(source) = self.run(&rule.insert_args()).await {
                if let Err(error) = self.remove_vm_nat(vm_id).await {
                    tracing::warn!(vm_id = %vm_id, error = %error, "rolling back partial NAT rules failed");
                }
                return Err(AddNatError::Insert {
                    vm_id: vm_id.to_string(),
                    table: rule.table.as_str(),
                    chain: rule.chain,
                    source,
                });
            }
        }
        tracing::info!(vm_id = %vm_id, guest_ip = %guest_ip, bridge, "NAT rules added");
        Ok(())
    }

    /// Removes every rule tagged with the VM's id; returns how many. No rules
    /// (already removed, never added) is not an error. A rule that vanishes
    /// between listing and deleting (a concurrent removal) is not one either.
    pub async fn remove_vm_nat(&self, vm_id: &Id) -> Result<usize, RemoveNatError> {
        let wanted = vm_id.as_str();
        let rules: Vec<Rule> = self
            .tagged_rules()
            .await
            .map_err(RemoveNatError::List)?
            .into_iter()
            .filter(|rule| rule.tag_id() == Some(wanted))
            .collect();
        let mut removed = 0;
        let mut first_error = None;
        for rule in rules {
            match self.run(&rule.delete_args()).await {
                Ok(_) => removed += 1,
                Err(source) => {
                    first_error.get_or_insert(RemoveNatError::Delete {
                        vm_id: vm_id.to_string(),
                        table: rule.table.as_str(),
                        chain: rule.chain,
                        source,
                    });
                }
            }
        }
        if let Some(error) = first_error {
            // Fine if someone else removed them meanwhile; not if they remain.
            let remaining = self
                .tagged_rules()
                .await
                .map_err(RemoveNatError::List)?
                .iter()
                .any(|rule| rule.tag_id() == Some(wanted));
            if remaining {
                return Err(error);
            }
        }
        if removed > 0 {
            tracing::info!(vm_id = %vm_id, removed, "NAT rules removed");
        }
        Ok(removed)
    }
}

fn is_hex_id(id: &Id) -> bool {
    let raw = id.as_str();
    !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Turns on IPv4 forwarding in the calling thread's network namespace.
/// Returns whether it was off before.
pub fn enable_ip_forward() -> Result<bool, IpForwardError> {
    let current = fs_err::read_to_string(IP_FORWARD_PATH).map_err(IpForwardError::Write)?;
    if current.trim() == "1" {
        return Ok(false);
    }
    fs_err::write(IP_FORWARD_PATH, "1\n").map_err(IpForwardError::Write)?;
    tracing::info!("enabled net.ipv4.ip_forward");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Id {
        Id::from_stored("0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn vm_rules_are_tagged_and_scoped_to_the_guest() {
        let rules = vm_rules(&id(), Ipv4Addr::new(172, 30, 0, 5), "br-banger");
        assert_eq!(rules.len(), 3);
        for rule in &rules {
            assert_eq!(rule.tag_id(), Some(id().as_str()));
            assert!(rule.spec.iter().any(|w| w == "172.30.0.5/32"), "{rule:?}");
        }
        assert_eq!(
            rules[0].insert_args().join(" "),
            "-w -t nat -I POSTROUTING 1 -s 172.30.0.5/32 ! -o br-banger -m comment --comment banger:0123456789abcdef0123456789abcdef -j MASQUERADE"
        );
        assert_eq!(
            rules[1].delete_args().join(" "),
            "-w -t filter -D FORWARD -s 172.30.0.5/32 -i br-banger ! -o br-banger -m comment --comment banger:0123456789abcdef0123456789abcdef -j ACCEPT"
        );
        assert!(
            rules[2].insert_args().join(" ").contains(
                "-d 172.30.0.5/32 -o br-banger -m conntrack --ctstate RELATED,ESTABLISHED"
            )
        );
    }

    const FILTER_S: &str = r#"-P INPUT ACCEPT
-P FORWARD DROP
-P OUTPUT ACCEPT
-N DOCKER-USER
-A FORWARD -d 172.30.0.5/32 -o br-banger -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "banger:0123456789abcdef0123456789abcdef" -j ACCEPT
-A FORWARD -s 172.30.0.5/32 -i br-banger ! -o br-banger -m comment --comment "banger:0123456789abcdef0123456789abcdef" -j ACCEPT
-A FORWARD -j DOCKER-USER
-A FORWARD -m comment --comment "with space \"q\" and \\" -j ACCEPT
-A FORWARD -m comment --comment "banger:" -j ACCEPT
-A DOCKER-USER -s 10.0.0.0/8 -m comment --comment banger:ffff -j RETURN
"#;

    #[test]
    fn parses_iptables_s_output() {
        let rules = parse_rules(Table::Filter, FILTER_S).unwrap();
        assert_eq!(rules.len(), 6);
        assert_eq!(rules[0].chain, "FORWARD");
        assert_eq!(
            rules[0].spec,
            vec![
                "-d",
                "172.30.0.5/32",
                "-o",
                "br-banger",
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-m",
                "comment",
                "--comment",
                "banger:0123456789abcdef0123456789abcdef",
                "-j",
                "ACCEPT"
            ]
        );
        assert_eq!(rules[0].tag_id(), Some(id().as_str()));
        assert_eq!(rules[2].tag_id(), None);
        assert_eq!(rules[3].spec[3], r#"with space "q" and \"#);
        assert_eq!(rules[3].tag_id(), None);
        assert_eq!(rules[4].tag_id(), None, "empty id is no tag");
        assert_eq!(rules[5].chain, "DOCKER-USER");
        assert_eq!(rules[5].tag_id(), Some("ffff"));
    }

    #[test]
    fn parsed_rules_delete_with_the_same_spec_they_were_added_with() {
        let added = vm_rules(&id(), Ipv4Addr::new(172, 30, 0, 5), "br-banger");
        let parsed = parse_rules(Table::Filter, FILTER_S).unwrap();
        assert_eq!(parsed[1].delete_args(), added[1].delete_args());
        // `iptables -S` prints the options in the order they were given.
        assert_eq!(parsed[0].delete_args(), added[2].delete_args());
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        let err = parse_rules(
            Table::Nat,
            "-A POSTROUTING -m comment --comment \"oops -j X\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("oops"), "{err}");
    }

    #[test]
    fn word_splitting() {
        assert_eq!(
            split_words(r#"  a "b c"  d"e"f "" "#).unwrap(),
            vec!["a", "b c", "def", ""]
        );
        assert_eq!(split_words(""), Some(vec![]));
        assert_eq!(split_words(r#""a\"#), None);
    }

    #[test]
    fn non_hex_ids_are_refused() {
        assert!(is_hex_id(&id()));
        assert!(!is_hex_id(&Id::from_stored("web-1")));
        assert!(!is_hex_id(&Id::from_stored("")));
        assert!(!is_hex_id(&Id::from_stored("ab cd")));
    }

    #[tokio::test]
    async fn add_refuses_bad_input_before_running_anything() {
        // A program that does not exist: reaching it would be a Spawn error.
        let iptables = Iptables::new("/nonexistent/iptables");
        let err = iptables
            .add_vm_nat(&Id::from_stored("x y"), Ipv4Addr::new(10, 0, 0, 2), "br0")
            .await
            .unwrap_err();
        assert!(matches!(err, AddNatError::InvalidVmId(_)), "{err}");
        let err = iptables
            .add_vm_nat(&id(), Ipv4Addr::new(10, 0, 0, 2), "bad/name")
            .await
            .unwrap_err();
        assert!(matches!(err, AddNatError::InvalidBridge(_)), "{err}");
    }
}
