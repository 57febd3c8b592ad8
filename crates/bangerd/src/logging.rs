//! JSON logs to the daemon's log file. The level comes from `log_level` in
//! config; `BANGER_LOG` (an `EnvFilter` directive such as `debug` or
//! `bangerd=trace`) overrides it. The file is rotated by size: past
//! [`MAX_LOG_BYTES`] it becomes `bangerd.log.1` (older ones shift up to
//! `.3`, the oldest is dropped).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use banger_model::config::LogLevel;
use tracing_subscriber::EnvFilter;

#[derive(Debug, thiserror::Error)]
pub enum InitLoggingError {
    #[error("opening log file {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("BANGER_LOG is not a valid filter: {0}")]
    Filter(String),
}

/// Size at which the log is rotated.
pub const MAX_LOG_BYTES: u64 = 16 << 20;
/// Rotated logs kept beside the current one.
pub const KEPT_LOGS: usize = 3;

pub fn init(path: &Path, level: LogLevel) -> Result<(), InitLoggingError> {
    if let Some(dir) = path.parent() {
        let _ = fs_err::create_dir_all(dir);
    }
    let file = RotatingFile::open(path, MAX_LOG_BYTES, KEPT_LOGS).map_err(|source| {
        InitLoggingError::Open {
            path: path.display().to_string(),
            source,
        }
    })?;
    let filter = match std::env::var("BANGER_LOG") {
        Ok(directive) if !directive.is_empty() => EnvFilter::try_new(&directive)
            .map_err(|err| InitLoggingError::Filter(err.to_string()))?,
        _ => EnvFilter::new(level.as_str()),
    };
    // A second init (tests running several daemons in one process) keeps the first.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_writer(Mutex::new(file))
        .try_init();
    Ok(())
}

/// An append-only file that rotates itself by size. Logging must never
/// fail the daemon: a rotation that cannot happen (a full disk) keeps
/// writing to the current file.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
    keep: usize,
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        let file = append(path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            written,
            max_bytes,
            keep,
        })
    }

    /// `log.N` → `log.N+1` (the last dropped), `log` → `log.1`, new `log`.
    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |n: usize| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        for n in (1..self.keep).rev() {
            match std::fs::rename(numbered(n), numbered(n + 1)) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                _ => {}
            }
        }
        if self.keep > 0 {
            std::fs::rename(&self.path, numbered(1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        self.file = append(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

fn append(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written > 0 && self.written + buf.len() as u64 > self.max_bytes {
            // Keep logging to the old file when rotating is impossible.
            let _ = self.rotate();
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_by_size_and_keeps_a_few_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bangerd.log");
        let mut log = RotatingFile::open(&path, 1000, 3).unwrap();
        let line = [b'x'; 99];
        for n in 0..100u8 {
            let mut record = line.to_vec();
            record[0] = n;
            record.push(b'\n');
            log.write_all(&record).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "bangerd.log",
                "bangerd.log.1",
                "bangerd.log.2",
                "bangerd.log.3"
            ]
        );
        let total: u64 = names
            .iter()
            .map(|name| std::fs::metadata(dir.path().join(name)).unwrap().len())
            .sum();
        assert!(total <= 4000, "{total} bytes kept");
        // The newest records are in the current file, whole lines only.
        let current = std::fs::read(&path).unwrap();
        assert_eq!(current.len() % 100, 0);
        assert_eq!(*current.last().unwrap(), b'\n');
        assert_eq!(current[current.len() - 100], 99);
        // Reopening continues the current file's size count.
        let reopened = RotatingFile::open(&path, 1000, 3).unwrap();
        assert_eq!(reopened.written, current.len() as u64);
    }
}
