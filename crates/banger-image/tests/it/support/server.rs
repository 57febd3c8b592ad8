//! Tiny HTTP servers on 127.0.0.1 for tests: a forwarding proxy in front
//! of the registry that records requests and can cut a response mid-body
//! (a killed connection), and a static file server for catalogs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;
type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// One request the server saw.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) path: String,
    pub(crate) range: Option<String>,
    pub(crate) status: u16,
    pub(crate) bytes: Arc<AtomicU64>,
}

impl Seen {
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
}

/// Cut responses whose path contains `path_contains` after `after` body
/// bytes, for the next `times` such responses.
#[derive(Debug, Clone)]
pub(crate) struct Cut {
    pub(crate) path_contains: String,
    pub(crate) after: u64,
    pub(crate) times: usize,
    /// Hang instead of dropping the connection.
    pub(crate) stall: bool,
}

#[derive(Default)]
struct State {
    upstream: Option<String>,
    root: Option<PathBuf>,
    seen: Mutex<Vec<Seen>>,
    cut: Mutex<Option<Cut>>,
    /// Demand `Bearer <token>` on /v2/ and serve it anonymously at /token.
    token: Mutex<Option<String>>,
    /// Answer blob GETs with a redirect straight to the upstream.
    redirect_blobs: AtomicBool,
    own_addr: Mutex<String>,
}

