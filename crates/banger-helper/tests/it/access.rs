//! Only root and members of the helper's group are served.

use banger_rpc::ErrorCode;

use crate::refusals::code;
use crate::support::{ALICE, GROUP, MALLORY, TestHelper, in_netns, root_or_skip};

#[test]
fn a_peer_outside_the_group_is_refused_with_how_to_join() {
    if !root_or_skip("a_peer_outside_the_group_is_refused_with_how_to_join") {
        return;
    }
    in_netns(|| async {
        let helper = TestHelper::start().await;
        let mut mallory = helper.client(MALLORY).await;
        let result = mallory.network().await;
        let error = result.as_ref().unwrap_err().rpc().cloned().unwrap();
        assert_eq!(code(result), ErrorCode::PermissionDenied);
        assert!(
            error
                .message
                .contains(&format!("not a member of group {GROUP}")),
            "{}",
            error.message
        );
        assert!(
            error
                .hint
                .as_deref()
                .unwrap()
                .contains(&format!("usermod -aG {GROUP}")),
            "{error:?}"
        );
        // Members and root are served.
        assert_eq!(
            helper.client(ALICE).await.network().await.unwrap().uid,
            ALICE.0
        );
        assert_eq!(helper.root().await.network().await.unwrap().uid, 0);
    });
}
