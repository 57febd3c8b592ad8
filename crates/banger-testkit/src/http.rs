//! A tiny HTTP/1.1 server on 127.0.0.1 for tests (release downloads):
//! static bodies, redirects, error statuses, and bodies cut short.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What the server answers for a path.
#[derive(Debug, Clone)]
pub enum Route {
    /// `200 OK` with this body.
    Body(Vec<u8>),
    /// `302 Found` to this location.
    Redirect(String),
    /// This status with an empty body.
    Status(u16),
    /// Announces `declared` bytes, sends `body` (shorter), then closes: a
    /// download cut off mid-way.
    Cut { body: Vec<u8>, declared: usize },
}

/// Serves [`Route`]s until dropped; unknown paths are 404.
#[derive(Debug)]
pub struct StaticServer {
    addr: SocketAddr,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Default for StaticServer {
    fn default() -> Self {
        Self::new()
    }
}

impl StaticServer {
    pub fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the test HTTP server");
        let addr = listener.local_addr().unwrap();
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (routes, requests, stop) = (routes.clone(), requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let (routes, requests) = (routes.clone(), requests.clone());
                    std::thread::spawn(move || serve(stream, &routes, &requests));
                }
            })
        };
        Self {
            addr,
            routes,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets what `path` (starting with `/`) answers.
    pub fn route(&self, path: &str, route: Route) {
        self.routes.lock().unwrap().insert(path.to_owned(), route);
    }

    /// The paths requested so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(stream: TcpStream, routes: &Mutex<HashMap<String, Route>>, requests: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(stream) => stream,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Drain the headers.
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    requests.lock().unwrap().push(path.clone());
    let route = routes.lock().unwrap().get(&path).cloned();
    let mut stream = stream;
    let _ = match route {
        Some(Route::Body(body)) => respond(&mut stream, "200 OK", &[], &body, body.len()),
        Some(Route::Redirect(location)) => respond(
            &mut stream,
            "302 Found",
            &[("Location", location.as_str())],
            b"",
            0,
        ),
        Some(Route::Status(code)) => respond(&mut stream, &format!("{code} Status"), &[], b"", 0),
        Some(Route::Cut { body, declared }) => respond(&mut stream, "200 OK", &[], &body, declared),
        None => respond(&mut stream, "404 Not Found", &[], b"", 0),
    };
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    content_length: usize,
) -> std::io::Result<()> {
    let mut head =
        format!("HTTP/1.1 {status}\r\nContent-Length: {content_length}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}
