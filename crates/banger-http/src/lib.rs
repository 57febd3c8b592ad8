//! banger's one HTTP(S) transport, shared by the registry client, catalog
//! downloads and `banger update`: hyper's pooled client with rustls (ring) and the system's
//! trusted roots, redirects followed by hand so every hop is checked
//! against the [`TransportPolicy`], and timeouts on headers and on stalls.
//!
//! Plain http is allowed only to loopback hosts (`localhost`, `127.0.0.0/8`,
//! `::1`) and to hosts the policy lists explicitly; everything else must be
//! https.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
pub use hyper::header::HeaderMap;
use hyper::header::{AUTHORIZATION, HeaderValue, LOCATION, USER_AGENT};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const MAX_REDIRECTS: usize = 10;

/// Which hosts may be reached over plain http.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportPolicy {
    /// `host` or `host:port` entries allowed over plain http in addition to
    /// loopback hosts (config or tests).
    pub insecure_hosts: Vec<String>,
}

impl TransportPolicy {
    /// Whether `authority` (`host[:port]`, IPv6 in brackets) may use http.
    pub fn allows_plain_http(&self, authority: &str) -> bool {
        let host = host_of(authority);
        is_loopback(host)
            || self.insecure_hosts.iter().any(|entry| {
                entry.eq_ignore_ascii_case(authority) || entry.eq_ignore_ascii_case(host)
            })
    }

    /// The scheme banger uses for a registry at `authority`.
    pub fn scheme_for(&self, authority: &str) -> &'static str {
        if self.allows_plain_http(authority) {
            "http"
        } else {
            "https"
        }
    }
}

/// The host part of `host[:port]` / `[v6]:port`, without brackets.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.split(':').next().unwrap_or(authority)
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// Timeouts for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// From request sent to response headers.
    pub headers: Duration,
    /// Longest wait for the next chunk of a body.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(30),
            headers: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid User-Agent {value:?}")]
    UserAgent { value: String },
    #[error("invalid URL {url:?}")]
    Url {
        url: String,
        #[source]
        source: hyper::http::uri::InvalidUri,
    },
    #[error("URL {url} is neither http nor https")]
    Scheme { url: String },
    #[error(
        "refusing plain http to {url}: only loopback hosts, or hosts listed as insecure, may be reached without TLS"
    )]
    Insecure { url: String },
    #[error("request to {url} failed")]
    Request {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("no answer from {url} within {seconds}s")]
    Timeout { url: String, seconds: u64 },
    #[error("too many redirects starting at {url}")]
    Redirects { url: String },
    #[error("reading the response from {url} failed")]
    Body {
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("the response from {url} stalled for {seconds}s")]
    Stalled { url: String, seconds: u64 },
    #[error("the response from {url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("{url} answered {status}{detail}")]
    Status {
        url: String,
        status: StatusCode,
        /// Empty, or `: <what the server said>`.
        detail: String,
    },
    #[error("cannot set up TLS")]
    Tls(#[source] std::io::Error),
}

impl HttpError {
    /// Whether trying again may help (connection trouble, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Request { .. }
            | Self::Timeout { .. }
            | Self::Body { .. }
            | Self::Stalled { .. } => true,
            Self::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

/// A pooled HTTP(S) client. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    policy: Arc<TransportPolicy>,
    timeouts: Timeouts,
    user_agent: HeaderValue,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("policy", &self.policy)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// A response whose redirects were followed.
#[derive(Debug)]
pub struct HttpResponse {
    /// The URL that finally answered.
    pub url: String,
    pub response: Response<Incoming>,
}

impl HttpClient {
    /// A client trusting the system's CA certificates. Hosts without any
    /// readable CA store still get a client; https then fails with a
    /// certificate error naming the host.
    pub fn new(policy: TransportPolicy, timeouts: Timeouts) -> Result<Self, HttpError> {
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        connector.set_connect_timeout(Some(timeouts.connect));
        connector.set_nodelay(true);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
        {
            Ok(builder) => builder,
            Err(err) => {
                tracing::warn!(error = %err, "no system CA certificates found; https downloads will fail");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|err| HttpError::Tls(std::io::Error::other(err)))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let https = builder
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Self {
            client,
            policy: Arc::new(policy),
            timeouts,
            user_agent: HeaderValue::from_static(concat!("banger/", env!("CARGO_PKG_VERSION"))),
        })
    }

