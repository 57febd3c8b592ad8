//! The daemon's one service error, and the one place it becomes a wire
//! error.
//!
//! Services return [`ServiceError`]: the subsystems' own errors (store,
//! references, names, specs, the SSH key) convert with `?`; any other
//! failure gets what was being done from [`Doing`] (`.doing("…")`); the
//! rest are the outcomes the CLI acts on (not found, conflict, cancelled,
//! no default image…). [`ServiceError::to_wire`] picks the code, message
//! and hint. A full filesystem is `resource_exhausted` with a hint,
//! wherever it was met.

use std::error::Error;
use std::io;

use banger_model::name::NameError;
use banger_model::spec::SpecError;
use banger_rpc::{ErrorCode, RpcError};
use banger_store::{ResolveError, StoreError};

use crate::ssh::EnsureKeyError;
use crate::undo::RollbackFailure;

/// The cause of a failed step.
pub type Cause = Box<dyn Error + Send + Sync + 'static>;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A value the client sent is unacceptable.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The record is in a state that forbids the operation, or in use.
    #[error("{0}")]
    Conflict(String),
    /// Something the host or the operation needs is missing.
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Timeout(String),
    /// Not enough disk space for what was asked.
    #[error("{0}")]
    NoSpace(String),
    /// banger broke one of its own rules.
    #[error("{0}")]
    Internal(String),
    /// The client went away or asked to stop.
    #[error("cancelled")]
    Cancelled,
    /// No image was named and none is the default.
    #[error("there is no default image")]
    NoDefaultImage,
    #[error(transparent)]
    Store(Box<StoreError>),
    #[error(transparent)]
    Resolve(Box<ResolveError>),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Key(Box<EnsureKeyError>),
    /// The client gave something `source` refuses (`invalid_argument`).
    #[error(transparent)]
    Invalid(Cause),
    /// The host lacks what `source` names (`failed_precondition`).
    #[error(transparent)]
    Unmet(Cause),
    /// `what` failed on banger's side (`internal`).
    #[error("{what}")]
    Failed {
        what: String,
        #[source]
        source: Cause,
    },
    /// `what` failed because of the host or the outside world: a tool, a
    /// download, a registry (`failed_precondition`).
    #[error("{what}")]
    Unavailable {
        what: String,
        #[source]
        source: Cause,
    },
    /// `what` failed because of what the client gave (`invalid_argument`).
    #[error("{what}")]
    Rejected {
        what: String,
        #[source]
        source: Cause,
    },
    /// `error`, with what the user can do about it.
    #[error("{error}")]
    Hinted {
        #[source]
        error: Box<ServiceError>,
        hint: String,
    },
    /// `error`, and the rollback after it left something behind.
    #[error("{error}; cleaning up also failed")]
    CleanupFailed {
        #[source]
        error: Box<ServiceError>,
        problems: Vec<RollbackFailure>,
    },
}

/// The hint for a full filesystem.
const OUT_OF_SPACE_HINT: &str = "the filesystem banger writes to is full: free space there \
     (df -h shows it); banger catches up once there is room, no restart needed";