pub(crate) struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// A proxy forwarding to `upstream` (`127.0.0.1:PORT`).
    pub(crate) async fn proxy(upstream: &str) -> Self {
        Self::start(State {
            upstream: Some(upstream.to_owned()),
            ..State::default()
        })
        .await
    }

    /// A static file server for `root`.
    pub(crate) async fn files(root: impl Into<PathBuf>) -> Self {
        Self::start(State {
            root: Some(root.into()),
            ..State::default()
        })
        .await
    }

    async fn start(state: State) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        *state.own_addr.lock().unwrap() = addr.to_string();
        let state = Arc::new(state);
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let client: Client<HttpConnector, Empty<Bytes>> =
                Client::builder(TokioExecutor::new()).build_http();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        let client = client.clone();
                        async move { Ok::<_, Infallible>(handle(&state, &client, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// `127.0.0.1:PORT`.
    pub(crate) fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub(crate) fn cut(&self, cut: Cut) {
        *self.state.cut.lock().unwrap() = Some(cut);
    }

    /// Require anonymous Bearer token auth, the way Docker Hub does.
    pub(crate) fn require_token(&self, token: &str) {
        *self.state.token.lock().unwrap() = Some(token.to_owned());
    }

    pub(crate) fn redirect_blobs(&self) {
        self.state.redirect_blobs.store(true, Ordering::SeqCst);
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub(crate) fn clear_seen(&self) {
        self.state.seen.lock().unwrap().clear();
    }
}

fn full(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(
            Full::new(Bytes::from_static(body.as_bytes()))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .unwrap()
}

async fn handle(
    state: &State,
    client: &Client<HttpConnector, Empty<Bytes>>,
    request: Request<Incoming>,
) -> Response<Body> {
    let path = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    let range = request
        .headers()
        .get("range")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let bytes = Arc::new(AtomicU64::new(0));
    let record = |status: u16| {
        state.seen.lock().unwrap().push(Seen {
            path: path.clone(),
            range: range.clone(),
            status,
            bytes: bytes.clone(),
        });
    };

    let token = state.token.lock().unwrap().clone();
    if let Some(token) = &token {
        if path.starts_with("/token") {
            record(200);
            let ok = path.contains("service=test-registry") && path.contains("scope=repository%3A");
            let body = if ok {
                format!("{{\"token\":\"{token}\",\"expires_in\":300}}")
            } else {
                "{}".to_owned()
            };
            return Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(
                    Full::new(Bytes::from(body))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )
                .unwrap();
        }
        let authorized = request
            .headers()
            .get("authorization")
            .is_some_and(|value| value.as_bytes() == format!("Bearer {token}").as_bytes());
        if path.starts_with("/v2/") && !authorized {
            record(401);
            let own = state.own_addr.lock().unwrap().clone();
            let repo = path
                .trim_start_matches("/v2/")
                .split("/manifests/")
                .next()
                .unwrap_or("")
                .split("/blobs/")
                .next()
                .unwrap_or("")
                .to_owned();
            return Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header(
                    "www-authenticate",
                    format!("Bearer realm=\"http://{own}/token\",service=\"test-registry\",scope=\"repository:{repo}:pull\""),
                )
                .body(Full::new(Bytes::from_static(b"{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}")).map_err(|never| match never {}).boxed_unsync())
                .unwrap();
        }
    }
    if state.redirect_blobs.load(Ordering::SeqCst)
        && path.contains("/blobs/sha256:")
        && let Some(upstream) = &state.upstream
    {
        record(307);
        return Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header("location", format!("http://{upstream}{path}"))
            .body(
                Full::new(Bytes::new())
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap();
    }

    let (status, headers, body): (StatusCode, hyper::HeaderMap, ByteStream) =
        if let Some(upstream) = &state.upstream {
            let mut forward = Request::builder()
                .method(request.method())
                .uri(format!("http://{upstream}{path}"));
            for (name, value) in request.headers() {
                if name != "host" {
                    forward = forward.header(name, value);
                }
            }
            let Ok(response) = client.request(forward.body(Empty::new()).unwrap()).await else {
                record(502);
                return full(StatusCode::BAD_GATEWAY, "upstream failed");
            };
            let status = response.status();
            let headers = response.headers().clone();
            let stream = response
                .into_body()
                .into_data_stream()
                .map(|chunk| chunk.map_err(std::io::Error::other));
            (status, headers, Box::pin(stream))
        } else {
            let root = state.root.as_ref().expect("a file server has a root");
            let name = path.trim_start_matches('/');
            match std::fs::read(root.join(name)) {
                Ok(data) if !name.contains("..") => {
                    let mut headers = hyper::HeaderMap::new();
                    headers.insert("content-length", data.len().into());
                    (
                        StatusCode::OK,
                        headers,
                        Box::pin(futures::stream::iter([Ok(Bytes::from(data))])),
                    )
                }
                _ => {
                    record(404);
                    return full(StatusCode::NOT_FOUND, "not found");
                }
            }
        };
    record(status.as_u16());

    let cut = {
        let mut guard = state.cut.lock().unwrap();
        match guard.as_mut() {
            Some(cut)
                if cut.times > 0 && path.contains(&cut.path_contains) && status.is_success() =>
            {
                cut.times -= 1;
                Some((cut.after, cut.stall))
            }
            _ => None,
        }
    };
    // Data up to the cut point, a pause so it reaches the client, then an
    // error, which makes hyper drop the connection mid-body.
    let stream = futures::stream::unfold(
        (body, bytes.clone(), 0u64, false),
        move |(mut body, counter, mut sent, done)| async move {
            if done {
                return None;
            }
            if let Some((limit, stall)) = cut
                && sent >= limit
            {
                let pause = if stall { 3_600_000 } else { 100 };
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                let err = std::io::Error::other("connection cut by test");
                return Some((Err(err), (body, counter, sent, true)));
            }
            match body.next().await {
                Some(Ok(mut data)) => {
                    if let Some((limit, _)) = cut
                        && sent + data.len() as u64 > limit
                    {
                        data.truncate((limit - sent) as usize);
                    }
                    sent += data.len() as u64;
                    counter.fetch_add(data.len() as u64, Ordering::SeqCst);
                    Some((Ok(Frame::data(data)), (body, counter, sent, false)))
                }
                Some(Err(err)) => Some((Err(err), (body, counter, sent, true))),
                None => None,
            }
        },
    );
    let mut response = Response::builder().status(status);
    for (name, value) in &headers {
        response = response.header(name, value);
    }
    response
        .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
        .unwrap()
}