    /// The same client sending `user_agent` instead of `banger/VERSION`.
    pub fn with_user_agent(mut self, user_agent: &str) -> Result<Self, HttpError> {
        self.user_agent = HeaderValue::from_str(user_agent).map_err(|_| HttpError::UserAgent {
            value: user_agent.to_owned(),
        })?;
        Ok(self)
    }

    pub fn policy(&self) -> &TransportPolicy {
        &self.policy
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Parses `url` and checks it against the policy.
    pub fn check_url(&self, url: &str) -> Result<Uri, HttpError> {
        let uri: Uri = url.parse().map_err(|source| HttpError::Url {
            url: url.to_owned(),
            source,
        })?;
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        match uri.scheme_str() {
            Some("https") if !authority.is_empty() => Ok(uri),
            Some("http") if !authority.is_empty() => {
                if self.policy.allows_plain_http(authority) {
                    Ok(uri)
                } else {
                    Err(HttpError::Insecure {
                        url: url.to_owned(),
                    })
                }
            }
            _ => Err(HttpError::Scheme {
                url: url.to_owned(),
            }),
        }
    }

    /// GET `url`, following redirects (each hop checked against the
    /// policy; `Authorization` dropped when the host changes). Any final
    /// status is returned; callers decide what is an error.
    pub async fn get(&self, url: &str, headers: &HeaderMap) -> Result<HttpResponse, HttpError> {
        let mut current = url.to_owned();
        let mut headers = headers.clone();
        let origin = self.check_url(url)?.authority().cloned();
        for _ in 0..=MAX_REDIRECTS {
            let uri = self.check_url(&current)?;
            if uri.authority().cloned() != origin {
                headers.remove(AUTHORIZATION);
            }
            let mut request = Request::get(uri.clone())
                .body(Empty::new())
                .expect("a GET with a checked URI is a valid request");
            *request.headers_mut() = headers.clone();
            request
                .headers_mut()
                .insert(USER_AGENT, self.user_agent.clone());
            let response =
                match tokio::time::timeout(self.timeouts.headers, self.client.request(request))
                    .await
                {
                    Ok(Ok(response)) => response,
                    Ok(Err(source)) => {
                        return Err(HttpError::Request {
                            url: current,
                            source,
                        });
                    }
                    Err(_) => {
                        return Err(HttpError::Timeout {
                            url: current,
                            seconds: self.timeouts.headers.as_secs(),
                        });
                    }
                };
            let redirect = matches!(
                response.status(),
                StatusCode::MOVED_PERMANENTLY
                    | StatusCode::FOUND
                    | StatusCode::SEE_OTHER
                    | StatusCode::TEMPORARY_REDIRECT
                    | StatusCode::PERMANENT_REDIRECT
            );
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            match (redirect, location) {
                (true, Some(location)) => {
                    tracing::debug!(from = %current, to = %location, "following redirect");
                    current = resolve_location(&uri, &location);
                }
                _ => {
                    return Ok(HttpResponse {
                        url: current,
                        response,
                    });
                }
            }
        }
        Err(HttpError::Redirects {
            url: url.to_owned(),
        })
    }

    /// The next chunk of `body`, `None` at the end; fails when the body
    /// stalls longer than the idle timeout.
    pub async fn next_chunk(
        &self,
        url: &str,
        body: &mut Incoming,
    ) -> Result<Option<Bytes>, HttpError> {
        loop {
            let frame = match tokio::time::timeout(self.timeouts.idle, body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(source))) => {
                    return Err(HttpError::Body {
                        url: url.to_owned(),
                        source,
                    });
                }
                Ok(None) => return Ok(None),
                Err(_) => {
                    return Err(HttpError::Stalled {
                        url: url.to_owned(),
                        seconds: self.timeouts.idle.as_secs(),
                    });
                }
            };
            if let Ok(data) = frame.into_data() {
                return Ok(Some(data));
            }
        }
    }

