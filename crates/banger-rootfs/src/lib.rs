//! Writing safely into a directory tree banger does not trust: an image's
//! root filesystem, a layer staging directory, a user's checkout.
//!
//! Every path is resolved by the kernel with `openat2(2)` relative to a
//! descriptor of the tree's top directory ([`Root`]), confined to it
//! ([`Resolve`]): either *in root* (`RESOLVE_IN_ROOT`, the guest's view —
//! an absolute symlink target starts again at the root and `..` stops at
//! it) or *beneath* (`RESOLVE_BENEATH`, anything that would leave the root
//! is refused). Magic links (`/proc/self/fd/…`) are never followed, and a
//! concurrent rename (`EAGAIN`) is retried. A directory found that way is a
//! [`Dir`], whose entry operations are single-component `*at` calls that
//! never follow a symlink in that component: an entry is replaced, never
//! written through.
//!
//! Layout:
//! - [`resolve`]: [`Resolve`], the confinement flags, and [`resolve::open`],
//!   the one `openat2` call with its `EAGAIN` retries.
//! - [`root`]: [`Root`]; resolving directories and making the missing ones
//!   ([`Root::make_dirs`]), [`ResolveDirError`].
//! - [`dir`]: [`Dir`], operations on the entries of a resolved directory
//!   ([`Dir::make_room`], [`Dir::create_file`], [`Dir::symlink`],
//!   [`Dir::remove`], …).

pub mod dir;
pub mod resolve;
pub mod root;

pub use dir::{Dir, MakeRoomError, is_dir};
pub use resolve::Resolve;
pub use root::{Dangling, ResolveDirError, Root};