impl ServiceError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::AlreadyExists(message.into())
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::Timeout(message.into())
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(message.into())
    }

    pub fn precondition(message: impl Into<String>) -> Self {
        Self::Precondition(message.into())
    }

    /// `what` failed on banger's side because of `source`.
    pub fn failed(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Failed {
            what: what.into(),
            source: source.into(),
        }
    }

    /// Adds (or replaces) what the user can do about it.
    pub fn with_hint(self, hint: impl Into<String>) -> Self {
        Self::Hinted {
            error: Box::new(self),
            hint: hint.into(),
        }
    }

    /// Adds `hint` unless the error has one already.
    pub fn or_hint(self, hint: impl Into<String>) -> Self {
        if self.to_wire().hint.is_some() {
            self
        } else {
            self.with_hint(hint)
        }
    }

    pub fn is_cancelled(&self) -> bool {
        match self {
            Self::Cancelled => true,
            Self::Hinted { error, .. } | Self::CleanupFailed { error, .. } => error.is_cancelled(),
            _ => false,
        }
    }

    /// The message the client sees.
    pub fn message(&self) -> String {
        self.to_wire().message
    }

    /// The wire error: the one mapping from service errors to codes,
    /// messages and hints.
    pub fn to_wire(&self) -> RpcError {
        match self {
            Self::InvalidArgument(message) => RpcError::new(ErrorCode::InvalidArgument, message),
            Self::NotFound(message) => RpcError::new(ErrorCode::NotFound, message),
            Self::AlreadyExists(message) => RpcError::new(ErrorCode::AlreadyExists, message),
            Self::Conflict(message) => RpcError::new(ErrorCode::Conflict, message),
            Self::Precondition(message) => RpcError::new(ErrorCode::FailedPrecondition, message),
            Self::Timeout(message) => RpcError::new(ErrorCode::Timeout, message),
            Self::NoSpace(message) => RpcError::new(ErrorCode::ResourceExhausted, message),
            Self::Internal(message) => RpcError::new(ErrorCode::Internal, message),
            Self::Cancelled => RpcError::new(ErrorCode::Cancelled, "cancelled"),
            Self::NoDefaultImage => RpcError::new(ErrorCode::NoDefaultImage, self.to_string()),
            Self::Store(err) => match &**err {
                StoreError::NameTaken { .. } => {
                    RpcError::new(ErrorCode::AlreadyExists, err.to_string())
                }
                StoreError::Conflict { .. } => RpcError::new(ErrorCode::Conflict, err.to_string()),
                StoreError::Missing { .. } => RpcError::new(ErrorCode::NotFound, err.to_string()),
                StoreError::Corrupt { .. } | StoreError::Sql(_) => {
                    tracing::error!(error = ?err, "store failure");
                    caused(ErrorCode::Internal, "recording the change", &**err)
                }
            },
            Self::Resolve(err) => match &**err {
                ResolveError::NotFound { .. } => {
                    RpcError::new(ErrorCode::NotFound, err.to_string())
                }
                ResolveError::Ambiguous { .. } => {
                    RpcError::new(ErrorCode::Ambiguous, err.to_string())
                }
            },
            Self::Name(err) => RpcError::new(ErrorCode::InvalidArgument, err.to_string()),
            Self::Spec(err) => RpcError::new(ErrorCode::InvalidArgument, err.to_string()),
            Self::Key(err) => {
                let err: &EnsureKeyError = err;
                let wire = match err {
                    EnsureKeyError::Dir { .. }
                    | EnsureKeyError::Generate { .. }
                    | EnsureKeyError::Read { .. } => {
                        caused(ErrorCode::Internal, "preparing the SSH key", err)
                    }
                    _ => RpcError::new(ErrorCode::FailedPrecondition, chain(err)),
                };
                match err.hint() {
                    Some(hint) if wire.hint.is_none() => wire.with_hint(hint),
                    _ => wire,
                }
            }
            Self::Invalid(source) => {
                RpcError::new(ErrorCode::InvalidArgument, chain(source.as_ref()))
            }
            Self::Unmet(source) => {
                RpcError::new(ErrorCode::FailedPrecondition, chain(source.as_ref()))
            }
            Self::Failed { what, source } => caused(ErrorCode::Internal, what, source.as_ref()),
            Self::Unavailable { what, source } => {
                caused(ErrorCode::FailedPrecondition, what, source.as_ref())
            }
            Self::Rejected { what, source } => {
                caused(ErrorCode::InvalidArgument, what, source.as_ref())
            }
            Self::Hinted { error, hint } => error.to_wire().with_hint(hint),
            Self::CleanupFailed { error, problems } => {
                let mut wire = error.to_wire();
                let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
                wire.message = format!(
                    "{}; cleaning up also failed: {}",
                    wire.message,
                    problems.join("; ")
                );
                wire
            }
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        Self::Store(Box::new(err))
    }
}

