//! simvm's own log, with Firecracker's knobs: `--log-path`/`--level` at
//! start-up and `PUT /logger` later. Without a log path it goes to stderr;
//! the guest's console is stdout.

use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use banger_firecracker::api::{LogLevel, Logger};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, reload};

use crate::controller::open_nonblock;

type Target = Arc<Mutex<Option<std::fs::File>>>;

/// Changes where and how much simvm logs.
#[derive(Clone)]
pub struct LogControl {
    target: Target,
    level: Option<reload::Handle<LevelFilter, Registry>>,
}

impl fmt::Debug for LogControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogControl")
            .field("to_file", &self.target.lock().map(|t| t.is_some()).ok())
            .finish_non_exhaustive()
    }
}

fn filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Off => LevelFilter::OFF,
        LogLevel::Trace => LevelFilter::TRACE,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warning => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    }
}

impl LogControl {
    /// Installs the global subscriber.
    pub fn init(path: Option<&Path>, level: Option<LogLevel>) -> io::Result<Self> {
        let target: Target = Arc::default();
        if let Some(path) = path {
            *target.lock().unwrap_or_else(|e| e.into_inner()) = Some(open_nonblock(path)?);
        }
        let (level_layer, handle) = reload::Layer::new(filter(level.unwrap_or(LogLevel::Info)));
        let writer = LogWriter {
            target: target.clone(),
        };
        tracing_subscriber::registry()
            .with(level_layer)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(false)
                    .with_target(false),
            )
            .try_init()
            .map_err(io::Error::other)?;
        Ok(Self {
            target,
            level: Some(handle),
        })
    }

    /// A control that changes nothing global (for tests).
    pub fn detached() -> Self {
        Self {
            target: Arc::default(),
            level: None,
        }
    }

    /// Applies a `PUT /logger` body. Fails only when the log path cannot be
    /// opened, like Firecracker.
    pub fn apply(&self, logger: &Logger) -> io::Result<()> {
        let file = logger.log_path.as_deref().map(open_nonblock).transpose()?;
        if let Some(file) = file {
            *self.target.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
        }
        if let Some(handle) = &self.level {
            let level = filter(logger.level.unwrap_or(LogLevel::Info));
            handle.modify(|f| *f = level).map_err(io::Error::other)?;
        }
        Ok(())
    }
}

#[derive(Clone)]
struct LogWriter {
    target: Target,
}

/// Writes one formatted event to the log file, or stderr.
struct EventWriter {
    target: Target,
}

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut guard = self.target.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(file) => file.write(buf),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            target: self.target.clone(),
        }
    }
}
