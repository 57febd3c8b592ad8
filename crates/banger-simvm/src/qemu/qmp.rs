//! A small QMP client: one connection per command (QEMU's QMP server takes
//! the next client once the previous one hung up), blocking with timeouts,
//! because the callers ([`crate::controller::Guest`]'s methods) are
//! synchronous and QMP on a local socket answers in milliseconds.
//!
//! The protocol: QEMU greets with `{"QMP": …}`, the client enters command
//! mode with `qmp_capabilities`, then each command gets `{"return": …}` or
//! `{"error": {"class": …, "desc": …}}`; asynchronous `{"event": …}` lines
//! may come in between and are skipped.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

/// Bound on one read or write on the socket.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("could not reach qemu's control socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talking to qemu failed")]
    Io(#[from] io::Error),
    #[error("qemu sent something that is not QMP: {0}")]
    Protocol(String),
    #[error("qemu refused {command}: {class}: {desc}")]
    Refused {
        command: String,
        class: String,
        desc: String,
    },
}

/// How long a command waits for a QEMU that is still starting (a loaded
/// host can take a while between spawning QEMU and its QMP listener).
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// Connects to the QMP socket, waiting up to [`CONNECT_WAIT`] while it is
/// not there yet or not yet listening.
fn connect(path: &Path) -> Result<UnixStream, QmpError> {
    let deadline = std::time::Instant::now() + CONNECT_WAIT;
    loop {
        match UnixStream::connect(path) {
            Ok(stream) => return Ok(stream),
            Err(source)
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(source) => {
                return Err(QmpError::Connect {
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
}

/// Runs one QMP command on the socket at `path` and returns its `return`.
pub fn execute(path: &Path, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
    let stream = connect(path)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut session = Session {
        reader: BufReader::new(stream.try_clone()?),
        writer: stream,
    };
    let greeting = session.next_message()?;
    if greeting.get("QMP").is_none() {
        return Err(QmpError::Protocol(greeting.to_string()));
    }
    session.call("qmp_capabilities", None)?;
    session.call(command, arguments)
}

struct Session {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Session {
    fn next_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(QmpError::Protocol("connection closed".into()));
        }
        serde_json::from_str(&line).map_err(|_| QmpError::Protocol(line.trim().to_owned()))
    }

    fn call(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut text = request.to_string();
        text.push('\n');
        self.writer.write_all(text.as_bytes())?;
        loop {
            let message = self.next_message()?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                let field = |name: &str| {
                    error
                        .get(name)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                return Err(QmpError::Refused {
                    command: command.to_owned(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            if message.get("event").is_none() {
                return Err(QmpError::Protocol(message.to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// A scripted QMP server: greets, then answers each line it reads with
    /// the next canned reply and records what it was sent.
    fn serve(
        listener: UnixListener,
        replies: Vec<&'static str>,
    ) -> std::thread::JoinHandle<Vec<String>> {
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            writer
                .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .unwrap();
            let mut seen = Vec::new();
            for reply in replies {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                seen.push(line.trim().to_owned());
                writer.write_all(reply.as_bytes()).unwrap();
            }
            seen
        })
    }

    #[test]
    fn negotiates_then_runs_the_command_skipping_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let server = serve(
            UnixListener::bind(&path).unwrap(),
            vec![
                "{\"return\": {}}\n",
                "{\"event\": \"STOP\", \"timestamp\": {}}\n{\"return\": {}}\n",
            ],
        );
        let value = execute(&path, "stop", None).unwrap();
        assert_eq!(value, json!({}));
        let seen = server.join().unwrap();
        assert_eq!(
            seen,
            vec![r#"{"execute":"qmp_capabilities"}"#, r#"{"execute":"stop"}"#]
        );
    }

    #[test]
    fn errors_carry_class_and_description() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let server = serve(
            UnixListener::bind(&path).unwrap(),
            vec![
                "{\"return\": {}}\n",
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n",
            ],
        );
        let err = execute(&path, "send-key", Some(json!({"keys": []}))).unwrap_err();
        assert_eq!(err.to_string(), "qemu refused send-key: GenericError: nope");
        let seen = server.join().unwrap();
        assert_eq!(seen[1], r#"{"arguments":{"keys":[]},"execute":"send-key"}"#);
    }

    #[test]
    fn a_missing_socket_names_the_path() {
        let err = execute(Path::new("/nonexistent/qmp.sock"), "cont", None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/qmp.sock"), "{err}");
    }
}
