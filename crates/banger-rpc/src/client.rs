//! A client for one connection, generic over the stream so it can be tested
//! over an in-memory pipe.

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};

use crate::codec::{FrameReadError, FrameReader, write_frame};
use crate::error::RpcError;
use crate::event::Event;
use crate::frame::{PROTOCOL_VERSION, RequestFrame, ResponseBody, ResponseFrame};
use crate::request::Request;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The daemon answered with an error.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("talking to the daemon: {0}")]
    Io(#[source] std::io::Error),
    #[error("the daemon closed the connection before answering")]
    Closed,
    #[error("the daemon sent a frame this client cannot read: {0}")]
    Protocol(String),
}

/// Sends requests one at a time and collects their events.
#[derive(Debug)]
pub struct Client<S> {
    reader: FrameReader<ReadHalf<S>>,
    writer: WriteHalf<S>,
    next_id: u64,
}

impl<S: AsyncRead + AsyncWrite> Client<S> {
    pub fn new(stream: S) -> Self {
        let (read, write) = tokio::io::split(stream);
        Self {
            reader: FrameReader::new(read),
            writer: write,
            next_id: 1,
        }
    }

    /// Sends `request`, passes every event to `on_event`, and decodes the
    /// result as `T`.
    pub async fn call<T: DeserializeOwned>(
        &mut self,
        request: &Request,
        on_event: impl FnMut(Event),
    ) -> Result<T, CallError> {
        let (method, params) = request.encode();
        let value = self.call_raw(&method, params, on_event).await?;
        serde_json::from_value(value)
            .map_err(|err| CallError::Protocol(format!("result of {method}: {err}")))
    }

    /// Like [`Client::call`] for an arbitrary method name and params.
    pub async fn call_raw(
        &mut self,
        method: &str,
        params: Value,
        mut on_event: impl FnMut(Event),
    ) -> Result<Value, CallError> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = RequestFrame {
            v: PROTOCOL_VERSION,
            id,
            method: method.to_owned(),
            params,
        };
        if let Err(err) = write_frame(&mut self.writer, &frame).await {
            // A daemon that refuses a connection answers and closes at once;
            // its answer explains the broken pipe better than the pipe does.
            if let Some(Ok(ResponseFrame {
                body: ResponseBody::Error(refusal),
                ..
            })) = self.reader.next_frame::<ResponseFrame>().await
            {
                return Err(refusal.into());
            }
            return Err(CallError::Io(err));
        }
        loop {
            let frame: ResponseFrame = match self.reader.next_frame().await {
                None => return Err(CallError::Closed),
                Some(Ok(frame)) => frame,
                Some(Err(FrameReadError::Io(err))) => return Err(CallError::Io(err)),
                Some(Err(err)) => return Err(CallError::Protocol(err.to_string())),
            };
            if frame.v != PROTOCOL_VERSION {
                return Err(CallError::Protocol(format!(
                    "daemon speaks protocol {}, this banger speaks {PROTOCOL_VERSION}",
                    frame.v
                )));
            }
            match (frame.id, frame.body) {
                (Some(got), ResponseBody::Event(event)) if got == id => on_event(event),
                (Some(got), ResponseBody::Result(value)) if got == id => return Ok(value),
                (Some(got), ResponseBody::Error(err)) if got == id => return Err(err.into()),
                (None, ResponseBody::Error(err)) => return Err(err.into()),
                (other, _) => {
                    return Err(CallError::Protocol(format!(
                        "answer for request {other:?} while waiting for {id}"
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::event::StageStatus;
    use crate::response::PingResult;

    /// A scripted peer: reads one request, answers with the given frames.
    async fn serve_once(
        stream: tokio::io::DuplexStream,
        answers: Vec<ResponseFrame>,
    ) -> RequestFrame {
        let (read, mut write) = tokio::io::split(stream);
        let mut reader = FrameReader::new(read);
        let request: RequestFrame = reader.next_frame().await.unwrap().unwrap();
        for answer in answers {
            write_frame(&mut write, &answer).await.unwrap();
        }
        request
    }

    #[tokio::test]
    async fn collects_events_then_result() {
        let (client_end, server_end) = tokio::io::duplex(4096);
        let ping = PingResult {
            build: banger_buildinfo::BuildInfo::current(),
            pid: 42,
            protocol: PROTOCOL_VERSION,
            config: 0,
        };
        let answers = vec![
            ResponseFrame::event(
                1,
                Event::Stage {
                    stage: "s".into(),
                    status: StageStatus::Started,
                    elapsed_ms: None,
                    detail: None,
                },
            ),
            ResponseFrame::result(1, serde_json::to_value(&ping).unwrap()),
        ];
        let server = tokio::spawn(serve_once(server_end, answers));
        let mut client = Client::new(client_end);
        let mut events = Vec::new();
        let got: PingResult = client
            .call(&Request::Ping, |event| events.push(event))
            .await
            .unwrap();
        assert_eq!(got, ping);
        assert_eq!(events.len(), 1);
        let request = server.await.unwrap();
        assert_eq!(request.method, "daemon.ping");
        assert_eq!(request.id, 1);
    }

    #[tokio::test]
    async fn errors_and_closed_connections_surface() {
        let (client_end, server_end) = tokio::io::duplex(4096);
        let answers = vec![ResponseFrame::error(
            Some(1),
            RpcError::not_found("no vm named x"),
        )];
        tokio::spawn(serve_once(server_end, answers));
        let mut client = Client::new(client_end);
        match client.call::<Value>(&Request::VmList, |_| {}).await {
            Err(CallError::Rpc(err)) => assert_eq!(err.code, ErrorCode::NotFound),
            other => panic!("expected an rpc error, got {other:?}"),
        }
        // The scripted server is gone now: the next call sees a closed stream.
        assert!(matches!(
            client.call::<Value>(&Request::VmList, |_| {}).await,
            Err(CallError::Closed | CallError::Io(_))
        ));
    }
}
