//! End-to-end worlds run by an ordinary user, as banger is meant to run:
//! with `BANGER_E2E_USER=NAME` set, every [`crate::SimEnv`] hands its world
//! to that user, starts the real `banger-helper serve` (as root) inside its
//! network namespace, and runs `banger` (and whatever else acts for the
//! user: ssh, git, ssh-keygen) as that user, with the uid, gid and groups a
//! login would give them. The user must exist (ssh refuses a uid without a
//! passwd entry) and be a member of the helper's group (`banger`, or
//! `BANGER_E2E_GROUP`). `scripts/test.sh` creates both when run as root.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{Group, User};

/// Names the user end-to-end worlds run as; unset or empty: root.
pub const USER_VAR: &str = "BANGER_E2E_USER";
/// Names the group the helper admits (default `banger`).
pub const GROUP_VAR: &str = "BANGER_E2E_GROUP";

/// The user a world runs as, resolved from the user and group databases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E2eUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Every group of the user, the primary one included, as at login.
    pub groups: Vec<u32>,
    /// The group the helper admits; the user is a member.
    pub helper_group: String,
}

impl E2eUser {
    /// The user `BANGER_E2E_USER` names, if it names one. Panics with what
    /// to do when the user or its membership of the helper's group is
    /// missing: a run asked for user mode must not quietly fall back to root.
    pub fn from_env() -> Option<Self> {
        let name = std::env::var(USER_VAR)
            .ok()
            .filter(|name| !name.is_empty())?;
        let helper_group = std::env::var(GROUP_VAR)
            .ok()
            .filter(|group| !group.is_empty())
            .unwrap_or_else(|| "banger".to_owned());
        Some(Self::resolve(&name, &helper_group))
    }

    fn resolve(name: &str, helper_group: &str) -> Self {
        let user = User::from_name(name)
            .unwrap_or_else(|err| panic!("{USER_VAR}={name}: looking the user up: {err}"))
            .unwrap_or_else(|| {
                panic!(
                    "{USER_VAR}={name}: no such user\nhint: create it: \
                     useradd --create-home --groups {helper_group} {name}"
                )
            });
        assert!(
            !user.uid.is_root(),
            "{USER_VAR}={name} is root; unset it to run as root"
        );
        let c_name = CString::new(name).expect("a user name has no NUL");
        let groups: Vec<u32> = nix::unistd::getgrouplist(&c_name, user.gid)
            .unwrap_or_else(|err| panic!("{USER_VAR}={name}: its groups: {err}"))
            .into_iter()
            .map(|gid| gid.as_raw())
            .collect();
        let group = Group::from_name(helper_group)
            .unwrap_or_else(|err| panic!("{GROUP_VAR}: looking {helper_group} up: {err}"))
            .unwrap_or_else(|| {
                panic!("the helper's group {helper_group} does not exist\nhint: groupadd --system {helper_group}")
            });
        assert!(
            groups.contains(&group.gid.as_raw()),
            "{name} is not a member of {helper_group}\nhint: usermod -aG {helper_group} {name}"
        );
        Self {
            name: name.to_owned(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
            helper_group: helper_group.to_owned(),
        }
    }

    /// `setpriv` arguments that become this user (uid, gid, groups), to
    /// put before the program.
    pub fn setpriv_args(&self) -> Vec<String> {
        let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        vec![
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            format!("--groups={}", groups.join(",")),
            "--".to_owned(),
        ]
    }

    /// A command that runs `program` as this user: `setpriv` (started as
    /// root) takes the user's uid, gid and groups and execs the program in
    /// place, so the child's pid is the program's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.setpriv(Command::new("setpriv"), program)
    }

