//! The socket side: accepts connections on an injected listener, checks
//! each peer's credentials, reads one request at a time, and answers.
//!
//! A peer that may not use the helper gets one error frame naming the group
//! and is disconnected. A malformed or oversized frame is answered with an
//! error and the connection is closed; the helper carries on. A request
//! runs to its end even when its caller dies meanwhile, so a half-done
//! effect is never left behind by a disconnect.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use banger_rpc::codec::{FrameReadError, FrameReader, write_frame};
use banger_rpc::frame::{RequestFrame, ResponseFrame};
use banger_rpc::{ErrorCode, RpcError};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::access::Access;
use crate::caller::Caller;
use crate::protocol::{HelperRequest, MAX_FRAME_BYTES};
use crate::service::Helper;

/// How many connections are served at once; more wait in the backlog.
const MAX_CONNECTIONS: usize = 64;

/// How long a connection may stay silent before the helper closes it, so
/// idle peers cannot hold every slot.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves `listener` until `shutdown` completes. Connections being served
/// then finish their current request in the background.
pub async fn run(
    listener: UnixListener,
    helper: Arc<Helper>,
    access: Access,
    shutdown: impl Future<Output = ()>,
) {
    let access = Arc::new(access);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    continue;
                }
            },
        };
        let helper = Arc::clone(&helper);
        let access = Arc::clone(&access);
        tokio::spawn(async move {
            serve_connection(stream, &helper, &access).await;
            drop(permit);
        });
    }
    tracing::info!("banger-helper stops accepting connections");
}

fn peer(stream: &UnixStream) -> Result<Caller, RpcError> {
    let cred = stream.peer_cred().map_err(|error| {
        RpcError::internal(format!("cannot read the peer's credentials: {error}"))
    })?;
    Ok(Caller {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
    })
}

/// Checks the peer; the group look-ups may block (NSS), so off the runtime.
async fn admit(stream: &UnixStream, access: &Arc<Access>) -> Result<Caller, RpcError> {
    let caller = peer(stream)?;
    let access = Arc::clone(access);
    tokio::task::spawn_blocking(move || access.check(&caller).map(|()| caller))
        .await
        .map_err(|error| RpcError::internal(format!("checking the peer failed: {error}")))?
}

async fn serve_connection(stream: UnixStream, helper: &Helper, access: &Arc<Access>) {
    let caller = match admit(&stream, access).await {
        Ok(caller) => caller,
        Err(refusal) => {
            tracing::warn!(error = %refusal, "refused a connection");
            let (_, mut write) = stream.into_split();
            let _ = write_frame(&mut write, &ResponseFrame::error(None, refusal)).await;
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    let mut reader = FrameReader::with_limit(read, MAX_FRAME_BYTES);
    loop {
        let line = match tokio::time::timeout(IDLE_TIMEOUT, reader.next_line()).await {
            Ok(Some(line)) => line,
            Ok(None) => return,
            Err(_) => {
                tracing::debug!(uid = caller.uid, "closing an idle connection");
                return;
            }
        };
        let (id, outcome) = match line {
            Ok(line) => match parse(&line) {
                Ok((id, request)) => (
                    Some(id),
                    helper
                        .handle(&caller, request)
                        .await
                        .map_err(|error| error.to_rpc()),
                ),
                Err((id, error)) => (id, Err(error)),
            },
            Err(FrameReadError::Io(error)) => {
                tracing::debug!(uid = caller.uid, %error, "connection failed");
                return;
            }
            Err(error @ FrameReadError::TooLarge { .. }) => (
                None,
                Err(RpcError::new(ErrorCode::FrameTooLarge, error.to_string())),
            ),
            Err(error) => (
                None,
                Err(RpcError::new(ErrorCode::MalformedFrame, error.to_string())),
            ),
        };
        let (frame, close) = match (id, outcome) {
            (Some(id), Ok(value)) => (ResponseFrame::result(id, value), false),
            (id, Err(error)) => {
                let close = matches!(
                    error.code,
                    ErrorCode::MalformedFrame
                        | ErrorCode::FrameTooLarge
                        | ErrorCode::ProtocolMismatch
                );
                tracing::info!(uid = caller.uid, code = %error.code, error = %error, "request refused or failed");
                (ResponseFrame::error(id, error), close)
            }
            (None, Ok(_)) => unreachable!("a result always has a request id"),
        };
        if write_frame(&mut write, &frame).await.is_err() || close {
            return;
        }
    }
}

/// Reads a request frame; the error carries the request id when known.
fn parse(line: &str) -> Result<(u64, HelperRequest), (Option<u64>, RpcError)> {
    let frame = RequestFrame::parse(
        line,
        "banger-helper",
        "install banger and banger-helper from the same release",
    )?;
    let request = HelperRequest::decode(&frame.method, frame.params)
        .map_err(|error| (Some(frame.id), error))?;
    Ok((frame.id, request))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_classifies_failures() {
        let (id, request) = parse(r#"{"v":1,"id":4,"method":"helper.network"}"#).unwrap();
        assert_eq!(id, 4);
        assert_eq!(request.method(), "helper.network");
        let (id, err) = parse("{nope").unwrap_err();
        assert_eq!((id, err.code), (None, ErrorCode::MalformedFrame));
        let (id, err) = parse(r#"{"v":9,"id":2,"method":"helper.network"}"#).unwrap_err();
        assert_eq!((id, err.code), (Some(2), ErrorCode::ProtocolMismatch));
        let (id, err) = parse(r#"{"v":1,"id":3,"method":"vm.list"}"#).unwrap_err();
        assert_eq!((id, err.code), (Some(3), ErrorCode::UnknownMethod));
    }
}
