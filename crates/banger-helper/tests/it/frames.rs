//! Malformed and oversized frames: an error answer, the connection closed,
//! the helper still serving.

use banger_helper::protocol::MAX_FRAME_BYTES;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::{ALICE, TestHelper, connect_as, in_netns, root_or_skip};

/// Sends `bytes`, returns the answer's error code and whether the helper
/// then closed the connection.
async fn send_raw(helper: &TestHelper, bytes: &[u8]) -> (String, bool) {
    let stream = connect_as(&helper.socket, ALICE.0, ALICE.1).await;
    let (read, mut write) = stream.into_split();
    let writer = tokio::spawn({
        let bytes = bytes.to_vec();
        async move {
            // The helper may close before reading everything.
            let _ = write.write_all(&bytes).await;
            write
        }
    });
    let mut lines = BufReader::new(read).lines();
    let answer = lines.next_line().await.unwrap().expect("an answer");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let closed = lines.next_line().await.unwrap_or(None).is_none();
    drop(writer.await);
    (
        answer["error"]["code"].as_str().unwrap_or("").to_owned(),
        closed,
    )
}

#[test]
fn malformed_and_oversized_frames_are_answered_and_the_connection_closed() {
    if !root_or_skip("malformed_and_oversized_frames_are_answered_and_the_connection_closed") {
        return;
    }
    in_netns(|| async {
        let helper = TestHelper::start().await;
        let (code, closed) = send_raw(&helper, b"{this is not json\n").await;
        assert_eq!(code, "malformed_frame");
        assert!(closed);
        let (code, closed) = send_raw(&helper, b"[1, 2, 3]\n").await;
        assert_eq!(code, "malformed_frame");
        assert!(closed);
        let (code, closed) = send_raw(&helper, b"\xff\xfe\n").await;
        assert_eq!(code, "malformed_frame");
        assert!(closed);

        let mut big = br#"{"v":1,"id":1,"method":"helper.tap.create","params":{"name":""#.to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_FRAME_BYTES * 4));
        big.extend_from_slice(b"\"}}\n");
        let (code, closed) = send_raw(&helper, &big).await;
        assert_eq!(code, "frame_too_large");
        assert!(closed);

        // A well-formed request with bad params is answered, and the
        // connection stays usable.
        let (code, closed) = send_raw(
            &helper,
            b"{\"v\":1,\"id\":1,\"method\":\"helper.tap.delete\",\"params\":{\"nom\":1}}\n{\"v\":1,\"id\":2,\"method\":\"helper.network\"}\n",
        )
        .await;
        assert_eq!(code, "invalid_params");
        assert!(
            !closed,
            "the second request is answered on the same connection"
        );

        // The helper survived all of it.
        assert_eq!(
            helper.client(ALICE).await.network().await.unwrap().uid,
            ALICE.0
        );
    });
}
