//! The socket server: accepts connections, checks the peer's uid, reads
//! request frames, runs each request as its own task and writes its events
//! and answer back. When the client disconnects, every request still running
//! on that connection is cancelled.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use banger_rpc::codec::{FrameReadError, FrameReader, write_frame};
use banger_rpc::frame::{RequestFrame, ResponseFrame};
use banger_rpc::{ErrorCode, Event, PROTOCOL_VERSION, Request, RpcError, StageStatus};
use serde_json::Value;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Implemented by the daemon core; tests implement it with fakes.
pub trait Handler: Send + Sync + 'static {
    /// Runs one request. `cancel` fires when the client disconnects or the
    /// daemon shuts down.
    fn handle(
        &self,
        request: Request,
        events: EventSink,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<Value, RpcError>> + Send;
}

/// Streams events for one request back to its client.
#[derive(Debug, Clone)]
pub struct EventSink {
    id: u64,
    tx: mpsc::UnboundedSender<ResponseFrame>,
}

impl EventSink {
    /// A sink whose events go nowhere (internal callers, tests).
    pub fn discard() -> Self {
        let (tx, _rx) = mpsc::unbounded_channel();
        Self { id: 0, tx }
    }

    /// A sink that records events, for tests.
    pub fn recording() -> (Self, mpsc::UnboundedReceiver<ResponseFrame>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { id: 0, tx }, rx)
    }

    pub fn emit(&self, event: Event) {
        // The client may be gone; its request is being cancelled then.
        let _ = self.tx.send(ResponseFrame::event(self.id, event));
    }

    pub fn log(&self, level: &str, message: impl Into<String>) {
        self.emit(Event::Log {
            level: level.to_owned(),
            message: message.into(),
        });
    }

    /// Announces a stage and returns a guard that reports its outcome.
    pub fn stage(&self, stage: &str) -> Stage {
        self.emit(Event::Stage {
            stage: stage.to_owned(),
            status: StageStatus::Started,
            elapsed_ms: None,
            detail: None,
        });
        Stage {
            sink: self.clone(),
            name: stage.to_owned(),
            started: Instant::now(),
            finished: false,
        }
    }
}

/// A running stage. Call [`Stage::done`]; dropped unfinished, it reports failure.
#[derive(Debug)]
pub struct Stage {
    sink: EventSink,
    name: String,
    started: Instant,
    finished: bool,
}

impl Stage {
    pub fn done(mut self) {
        self.finish(StageStatus::Done, None);
    }

    pub fn skipped(mut self, why: impl Into<String>) {
        self.finish(StageStatus::Skipped, Some(why.into()));
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn finish(&mut self, status: StageStatus, detail: Option<String>) {
        self.finished = true;
        self.sink.emit(Event::Stage {
            stage: self.name.clone(),
            status,
            elapsed_ms: Some(self.elapsed_ms()),
            detail,
        });
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(StageStatus::Failed, None);
        }
    }
}

/// How long requests still running at shutdown may take before they are
/// cancelled (and roll back).
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves `listener` until `shutdown` fires. Then it stops accepting and
/// reading, lets running requests finish for up to [`DRAIN`], and cancels
/// whatever is left.
pub async fn serve<H: Handler>(
    listener: UnixListener,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let abort = CancellationToken::new();
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handler = Arc::clone(&handler);
                    tracker.spawn(connection(stream, handler, shutdown.clone(), abort.child_token()));
                }
                Err(err) => {
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        warn!(
            drain_s = DRAIN.as_secs(),
            "cancelling requests still running at shutdown"
        );
        abort.cancel();
        tracker.wait().await;
    }
}

