//! Frame envelopes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ErrorCode, RpcError};
use crate::event::Event;

/// Bumped when a change would make an old peer misread frames.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame either side accepts, in bytes (without the newline).
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// Client → daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFrame {
    pub v: u32,
    pub id: u64,
    pub method: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
}

impl RequestFrame {
    /// Reads one request line as a server does: malformed JSON, a frame
    /// that is not a request (the error keeps its `id` when it has one) and
    /// another protocol version are errors to answer with. `server` names
    /// the answering side and `hint` says how to get matching versions.
    pub fn parse(line: &str, server: &str, hint: &str) -> Result<Self, (Option<u64>, RpcError)> {
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
        let frame: Self = serde_json::from_value(value).map_err(|err| {
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
                        "client speaks protocol {}, {server} speaks {PROTOCOL_VERSION}",
                        frame.v
                    ),
                )
                .with_hint(hint),
            ));
        }
        Ok(frame)
    }
}

/// Daemon → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub v: u32,
    /// The request this answers; absent when the request could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(flatten)]
    pub body: ResponseBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseBody {
    Event(Event),
    Result(Value),
    Error(RpcError),
}

impl ResponseFrame {
    pub fn event(id: u64, event: Event) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id: Some(id),
            body: ResponseBody::Event(event),
        }
    }

    pub fn result(id: u64, value: Value) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id: Some(id),
            body: ResponseBody::Result(value),
        }
    }

    pub fn error(id: Option<u64>, error: RpcError) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id,
            body: ResponseBody::Error(error),
        }
    }

    /// Whether this frame ends its request.
    pub fn is_final(&self) -> bool {
        !matches!(self.body, ResponseBody::Event(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::event::StageStatus;

    #[test]
    fn wire_shape_is_stable() {
        let frame = ResponseFrame::result(7, serde_json::json!({"ok": true}));
        assert_eq!(
            serde_json::to_string(&frame).unwrap(),
            r#"{"v":1,"id":7,"result":{"ok":true}}"#
        );
        let frame = ResponseFrame::error(None, RpcError::new(ErrorCode::MalformedFrame, "bad"));
        assert_eq!(
            serde_json::to_string(&frame).unwrap(),
            r#"{"v":1,"error":{"code":"malformed_frame","message":"bad"}}"#
        );
        let frame = ResponseFrame::event(
            3,
            Event::Stage {
                stage: "start_vmm".into(),
                status: StageStatus::Done,
                elapsed_ms: Some(12),
                detail: None,
            },
        );
        let text = serde_json::to_string(&frame).unwrap();
        assert_eq!(
            text,
            r#"{"v":1,"id":3,"event":{"type":"stage","stage":"start_vmm","status":"done","elapsed_ms":12}}"#
        );
        assert_eq!(serde_json::from_str::<ResponseFrame>(&text).unwrap(), frame);
        assert!(!frame.is_final());
    }

    #[test]
    fn the_spec_event_carries_each_setting_with_its_provenance() {
        use banger_model::defaults::{Provenance, Resolved, ResolvedSpec};
        let config = |value| Resolved {
            value,
            provenance: Provenance::Config,
        };
        let spec = ResolvedSpec {
            name: Resolved::flag("web".parse().unwrap()),
            vcpu: config(3),
            memory_mib: Resolved {
                value: 2048,
                provenance: Provenance::Host,
            },
            disk_size: Resolved {
                value: banger_model::ByteSize::gib(8),
                provenance: Provenance::Builtin,
            },
            nat: Resolved::flag(false),
            vmm: Resolved {
                value: banger_model::vm::VmmKind::Sim,
                provenance: Provenance::Config,
            },
        };
        let frame = ResponseFrame::event(4, Event::Spec { spec });
        let text = serde_json::to_string(&frame).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"v":1,"id":4,"event":{"type":"spec","spec":{"#,
                r#""name":{"value":"web","provenance":"flag"},"#,
                r#""vcpu":{"value":3,"provenance":"config"},"#,
                r#""memory_mib":{"value":2048,"provenance":"host"},"#,
                r#""disk_size":{"value":8589934592,"provenance":"builtin"},"#,
                r#""nat":{"value":false,"provenance":"flag"},"#,
                r#""vmm":{"value":"sim","provenance":"config"}}}}"#
            )
        );
        assert_eq!(serde_json::from_str::<ResponseFrame>(&text).unwrap(), frame);
    }

    #[test]
    fn request_params_default_to_null() {
        let frame: RequestFrame =
            serde_json::from_str(r#"{"v":1,"id":1,"method":"daemon.ping"}"#).unwrap();
        assert_eq!(frame.params, Value::Null);
    }
}
