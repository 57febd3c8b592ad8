//! Who may use the helper: root, and members of one group (`banger` by
//! default), checked per connection from `SO_PEERCRED`.
//!
//! The socket's mode (0660, that group) keeps others from connecting at
//! all; this check is the one that holds even when the file permissions do
//! not (a socket in a directory someone else made, a test's 0666 socket).

use banger_rpc::{ErrorCode, RpcError};
use nix::unistd::{Gid, Group, Uid, User};

use crate::caller::Caller;

/// The group whose members may use the helper.
pub const DEFAULT_GROUP: &str = "banger";

/// Who may use the helper besides root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The group's name, for messages.
    pub group_name: String,
    /// The group's id; `None` when no such group exists (then only root may).
    pub gid: Option<u32>,
}

impl Access {
    /// Looks `group` up in the group database.
    pub fn for_group(group: &str) -> std::io::Result<Self> {
        let found = Group::from_name(group).map_err(std::io::Error::from)?;
        Ok(Self {
            group_name: group.to_owned(),
            gid: found.map(|group| group.gid.as_raw()),
        })
    }

    /// Members of the group with id `gid`, called `name` in messages.
    pub fn for_gid(name: impl Into<String>, gid: u32) -> Self {
        Self {
            group_name: name.into(),
            gid: Some(gid),
        }
    }

    /// Whether `caller` may use the helper: root, a process whose group is
    /// the helper's group, or a user the group database lists as a member.
    pub fn check(&self, caller: &Caller) -> Result<(), RpcError> {
        if caller.uid == 0 {
            return Ok(());
        }
        let user = User::from_uid(Uid::from_raw(caller.uid)).ok().flatten();
        let who = user.as_ref().map_or_else(
            || format!("uid {}", caller.uid),
            |user| format!("user {} (uid {})", user.name, caller.uid),
        );
        let login = user
            .as_ref()
            .map_or_else(|| "USER".to_owned(), |user| user.name.clone());
        let group = &self.group_name;
        let Some(gid) = self.gid else {
            return Err(RpcError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "{who} may not use banger-helper: group {group} does not exist, so only root may"
                ),
            )
            .with_hint(format!(
                "create the group and join it: sudo groupadd --system {group} && sudo usermod -aG {group} {login}, then log in again"
            )));
        };
        if caller.gid == gid || self.lists_member(gid, user.as_ref()) {
            return Ok(());
        }
        Err(RpcError::new(
            ErrorCode::PermissionDenied,
            format!("{who} is not a member of group {group}, which may use banger-helper"),
        )
        .with_hint(format!(
            "join the group: sudo usermod -aG {group} {login}, then log in again"
        )))
    }

    fn lists_member(&self, gid: u32, user: Option<&User>) -> bool {
        let Some(user) = user else { return false };
        if user.gid == Gid::from_raw(gid) {
            return true;
        }
        Group::from_gid(Gid::from_raw(gid))
            .ok()
            .flatten()
            .is_some_and(|group| group.mem.contains(&user.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, gid: u32) -> Caller {
        Caller {
            uid,
            gid,
            pid: None,
        }
    }

    #[test]
    fn root_always_and_group_members_only() {
        let access = Access::for_gid("banger", 4242);
        access.check(&caller(0, 0)).unwrap();
        access.check(&caller(60001, 4242)).unwrap();
        let err = access.check(&caller(60003, 60003)).unwrap_err();
        assert_eq!(err.code, ErrorCode::PermissionDenied);
        assert!(err.message.contains("group banger"), "{}", err.message);
        assert!(
            err.hint.as_deref().unwrap().contains("usermod -aG banger"),
            "{err:?}"
        );
    }

    #[test]
    fn a_missing_group_admits_only_root() {
        let access = Access {
            group_name: "banger-nope".into(),
            gid: None,
        };
        access.check(&caller(0, 0)).unwrap();
        let err = access.check(&caller(60001, 60001)).unwrap_err();
        assert!(err.message.contains("does not exist"), "{}", err.message);
        assert!(err.hint.unwrap().contains("groupadd --system banger-nope"));
    }
}
