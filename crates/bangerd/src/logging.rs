//! JSON logs to the daemon's log file. The level comes from `log_level` in
//! config; `BANGER_LOG` (an `EnvFilter` directive such as `debug` or
//! `bangerd=trace`) overrides it.

use std::path::Path;
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

pub fn init(path: &Path, level: LogLevel) -> Result<(), InitLoggingError> {
    if let Some(dir) = path.parent() {
        let _ = fs_err::create_dir_all(dir);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| InitLoggingError::Open {
            path: path.display().to_string(),
            source,
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
