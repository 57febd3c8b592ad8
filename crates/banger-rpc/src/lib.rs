//! The protocol between `banger` and `bangerd`, separate from its transport.
//!
//! Frames are newline-delimited JSON objects carrying an explicit protocol
//! version `v`. A client sends a [`frame::RequestFrame`]; the daemon answers
//! with any number of `event` frames (progress of long operations) followed by
//! exactly one `result` or `error` frame with the same `id`. Several requests
//! may be in flight on one connection. Closing the connection cancels every
//! request still running on it.
//!
//! Layout:
//! - [`frame`]: the envelopes, protocol version and size limit.
//! - [`request`]: the methods, each a type pairing its params and result
//!   ([`Method`]), the [`Request`] enum the daemon decodes, and params.
//! - [`response`]: typed results per method.
//! - [`event`]: progress events.
//! - [`error`]: [`RpcError`] with stable [`ErrorCode`]s.
//! - [`codec`]: reading and writing frames with the size limit.
//! - [`client`]: a client generic over the stream.

pub mod client;
pub mod codec;
pub mod error;
pub mod event;
pub mod frame;
pub mod request;
pub mod response;

pub use client::{CallError, Client};
pub use error::{ErrorCode, RpcError};
pub use event::{Event, StageStatus};
pub use frame::{MAX_FRAME_BYTES, PROTOCOL_VERSION};
pub use request::{Method, NoParams, Request, method};
