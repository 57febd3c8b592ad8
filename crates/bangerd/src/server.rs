//! The socket server: accepts connections, checks the peer's uid, reads
//! request frames, runs each request as its own task and writes its events
//! and answer back. When the client disconnects, every request still running
//! on that connection is cancelled.
//!
//! Everything a client can make the daemon hold is bounded: at most
//! [`MAX_CONNECTIONS`] connections, [`MAX_IN_FLIGHT`] running requests per
//! connection (past that the connection is not read until answers drain)
//! and [`OUTBOX`] frames queued for a client that does not read (answers
//! wait, progress events are dropped). At shutdown nothing a client does or
//! fails to do keeps the daemon past [`DRAIN`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use banger_rpc::codec::{FrameReadError, FrameReader, write_frame};
use banger_rpc::frame::{RequestFrame, ResponseFrame};
use banger_rpc::{ErrorCode, Event, Request, RpcError, StageStatus};
use serde_json::Value;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};
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

/// Most connections served at once; more are answered with an error.
pub const MAX_CONNECTIONS: usize = 256;
/// Most requests running at once on one connection.
pub const MAX_IN_FLIGHT: usize = 32;
/// Most frames queued for one connection's writer.
pub const OUTBOX: usize = 256;

/// Streams events for one request back to its client.
#[derive(Debug, Clone)]
pub struct EventSink {
    id: u64,
    tx: mpsc::Sender<ResponseFrame>,
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    fn new(id: u64, tx: mpsc::Sender<ResponseFrame>) -> Self {
        Self {
            id,
            tx,
            dropped: Arc::default(),
        }
    }

    /// A sink whose events go nowhere (internal callers, tests).
    pub fn discard() -> Self {
        let (tx, _rx) = mpsc::channel(1);
        Self::new(0, tx)
    }

    /// A sink that records events, for tests.
    pub fn recording() -> (Self, mpsc::Receiver<ResponseFrame>) {
        let (tx, rx) = mpsc::channel(4096);
        (Self::new(0, tx), rx)
    }