impl From<ResolveError> for ServiceError {
    fn from(err: ResolveError) -> Self {
        Self::Resolve(Box::new(err))
    }
}

impl From<EnsureKeyError> for ServiceError {
    fn from(err: EnsureKeyError) -> Self {
        Self::Key(Box::new(err))
    }
}

impl From<ServiceError> for RpcError {
    fn from(err: ServiceError) -> Self {
        err.to_wire()
    }
}

/// Names what was being done when a step failed.
pub trait Doing<T> {
    /// A failure on banger's side (`internal`).
    fn doing(self, what: impl Into<String>) -> Result<T, ServiceError>;
    /// A failure of the host or the outside world (`failed_precondition`).
    fn unavailable(self, what: impl Into<String>) -> Result<T, ServiceError>;
    /// A failure caused by what the client gave (`invalid_argument`).
    fn rejected(self, what: impl Into<String>) -> Result<T, ServiceError>;
    /// The error itself says what the client got wrong (`invalid_argument`).
    fn invalid(self) -> Result<T, ServiceError>;
    /// The error itself says what the host lacks (`failed_precondition`).
    fn unmet(self) -> Result<T, ServiceError>;
}

impl<T, E: Into<Cause>> Doing<T> for Result<T, E> {
    fn doing(self, what: impl Into<String>) -> Result<T, ServiceError> {
        self.map_err(|source| ServiceError::Failed {
            what: what.into(),
            source: source.into(),
        })
    }

    fn unavailable(self, what: impl Into<String>) -> Result<T, ServiceError> {
        self.map_err(|source| ServiceError::Unavailable {
            what: what.into(),
            source: source.into(),
        })
    }

    fn rejected(self, what: impl Into<String>) -> Result<T, ServiceError> {
        self.map_err(|source| ServiceError::Rejected {
            what: what.into(),
            source: source.into(),
        })
    }

    fn invalid(self) -> Result<T, ServiceError> {
        self.map_err(|source| ServiceError::Invalid(source.into()))
    }

    fn unmet(self) -> Result<T, ServiceError> {
        self.map_err(|source| ServiceError::Unmet(source.into()))
    }
}

/// Adds what the user can do to a failed result.
pub trait Hint<T> {
    /// Adds (or replaces) the hint.
    fn hint(self, hint: impl Into<String>) -> Result<T, ServiceError>;
    /// Adds the hint unless the error has one already.
    fn or_hint(self, hint: impl Into<String>) -> Result<T, ServiceError>;
}

impl<T> Hint<T> for Result<T, ServiceError> {
    fn hint(self, hint: impl Into<String>) -> Result<T, ServiceError> {
        self.map_err(|err| err.with_hint(hint))
    }

    fn or_hint(self, hint: impl Into<String>) -> Result<T, ServiceError> {
        self.map_err(|err| err.or_hint(hint))
    }
}

/// Returns [`ServiceError::Cancelled`] once `cancel` fired.
pub fn check_cancel(cancel: &tokio_util::sync::CancellationToken) -> Result<(), ServiceError> {
    if cancel.is_cancelled() {
        Err(ServiceError::Cancelled)
    } else {
        Ok(())
    }
}

/// Runs blocking work off the async threads.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work)
        .await
        .doing("worker failed")
}

