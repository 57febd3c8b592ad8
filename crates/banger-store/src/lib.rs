//! banger's persistent state in SQLite: kernels, images and VMs.
//!
//! Every connection gets WAL journaling, a busy timeout and foreign keys
//! ([`open_connection`]); the schema is versioned with `rusqlite_migration`
//! (`PRAGMA user_version`). Foreign keys enforce that an image in use by a VM,
//! or a kernel in use by an image, cannot be deleted.
//!
//! Layout:
//! - [`schema`]: the migrations.
//! - [`kernels`], [`images`], [`vms`]: one repository module per table.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

pub mod images;
pub mod kernels;
pub mod schema;
pub mod vms;

pub use banger_model::resolve::{ResolveError, resolve};

/// How long a statement waits for a lock held by another connection.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum OpenStoreError {
    #[error("creating {path}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening database {path}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("migrating database {path}")]
    Migrate {
        path: String,
        #[source]
        source: rusqlite_migration::Error,
    },
}

/// A store error from a query.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} named {name:?} already exists")]
    NameTaken { kind: &'static str, name: String },
    #[error("{what}")]
    Conflict { what: String },
    #[error("no {kind} with id {id}")]
    Missing { kind: &'static str, id: String },
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("database query failed")]
    Sql(#[from] rusqlite::Error),
}

impl StoreError {
    /// Whether the database could not be written because its filesystem
    /// (or the user's quota) is full (SQLite's unix layer reports ENOSPC
    /// as `SQLITE_FULL`).
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            Self::Sql(rusqlite::Error::SqliteFailure(err, _))
                if err.code == rusqlite::ErrorCode::DiskFull
        )
    }
}

/// Applies the per-connection settings every banger connection needs.
pub fn open_connection(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    configure(&conn)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// The store: one connection, serialised by a mutex. Every query is a few
/// microseconds on tables this small, so callers hold the lock only briefly.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, OpenStoreError> {
        if let Some(dir) = path.parent() {
            fs_err::create_dir_all(dir).map_err(|source| OpenStoreError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let display = path.display().to_string();
        let mut conn = open_connection(path).map_err(|source| OpenStoreError::Open {
            path: display.clone(),
            source,
        })?;
        schema::migrations()
            .to_latest(&mut conn)
            .map_err(|source| OpenStoreError::Migrate {
                path: display,
                source,
            })?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// An in-memory store for tests.
    pub fn open_in_memory() -> Result<Self, OpenStoreError> {
        let mut conn = Connection::open_in_memory().map_err(|source| OpenStoreError::Open {
            path: ":memory:".into(),
            source,
        })?;
        configure(&conn).map_err(|source| OpenStoreError::Open {
            path: ":memory:".into(),
            source,
        })?;
        schema::migrations()
            .to_latest(&mut conn)
            .map_err(|source| OpenStoreError::Migrate {
                path: ":memory:".into(),
                source,
            })?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// Test hook: makes every write fail (`PRAGMA query_only`), as a full
    /// disk would, or lets writes through again.
    #[doc(hidden)]
    pub fn refuse_writes(&self, refuse: bool) -> Result<(), StoreError> {
        self.conn().pragma_update(None, "query_only", refuse)?;
        Ok(())
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (statements are atomic), so a poisoned lock is still usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub(crate) fn to_millis(ts: jiff::Timestamp) -> i64 {
    ts.as_millisecond()
}

pub(crate) fn from_millis(what: &'static str, ms: i64) -> Result<jiff::Timestamp, StoreError> {
    jiff::Timestamp::from_millisecond(ms).map_err(|err| StoreError::Corrupt {
        what,
        detail: err.to_string(),
    })
}

/// Maps a UNIQUE violation on `name` to [`StoreError::NameTaken`].
pub(crate) fn map_unique(err: rusqlite::Error, kind: &'static str, name: &str) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, Some(message)) = &err
        && failure.code == rusqlite::ErrorCode::ConstraintViolation
        && message.contains(".name")
    {
        return StoreError::NameTaken {
            kind,
            name: name.to_owned(),
        };
    }
    StoreError::Sql(err)
}

pub(crate) fn is_foreign_key_violation(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(failure, Some(message))
        if failure.code == rusqlite::ErrorCode::ConstraintViolation && message.contains("FOREIGN KEY"))
}
