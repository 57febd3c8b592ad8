//! Errors on the wire, with codes that scripts can rely on.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Stable error codes. Never renumber or rename one; add new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not a JSON request object.
    MalformedFrame,
    /// The frame exceeded [`crate::MAX_FRAME_BYTES`].
    FrameTooLarge,
    /// The peer speaks another protocol version.
    ProtocolMismatch,
    UnknownMethod,
    /// The params did not match the method's shape.
    InvalidParams,
    /// The params were well-formed but a value is unacceptable.
    InvalidArgument,
    NotFound,
    /// A reference matched more than one record.
    Ambiguous,
    AlreadyExists,
    /// The record is in a state that forbids the operation, or in use.
    Conflict,
    /// Something the host or the operation needs is missing.
    FailedPrecondition,
    /// The client went away or asked to stop.
    Cancelled,
    Timeout,
    NotImplemented,
    PermissionDenied,
    Internal,
    /// Out of disk space (or quota) where banger keeps its state.
    ResourceExhausted,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedFrame => "malformed_frame",
            Self::FrameTooLarge => "frame_too_large",
            Self::ProtocolMismatch => "protocol_mismatch",
            Self::UnknownMethod => "unknown_method",
            Self::InvalidParams => "invalid_params",
            Self::InvalidArgument => "invalid_argument",
            Self::NotFound => "not_found",
            Self::Ambiguous => "ambiguous",
            Self::AlreadyExists => "already_exists",
            Self::Conflict => "conflict",
            Self::FailedPrecondition => "failed_precondition",
            Self::Cancelled => "cancelled",
            Self::Timeout => "timeout",
            Self::NotImplemented => "not_implemented",
            Self::PermissionDenied => "permission_denied",
            Self::Internal => "internal",
            Self::ResourceExhausted => "resource_exhausted",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RpcError {
    pub code: ErrorCode,
    pub message: String,
    /// What the user can do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl RpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    pub fn cancelled() -> Self {
        Self::new(ErrorCode::Cancelled, "cancelled")
    }
}