    /// Reads a whole body of at most `limit` bytes.
    pub async fn read_body(
        &self,
        url: &str,
        body: &mut Incoming,
        limit: u64,
    ) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk(url, body).await? {
            if out.len() as u64 + chunk.len() as u64 > limit {
                return Err(HttpError::TooLarge {
                    url: url.to_owned(),
                    limit,
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// GET `url` and read a body of at most `limit` bytes; non-2xx is an
    /// error carrying the start of what the server said.
    pub async fn get_bytes(
        &self,
        url: &str,
        headers: &HeaderMap,
        limit: u64,
    ) -> Result<Vec<u8>, HttpError> {
        let HttpResponse { url, mut response } = self.get(url, headers).await?;
        if !response.status().is_success() {
            return Err(self.status_error(&url, &mut response).await);
        }
        self.read_body(&url, response.body_mut(), limit).await
    }

    /// A [`HttpError::Status`] carrying the first line of the body.
    pub async fn status_error(&self, url: &str, response: &mut Response<Incoming>) -> HttpError {
        let status = response.status();
        let body = self
            .read_body(url, response.body_mut(), 64 * 1024)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        let line = text.lines().next().unwrap_or("").trim();
        let detail = if line.is_empty() {
            String::new()
        } else {
            let mut line = line.to_owned();
            if line.len() > 300 {
                let mut end = 300;
                while !line.is_char_boundary(end) {
                    end -= 1;
                }
                line.truncate(end);
            }
            format!(": {line}")
        };
        HttpError::Status {
            url: url.to_owned(),
            status,
            detail,
        }
    }
}

/// Resolves a `Location` header against the URL that sent it.
fn resolve_location(base: &Uri, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let scheme = base.scheme_str().unwrap_or("https");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}");
    }
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}");
    }
    let path = base.path();
    let dir = &path[..path.rfind('/').map_or(0, |at| at + 1)];
    format!("{scheme}://{authority}{dir}{location}")
}

/// Percent-encodes a query parameter value.
pub fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_and_listed_hosts() {
        let policy = TransportPolicy {
            insecure_hosts: vec!["registry.lan:5000".into(), "mirror.lan".into()],
        };
        for allowed in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "registry.lan:5000",
            "mirror.lan:8080",
        ] {
            assert!(policy.allows_plain_http(allowed), "{allowed}");
        }
        for refused in [
            "registry.lan:5001",
            "docker.io",
            "10.0.0.1:5000",
            "[::2]:5000",
            "localhost.evil.com",
        ] {
            assert!(!policy.allows_plain_http(refused), "{refused}");
        }
        assert_eq!(policy.scheme_for("127.0.0.1:5000"), "http");
        assert_eq!(policy.scheme_for("registry-1.docker.io"), "https");
    }

    #[tokio::test]
    async fn checks_urls_against_the_policy() {
        let client = HttpClient::new(TransportPolicy::default(), Timeouts::default()).unwrap();
        assert!(client.check_url("http://127.0.0.1:1/x").is_ok());
        assert!(client.check_url("https://example.com/x").is_ok());
        assert!(matches!(
            client.check_url("http://example.com/x"),
            Err(HttpError::Insecure { .. })
        ));
        assert!(matches!(
            client.check_url("ftp://example.com/x"),
            Err(HttpError::Scheme { .. })
        ));
        assert!(matches!(
            client.check_url("file:///etc/passwd"),
            Err(HttpError::Scheme { .. }) | Err(HttpError::Url { .. })
        ));
    }

    #[test]
    fn resolves_locations() {
        let base: Uri = "https://registry.example/v2/a/blobs/sha256:1"
            .parse()
            .unwrap();
        assert_eq!(
            resolve_location(&base, "https://cdn.example/x?sig=1"),
            "https://cdn.example/x?sig=1"
        );
        assert_eq!(
            resolve_location(&base, "/other/path"),
            "https://registry.example/other/path"
        );
        assert_eq!(
            resolve_location(&base, "//cdn.example/y"),
            "https://cdn.example/y"
        );
        assert_eq!(
            resolve_location(&base, "sibling"),
            "https://registry.example/v2/a/blobs/sibling"
        );
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(
            encode_query_value("repository:library/debian:pull"),
            "repository%3Alibrary%2Fdebian%3Apull"
        );
    }
}
