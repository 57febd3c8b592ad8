//! Causes that decide an error's wire code whatever the operation: a full
//! filesystem is `resource_exhausted` with a hint, wherever it was met.

use std::error::Error;
use std::io;

use banger_rpc::{ErrorCode, RpcError};
use banger_store::StoreError;

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

/// The error for a failure of `what` caused by `err`: `resource_exhausted`
/// with a hint when the cause is a full filesystem, else `code`. The
/// message carries the cause chain once.
pub fn failed(code: ErrorCode, what: &str, err: &(dyn Error + 'static)) -> RpcError {
    let message = format!("{what}: {}", chain(err));
    if out_of_space(err) {
        RpcError::new(ErrorCode::ResourceExhausted, message).with_hint(
            "the filesystem banger writes to is full: free space there (df -h shows it); \
             banger catches up once there is room, no restart needed",
        )
    } else {
        RpcError::new(code, message)
    }
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
        let err = failed(
            ErrorCode::InvalidArgument,
            "importing the tarball",
            &wrapped,
        );
        assert_eq!(err.code, ErrorCode::ResourceExhausted);
        assert!(
            err.message
                .starts_with("importing the tarball: cannot write the file"),
            "{err:?}"
        );
        assert!(err.message.contains("No space left on device"), "{err:?}");
        assert!(err.hint.is_some());

        let other = io::Error::other(Unpack(io::Error::from_raw_os_error(nix::libc::EACCES)));
        let err = failed(ErrorCode::InvalidArgument, "importing the tarball", &other);
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.hint.is_none());
    }

    #[test]
    fn causes_are_printed_once() {
        let err = io::Error::other(Unpack(io::Error::from_raw_os_error(nix::libc::ENOSPC)));
        let text = chain(&err);
        assert_eq!(text.matches("No space left on device").count(), 1, "{text}");
    }
}