/// The wire error for a failure of `what` caused by `err`:
/// `resource_exhausted` with a hint when the cause is a full filesystem,
/// else `code`. The message carries the cause chain once.
fn caused(code: ErrorCode, what: &str, err: &(dyn Error + 'static)) -> RpcError {
    let message = format!("{what}: {}", chain(err));
    if out_of_space(err) {
        RpcError::new(ErrorCode::ResourceExhausted, message).with_hint(OUT_OF_SPACE_HINT)
    } else {
        RpcError::new(code, message)
    }
}

/// ENOSPC and EDQUOT.
const OUT_OF_SPACE: [i32; 2] = [nix::libc::ENOSPC, nix::libc::EDQUOT];

/// Whether `err` or one of its causes is a write that found no space.
pub fn out_of_space(err: &(dyn Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(cause) = next {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            if io
                .raw_os_error()
                .is_some_and(|code| OUT_OF_SPACE.contains(&code))
                || matches!(
                    io.kind(),
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
                )
            {
                return true;
            }
            // A wrapped error (`io::Error::other`) keeps its own causes.
            if let Some(inner) = io.get_ref()
                && out_of_space(inner)
            {
                return true;
            }
        }
        if let Some(store) = cause.downcast_ref::<StoreError>()
            && store.is_disk_full()
        {
            return true;
        }
        next = cause.source();
    }
    false
}

/// `error: cause: cause`, without repeating a cause whose text the error
/// already shows (many errors print their source's message too; SQLite's
/// prefixes its own with `Error code N: `).
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        let core = part.rsplit(": ").next().unwrap_or(&part);
        if !text.contains(core) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write the file")]
    struct Unpack(#[source] io::Error);

    #[test]
    fn a_full_disk_is_found_through_wrappers_and_gets_its_own_code() {
        let enospc = io::Error::from_raw_os_error(nix::libc::ENOSPC);
        let wrapped = io::Error::other(Unpack(enospc));
        let err = Err::<(), _>(wrapped)
            .rejected("importing the tarball")
            .unwrap_err()
            .to_wire();
        assert_eq!(err.code, ErrorCode::ResourceExhausted);
        assert!(
            err.message
                .starts_with("importing the tarball: cannot write the file"),
            "{err:?}"
        );
        assert!(err.message.contains("No space left on device"), "{err:?}");
        assert!(err.hint.is_some());

        let other = io::Error::other(Unpack(io::Error::from_raw_os_error(nix::libc::EACCES)));
        let err = Err::<(), _>(other)
            .rejected("importing the tarball")
            .unwrap_err()
            .to_wire();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.hint.is_none());
    }

    #[test]
    fn codes_the_cli_acts_on_survive_hints_and_failed_cleanups() {
        let err = ServiceError::NoDefaultImage.with_hint("bootstrap one");
        let wire = RpcError::from(err);
        assert_eq!(wire.code, ErrorCode::NoDefaultImage);
        assert_eq!(wire.hint.as_deref(), Some("bootstrap one"));

        let err = ServiceError::CleanupFailed {
            error: Box::new(ServiceError::Cancelled),
            problems: vec![RollbackFailure {
                what: "remove the work disk".into(),
                error: "busy".into(),
            }],
        };
        assert!(err.is_cancelled());
        let wire = err.to_wire();
        assert_eq!(wire.code, ErrorCode::Cancelled);
        assert_eq!(
            wire.message,
            "cancelled; cleaning up also failed: remove the work disk: busy"
        );

        let missing = ServiceError::from(ResolveError::NotFound {
            kind: "vm",
            reference: "web".into(),
        });
        assert_eq!(missing.to_wire().code, ErrorCode::NotFound);
    }

    #[test]
    fn or_hint_keeps_the_full_disk_hint() {
        let full = io::Error::from_raw_os_error(nix::libc::ENOSPC);
        let err = ServiceError::failed("pulling", full).or_hint("pull again");
        let wire = err.to_wire();
        assert_eq!(wire.code, ErrorCode::ResourceExhausted);
        assert!(wire.hint.unwrap().contains("df -h"));
        let err = ServiceError::precondition("offline").or_hint("pull again");
        assert_eq!(err.to_wire().hint.as_deref(), Some("pull again"));
    }

    #[test]
    fn causes_are_printed_once() {
        let err = io::Error::other(Unpack(io::Error::from_raw_os_error(nix::libc::ENOSPC)));
        let text = chain(&err);
        assert_eq!(text.matches("No space left on device").count(), 1, "{text}");
    }
}