    /// Completes `setpriv`, a command that runs `setpriv` (directly or in a
    /// namespace), so it execs `program` as this user.
    pub fn setpriv(&self, mut setpriv: Command, program: impl AsRef<std::ffi::OsStr>) -> Command {
        setpriv
            .args(self.setpriv_args())
            .arg(program)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name);
        setpriv
    }

    /// Gives `path` and everything under it to this user.
    pub fn give(&self, path: &Path) {
        crate::env::chown_tree(path, self.uid, self.gid);
    }

    /// This user's copy of `tree` (a root-owned fixture with files only
    /// root may read): `<tree>.uid<uid>` beside it, owned by the user, made
    /// on first use (`cp -a`, then chown) and reused while the fixture's
    /// `stamp` (or, without one, its modification time) is unchanged.
    /// Several tests ask at once: a lock makes one copy.
    pub fn copy_of(&self, tree: &Path) -> PathBuf {
        let name = tree.file_name().expect("a fixture tree has a name");
        let sibling = |suffix: &str| {
            let mut file = name.to_owned();
            file.push(format!(".uid{}{suffix}", self.uid));
            tree.with_file_name(file)
        };
        let (copy, partial, stamp_file) = (sibling(""), sibling(".partial"), sibling(".stamp"));
        let stamp = {
            let built = std::fs::read_to_string(tree.with_file_name("stamp")).unwrap_or_default();
            let modified = std::fs::metadata(tree)
                .and_then(|meta| meta.modified())
                .map(|time| format!("{time:?}"))
                .unwrap_or_default();
            format!("{built}\n{modified}\n")
        };
        let lock = std::fs::File::create(sibling(".lock"))
            .unwrap_or_else(|err| panic!("{}: {err}", sibling(".lock").display()));
        let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .unwrap_or_else(|(_, err)| panic!("locking {}: {err}", sibling(".lock").display()));
        if copy.is_dir() && std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(&stamp) {
            return copy;
        }
        for stale in [&copy, &partial] {
            if stale.exists() {
                std::fs::remove_dir_all(stale)
                    .unwrap_or_else(|err| panic!("removing {}: {err}", stale.display()));
            }
        }
        let out = crate::env::run({
            let mut cp = Command::new("cp");
            cp.args(["-a", "--reflink=auto"]).arg(tree).arg(&partial);
            cp
        });
        out.assert_success();
        self.give(&partial);
        std::fs::rename(&partial, &copy)
            .unwrap_or_else(|err| panic!("renaming {}: {err}", partial.display()));
        std::fs::write(&stamp_file, stamp)
            .unwrap_or_else(|err| panic!("{}: {err}", stamp_file.display()));
        copy
    }

    /// The network the helper gives this user (see banger-helper's
    /// `UserNetwork::for_uid`).
    pub fn network(&self) -> WorldNetwork {
        WorldNetwork::for_uid(self.uid)
    }
}

/// What a world's daemon gets on the host: the same as banger-helper's
/// `UserNetwork` (root keeps banger's defaults; uid U gets `bbr-U` and
/// 172.30.K.0/24, K = 1 + (U − 1000) mod 255), plus the DNS port and warm
/// pool names that follow from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldNetwork {
    pub bridge: String,
    /// The third octet of 172.30.K.0/24; also the pool's naming space.
    pub index: u8,
    /// Where the DNS server listens on 127.0.0.1 (default port + K).
    pub dns_port: u16,
}

impl WorldNetwork {
    pub fn for_uid(uid: u32) -> Self {
        if uid == 0 {
            return Self {
                bridge: "br-banger".to_owned(),
                index: 0,
                dns_port: 42069,
            };
        }
        let index = u8::try_from((uid % 255 + 255 - 1000 % 255) % 255 + 1).expect("1..=255");
        Self {
            bridge: format!("bbr-{uid}"),
            index,
            dns_port: 42069 + u16::from(index),
        }
    }

    /// `172.30.K.`, what every guest address starts with.
    pub fn address_prefix(&self) -> String {
        format!("172.30.{}.", self.index)
    }

    /// The names of idle TAPs of the warm pool start with this; a VM's
    /// TAP is any other `btap-` name.
    pub fn pool_prefix(&self) -> String {
        if self.index == 0 {
            "btap-pool-".to_owned()
        } else {
            format!("btap-pool{}-", self.index)
        }
    }

    /// Whether link `name` is a VM's TAP (not an idle one of the pool).
    pub fn is_vm_tap(&self, name: &str) -> bool {
        name.starts_with("btap-") && !name.starts_with(&self.pool_prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::WorldNetwork;

    #[test]
    fn networks_follow_the_helpers_rule() {
        let root = WorldNetwork::for_uid(0);
        assert_eq!(
            (root.bridge.as_str(), root.index, root.dns_port),
            ("br-banger", 0, 42069)
        );
        assert!(root.is_vm_tap("btap-0123") && !root.is_vm_tap("btap-pool-1"));
        let first = WorldNetwork::for_uid(1000);
        assert_eq!(
            (first.bridge.as_str(), first.index, first.dns_port),
            ("bbr-1000", 1, 42070)
        );
        assert_eq!(first.address_prefix(), "172.30.1.");
        assert!(first.is_vm_tap("btap-pool-1") && !first.is_vm_tap("btap-pool1-0"));
        assert_eq!(WorldNetwork::for_uid(1254).index, 255);
        assert_eq!(WorldNetwork::for_uid(1255).index, 1);
        assert_eq!(WorldNetwork::for_uid(999).index, 255);
    }
}