    /// Queues an event. A client that does not read loses events once its
    /// queue is full (progress is advisory); a gone client loses them all.
    pub fn emit(&self, event: Event) {
        if let Err(mpsc::error::TrySendError::Full(_)) =
            self.tx.try_send(ResponseFrame::event(self.id, event))
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events dropped because the client did not read them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
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

    /// Done, saying what it did (`10213 files, 197 MiB`).
    pub fn done_with(mut self, detail: impl Into<String>) {
        self.finish(StageStatus::Done, Some(detail.into()));
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
/// whatever is left (connections are closed then, read or not).
pub async fn serve<H: Handler>(
    listener: UnixListener,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let abort = CancellationToken::new();
    let tracker = TaskTracker::new();
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match Arc::clone(&connections).try_acquire_owned() {
                    Ok(permit) => {
                        let handler = Arc::clone(&handler);
                        let served = connection(stream, handler, shutdown.clone(), abort.child_token());
                        tracker.spawn(async move {
                            served.await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        tracker.spawn(refuse(stream));
                    }
                },
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

/// Answers a connection over [`MAX_CONNECTIONS`] with an error and closes it.
async fn refuse(stream: UnixStream) {
    warn!(max = MAX_CONNECTIONS, "too many connections; refusing one");
    let (_, mut write) = stream.into_split();
    let error = RpcError::new(
        ErrorCode::Conflict,
        format!("the daemon serves at most {MAX_CONNECTIONS} connections at once"),
    )
    .with_hint("close idle clients and retry");
    let frame = ResponseFrame::error(None, error);
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        write_frame(&mut write, &frame),
    )
    .await;
}

async fn connection<H: Handler>(
    stream: UnixStream,
    handler: Arc<H>,
    shutdown: CancellationToken,
    token: CancellationToken,
) {
    let (read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<ResponseFrame>(OUTBOX);

    if let Err(refusal) = check_peer(&read) {
        warn!(problem = %refusal.message, "refused connection");
        let frame = ResponseFrame::error(None, refusal);
        let _ = write_frame(&mut write, &frame).await;
        return;
    }

    // Stops when the queue closes, the client goes away, or the server
    // aborts (a client that never reads cannot hold the daemon).
    let writer = tokio::spawn({
        let token = token.clone();
        async move {
            loop {
                let frame = tokio::select! {
                    frame = rx.recv() => frame,
                    () = token.cancelled() => None,
                };
                let Some(frame) = frame else { break };
                let written = tokio::select! {
                    written = write_frame(&mut write, &frame) => written,
                    () = token.cancelled() => break,
                };
                if let Err(err) = written {
                    debug!(error = %err, "client went away while writing");
                    break;
                }
            }
        }
    });

    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let requests = TaskTracker::new();
    let mut reader = FrameReader::new(read);
    let mut frames: u64 = 0;
    let client_gone = loop {
        // Past the in-flight limit, read nothing until answers drain.
        let permit = tokio::select! {
            () = shutdown.cancelled() => break false,
            () = token.cancelled() => break false,
            permit = Arc::clone(&in_flight).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break false,
            },
        };
        let line = tokio::select! {
            () = shutdown.cancelled() => break false,
            () = token.cancelled() => break false,
            line = reader.next_line() => line,
        };
        frames += 1;
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
                let frame = ResponseFrame::error(None, RpcError::new(code, err.to_string()));
                if !queue(&tx, frame, &token).await {
                    break false;
                }
                continue;
            }
        };
        let (id, request) = match parse_request(&line) {
            Ok(parsed) => parsed,
            Err((id, err)) => {
                warn!(code = %err.code, message = %err.message, "refused request");
                if !queue(&tx, ResponseFrame::error(id, err), &token).await {
                    break false;
                }
                continue;
            }
        };
        let handler = Arc::clone(&handler);
        let sink = EventSink::new(id, tx.clone());
        let cancel = token.child_token();
        let token = token.clone();
        requests.spawn(async move {
            let method = request.method();
            let started = Instant::now();
            debug!(%method, id, "request");
            // Handlers watch `cancel` themselves so that they can roll back;
            // the future is never dropped half-way.
            let outcome = handler.handle(request, sink.clone(), cancel).await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let dropped_events = sink.dropped();
            let frame = match outcome {
                Ok(value) => {
                    info!(%method, id, elapsed_ms, dropped_events, "request done");
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
            queue(&sink.tx, frame, &token).await;
            drop(permit);
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
    if frames > RELEASE_AFTER_FRAMES {
        release_memory();
    }
}

/// Queues an answer for the writer, waiting while the client's queue is
/// full; gives up when the connection is cancelled. Whether it was queued.
async fn queue(
    tx: &mpsc::Sender<ResponseFrame>,
    frame: ResponseFrame,
    token: &CancellationToken,
) -> bool {
    tokio::select! {
        sent = tx.send(frame) => sent.is_ok(),
        () = token.cancelled() => false,
    }
}

/// A connection that sent more frames than this returns freed memory to
/// the system when it ends (the allocator keeps it otherwise).
const RELEASE_AFTER_FRAMES: u64 = 1024;

fn release_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks and trims the allocator's own free
    // lists; it takes no pointers and is safe to call from any thread.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Decodes a request line; on failure returns the request id when it could
/// be read, so the client can match the error.
fn parse_request(line: &str) -> Result<(u64, Request), (Option<u64>, RpcError)> {
    let frame = RequestFrame::parse(
        line,
        "this daemon",
        "run `banger daemon stop` and retry so the CLI starts a matching daemon",
    )?;
    let request =
        Request::decode(&frame.method, frame.params).map_err(|err| (Some(frame.id), err))?;
    Ok((frame.id, request))
}

/// Only the daemon's own user may talk to it. Another user (root after a
/// `sudo`, most often) is told whose daemon this is and how to get one of
/// their own or reach this one.
fn check_peer(stream: &tokio::net::unix::OwnedReadHalf) -> Result<(), RpcError> {
    let cred = stream.as_ref().peer_cred().map_err(|err| {
        RpcError::new(
            ErrorCode::PermissionDenied,
            format!("cannot read peer credentials: {err}"),
        )
    })?;
    let own = nix::unistd::geteuid().as_raw();
    if cred.uid() == own {
        return Ok(());
    }
    let name = |uid: u32| {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(
                || format!("uid {uid}"),
                |user| format!("{} (uid {uid})", user.name),
            )
    };
    let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(own))
        .ok()
        .flatten()
        .map(|user| user.name);
    let hint = match &owner {
        Some(owner) => format!(
            "run banger as {owner} (without sudo if you are {owner}: sudo -E makes you root), or stop that daemon first with `sudo -u {owner} banger daemon stop`"
        ),
        None => format!("run banger as uid {own}, or stop that daemon first"),
    };
    Err(RpcError::new(
        ErrorCode::PermissionDenied,
        format!(
            "this banger daemon belongs to {}; you are {}",
            name(own),
            name(cred.uid())
        ),
    )
    .with_hint(hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_request_classifies_failures() {
        let (id, request) = parse_request(r#"{"v":1,"id":4,"method":"vm.list"}"#).unwrap();
        assert_eq!((id, request), (4, Request::VmList(banger_rpc::NoParams {})));

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