async fn connection<H: Handler>(
    stream: UnixStream,
    handler: Arc<H>,
    shutdown: CancellationToken,
    token: CancellationToken,
) {
    let (read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<ResponseFrame>();

    if let Err(problem) = check_peer(&read) {
        warn!(%problem, "refused connection");
        let frame = ResponseFrame::error(None, RpcError::new(ErrorCode::PermissionDenied, problem));
        let _ = write_frame(&mut write, &frame).await;
        return;
    }

    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if let Err(err) = write_frame(&mut write, &frame).await {
                debug!(error = %err, "client went away while writing");
                break;
            }
        }
    });

    let requests = TaskTracker::new();
    let mut reader = FrameReader::new(read);
    let client_gone = loop {
        let line = tokio::select! {
            () = shutdown.cancelled() => break false,
            () = token.cancelled() => break false,
            line = reader.next_line() => line,
        };
        let line = match line {
            None => break true,
            Some(Ok(line)) => line,
            Some(Err(FrameReadError::Io(err))) => {
                debug!(error = %err, "read failed; closing connection");
                break true;
            }
            Some(Err(err)) => {
                let code = match err {
                    FrameReadError::TooLarge { .. } => ErrorCode::FrameTooLarge,
                    _ => ErrorCode::MalformedFrame,
                };
                warn!(error = %err, "bad frame");
                let _ = tx.send(ResponseFrame::error(
                    None,
                    RpcError::new(code, err.to_string()),
                ));
                continue;
            }
        };
        let (id, request) = match parse_request(&line) {
            Ok(parsed) => parsed,
            Err((id, err)) => {
                warn!(code = %err.code, message = %err.message, "refused request");
                let _ = tx.send(ResponseFrame::error(id, err));
                continue;
            }
        };
        let handler = Arc::clone(&handler);
        let sink = EventSink { id, tx: tx.clone() };
        let cancel = token.child_token();
        requests.spawn(async move {
            let method = request.method();
            let started = Instant::now();
            debug!(%method, id, "request");
            // Handlers watch `cancel` themselves so that they can roll back;
            // the future is never dropped half-way.
            let outcome = handler.handle(request, sink.clone(), cancel).await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let frame = match outcome {
                Ok(value) => {
                    info!(%method, id, elapsed_ms, "request done");
                    ResponseFrame::result(id, value)
                }
                Err(err) if err.code == ErrorCode::Cancelled => {
                    info!(%method, id, elapsed_ms, "request cancelled");
                    ResponseFrame::error(Some(id), err)
                }
                Err(err) => {
                    info!(%method, id, elapsed_ms, code = %err.code, error = %err.message, "request failed");
                    ResponseFrame::error(Some(id), err)
                }
            };
            let _ = sink.tx.send(frame);
        });
    };
    // A client that went away cancels what it started; at shutdown running
    // requests are left to finish (the server bounds that).
    if client_gone {
        token.cancel();
    }
    requests.close();
    requests.wait().await;
    drop(tx);
    let _ = writer.await;
}

/// Decodes a request line; on failure returns the request id when it could
/// be read, so the client can match the error.
fn parse_request(line: &str) -> Result<(u64, Request), (Option<u64>, RpcError)> {
    let value: Value = serde_json::from_str(line).map_err(|err| {
        (
            None,
            RpcError::new(
                ErrorCode::MalformedFrame,
                format!("frame is not valid JSON: {err}"),
            ),
        )
    })?;
    let id = value.get("id").and_then(Value::as_u64);
    let frame: RequestFrame = serde_json::from_value(value).map_err(|err| {
        (
            id,
            RpcError::new(
                ErrorCode::MalformedFrame,
                format!("frame is not a request: {err}"),
            ),
        )
    })?;
    if frame.v != PROTOCOL_VERSION {
        return Err((
            Some(frame.id),
            RpcError::new(
                ErrorCode::ProtocolMismatch,
                format!(
                    "client speaks protocol {}, this daemon speaks {PROTOCOL_VERSION}",
                    frame.v
                ),
            )
            .with_hint("run `banger daemon stop` and retry so the CLI starts a matching daemon"),
        ));
    }
    let request =
        Request::decode(&frame.method, frame.params).map_err(|err| (Some(frame.id), err))?;
    Ok((frame.id, request))
}

/// Only the daemon's own user may talk to it.
fn check_peer(stream: &tokio::net::unix::OwnedReadHalf) -> Result<(), String> {
    let cred = stream
        .as_ref()
        .peer_cred()
        .map_err(|err| format!("cannot read peer credentials: {err}"))?;
    let own = nix::unistd::geteuid().as_raw();
    if cred.uid() != own {
        return Err(format!(
            "peer uid {} is not the daemon's uid {own}",
            cred.uid()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_request_classifies_failures() {
        let (id, request) = parse_request(r#"{"v":1,"id":4,"method":"vm.list"}"#).unwrap();
        assert_eq!((id, request), (4, Request::VmList));

        let (id, err) = parse_request("{nope").unwrap_err();
        assert_eq!((id, err.code), (None, ErrorCode::MalformedFrame));

        let (id, err) = parse_request(r#"{"id":9,"hello":true}"#).unwrap_err();
        assert_eq!((id, err.code), (Some(9), ErrorCode::MalformedFrame));

        let (id, err) = parse_request(r#"{"v":99,"id":2,"method":"vm.list"}"#).unwrap_err();
        assert_eq!((id, err.code), (Some(2), ErrorCode::ProtocolMismatch));

        let (id, err) = parse_request(r#"{"v":1,"id":3,"method":"vm.fly"}"#).unwrap_err();
        assert_eq!((id, err.code), (Some(3), ErrorCode::UnknownMethod));

        let (_, err) =
            parse_request(r#"{"v":1,"id":3,"method":"vm.show","params":{}}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParams);
    }

    #[tokio::test]
    async fn stage_guard_reports_failure_when_dropped() {
        let (sink, mut rx) = EventSink::recording();
        {
            let _stage = sink.stage("prepare_disks");
        }
        sink.stage("start_vmm").done();
        let statuses: Vec<StageStatus> = std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|frame| match frame.body {
                banger_rpc::frame::ResponseBody::Event(Event::Stage { status, .. }) => Some(status),
                _ => None,
            })
            .collect();
        assert_eq!(
            statuses,
            vec![
                StageStatus::Started,
                StageStatus::Failed,
                StageStatus::Started,
                StageStatus::Done
            ]
        );
    }
}
