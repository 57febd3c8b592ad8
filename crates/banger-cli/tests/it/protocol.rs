//! Raw frames against a real daemon: hostile input never stops it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use banger_testkit::TestEnv;
use serde_json::{Value, json};

fn started() -> TestEnv {
    let env = TestEnv::new();
    env.banger(["daemon", "start"]).assert_success();
    env
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    fn open(env: &TestEnv) -> Self {
        let stream = UnixStream::connect(env.layout.socket()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Self {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    fn send(&mut self, frame: Value) {
        let mut line = serde_json::to_vec(&frame).unwrap();
        line.push(b'\n');
        self.send_raw(&line);
    }

    fn recv(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|err| panic!("bad frame {line:?}: {err}"))
    }

    /// Reads until the final frame for `id`, returning (events, final).
    fn finish(&mut self, id: u64) -> (Vec<Value>, Value) {
        let mut events = Vec::new();
        loop {
            let frame = self.recv();
            assert_eq!(frame["id"], id, "{frame}");
            if frame.get("event").is_some() {
                events.push(frame);
            } else {
                return (events, frame);
            }
        }
    }

    fn ping_works(&mut self, id: u64) {
        self.send(json!({"v": 1, "id": id, "method": "daemon.ping"}));
        let (_, frame) = self.finish(id);
        assert!(frame["result"]["pid"].is_u64(), "{frame}");
    }
}

#[test]
fn malformed_json_gets_an_error_and_the_connection_keeps_working() {
    let env = started();
    let mut conn = Conn::open(&env);
    conn.send_raw(b"{this is not json\n");
    let frame = conn.recv();
    assert_eq!(frame["error"]["code"], "malformed_frame", "{frame}");
    assert!(frame.get("id").is_none());
    conn.send(json!({"v": 1, "id": 5, "hello": "world"}));
    let frame = conn.recv();
    assert_eq!(frame["error"]["code"], "malformed_frame", "{frame}");
    assert_eq!(frame["id"], 5);
    conn.ping_works(6);
}

#[test]
fn oversized_frames_are_refused_without_killing_the_daemon() {
    let env = started();
    let mut conn = Conn::open(&env);
    let mut huge = b"{\"v\":1,\"id\":1,\"method\":\"daemon.ping\",\"params\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 3 << 20));
    huge.extend_from_slice(b"\"}\n");
    conn.send_raw(&huge);
    let frame = conn.recv();
    assert_eq!(frame["error"]["code"], "frame_too_large", "{frame}");
    conn.ping_works(2);
    // Other clients are served too.
    env.banger(["vm", "list"]).assert_success();
}

#[test]
fn unknown_methods_bad_params_and_versions_are_refused_by_code() {
    let env = started();
    let mut conn = Conn::open(&env);
    conn.send(json!({"v": 1, "id": 1, "method": "vm.teleport"}));
    assert_eq!(conn.finish(1).1["error"]["code"], "unknown_method");
    conn.send(json!({"v": 1, "id": 2, "method": "vm.show", "params": {"ref": 1}}));
    assert_eq!(conn.finish(2).1["error"]["code"], "invalid_params");
    conn.send(json!({"v": 2, "id": 3, "method": "daemon.ping"}));
    let frame = conn.finish(3).1;
    assert_eq!(frame["error"]["code"], "protocol_mismatch");
    assert!(frame["error"]["hint"].is_string(), "{frame}");
    conn.send(json!({"v": 1, "id": 4, "method": "vm.show", "params": {"reference": "ghost"}}));
    assert_eq!(conn.finish(4).1["error"]["code"], "not_found");
    conn.ping_works(5);
}

#[test]
fn long_requests_stream_events() {
    let env = started();
    let mut conn = Conn::open(&env);
    conn.send(json!({"v": 1, "id": 9, "method": "daemon.sleep", "params": {"millis": 300, "tick_millis": 50}}));
    let (events, done) = conn.finish(9);
    assert!(
        events.len() >= 3,
        "expected progress events, got {events:?}"
    );
    assert_eq!(events[0]["event"]["type"], "progress");
    assert!(
        done["result"]["slept_ms"].as_u64().unwrap() >= 300,
        "{done}"
    );
}

#[test]
fn client_disconnect_cancels_its_request() {
    let env = started();
    let mut conn = Conn::open(&env);
    conn.send(json!({"v": 1, "id": 1, "method": "daemon.sleep", "params": {"millis": 600_000, "tick_millis": 50}}));
    let first = conn.recv();
    assert_eq!(first["event"]["type"], "progress", "{first}");
    drop(conn);

    // The sleep would last ten minutes; it must be cancelled instead.
    env.wait_for(
        "the sleep request to be cancelled",
        Duration::from_secs(10),
        || env.daemon_log().contains("request cancelled"),
    );
    let out = env.banger(["daemon", "status", "--json"]);
    let status: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        status["active_requests"], 1,
        "only the status request should be running: {status}"
    );
    assert!(env.daemon_log().contains("daemon.sleep"));
}

#[test]
fn other_users_are_refused_by_peer_credentials() {
    if !banger_testkit::root_or_skip(
        "other_users_are_refused_by_peer_credentials",
        "acting as another uid",
    ) {
        return;
    }
    let env = started();
    // Open the filesystem permissions so that only the SO_PEERCRED check stands.
    let open = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    open(env.root(), 0o755);
    open(env.layout.runtime_dir.parent().unwrap(), 0o755);
    open(&env.layout.runtime_dir, 0o755);
    open(&env.layout.socket(), 0o666);

    let mut command = env.command("banger");
    command.args(["daemon", "status"]).uid(65534).gid(65534);
    let out = banger_testkit::env::run(command);
    assert_eq!(out.code, Some(1), "{out}");
    // Whose daemon this is, who asked, and what to do.
    assert!(
        out.stderr
            .contains("this banger daemon belongs to root (uid 0); you are nobody (uid 65534)"),
        "{out}"
    );
    assert!(
        out.stderr.contains("`sudo -u root banger daemon stop`"),
        "{out}"
    );
    // The daemon's own user is still served.
    env.banger(["vm", "list"]).assert_success();
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A client that writes requests without ever reading the answers: the
/// daemon stops reading it once its answers back up, so its memory stays
/// bounded, and it returns the memory when the client goes.
#[test]
fn a_client_that_pipelines_without_reading_holds_bounded_memory() {
    let env = started();
    let pid = env.daemon_pid().expect("daemon running");
    let before = rss_kib(pid);
    let stream = UnixStream::connect(env.layout.socket()).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut batch = Vec::new();
    for id in 0..1000 {
        batch.extend_from_slice(
            format!("{{\"v\":1,\"id\":{id},\"method\":\"daemon.ping\"}}\n").as_bytes(),
        );
    }
    let (mut sent, mut peak) = (0u64, before);
    let mut writer = &stream;
    while sent < 400_000 {
        if writer.write_all(&batch).is_err() {
            break; // the daemon stopped reading: backpressure
        }
        sent += 1000;
        peak = peak.max(rss_kib(pid));
    }
    peak = peak.max(rss_kib(pid));
    drop(stream);
    let mut after = rss_kib(pid);
    for _ in 0..50 {
        if after <= before + 4 * 1024 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        after = rss_kib(pid);
    }
    println!(
        "pipelining client: ~{sent} requests written before backpressure; daemon RSS {} MiB before, {} MiB peak, {} MiB after it left",
        before / 1024,
        peak / 1024,
        after / 1024
    );
    assert!(
        sent < 400_000,
        "the daemon read everything: no backpressure"
    );
    assert!(
        peak < before + 48 * 1024,
        "peak {peak} KiB from {before} KiB"
    );
    assert!(
        after < before + 16 * 1024,
        "{after} KiB after, {before} KiB before"
    );
    Conn::open(&env).ping_works(1);
}

/// A streaming request whose events are never read does not hold the
/// daemon at shutdown: `daemon stop` returns within the drain window.
#[test]
fn a_client_that_reads_nothing_cannot_hold_shutdown() {
    let env = started();
    let stream = UnixStream::connect(env.layout.socket()).unwrap();
    let mut writer = &stream;
    writer
        .write_all(
            b"{\"v\":1,\"id\":1,\"method\":\"daemon.sleep\",\"params\":{\"millis\":600000,\"tick_millis\":1}}\n",
        )
        .unwrap();
    // Let the unread events fill the socket and the daemon's queue.
    std::thread::sleep(Duration::from_secs(1));
    let started = std::time::Instant::now();
    let out = env.banger(["daemon", "stop"]);
    let took = started.elapsed();
    println!("daemon stop with an unread streaming request took {took:?}");
    out.assert_success();
    // The drain window is 30 s (`bangerd::server::DRAIN`).
    assert!(took < Duration::from_secs(35), "took {took:?}");
    assert_eq!(env.daemon_pid(), None);
    drop(stream);
}
