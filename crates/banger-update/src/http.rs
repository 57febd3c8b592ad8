//! Downloads over HTTPS (rustls with ring and the system's trusted roots).
//! Plain http is allowed only to loopback hosts, which is what the test
//! suite's release server is; redirects are followed by hand so that every
//! hop obeys the same rule; bodies are capped and stalls time out.
//!
//! Integrity does not rest on TLS: the manifest is signed and pins every
//! binary's sha256. TLS keeps what is fetched private and on time.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{LOCATION, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const MAX_REDIRECTS: usize = 5;
/// Longest wait for response headers.
const HEADERS_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the next piece of a body.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("invalid URL {url:?}")]
    Url {
        url: String,
        #[source]
        source: hyper::http::uri::InvalidUri,
    },
    #[error("refusing {url}: only https, or http to a loopback host, is allowed")]
    Insecure { url: String },
    #[error("request to {url} failed")]
    Request {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{url} did not answer within {}s", HEADERS_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("too many redirects from {url}")]
    Redirects { url: String },
    #[error("reading {url} failed (truncated download?)")]
    Body {
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{url} stalled for {}s", STALL_TIMEOUT.as_secs())]
    Stalled { url: String },
    #[error("{url} is larger than the {limit} bytes expected")]
    TooLarge { url: String, limit: u64 },
    #[error("cannot set up TLS")]
    Tls(#[source] std::io::Error),
}

/// A pooled HTTP(S) client.
#[derive(Debug, Clone)]
pub struct Downloader {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    user_agent: String,
}

impl Downloader {
    pub fn new(user_agent: impl Into<String>) -> Result<Self, DownloadError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_provider_and_native_roots(provider.clone()) {
            Ok(builder) => builder,
            Err(err) => {
                // No system roots: https fails with a certificate error that
                // names the host, plain loopback http still works.
                tracing::warn!(error = %err, "no trusted TLS roots found");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|err| DownloadError::Tls(std::io::Error::other(err)))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            user_agent: user_agent.into(),
        })
    }

    /// GETs `url`, following redirects, and returns at most `limit` bytes
    /// (more is an error).
    pub async fn get(&self, url: &str, limit: u64) -> Result<Vec<u8>, DownloadError> {
        let mut current = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let uri = parse(&current)?;
            let request = Request::get(uri.clone())
                .header(USER_AGENT, &self.user_agent)
                .body(Empty::new())
                .expect("a GET with a valid URI builds");
            let response = tokio::time::timeout(HEADERS_TIMEOUT, self.client.request(request))
                .await
                .map_err(|_| DownloadError::Timeout {
                    url: current.clone(),
                })?
                .map_err(|source| DownloadError::Request {
                    url: current.clone(),
                    source,
                })?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .ok_or_else(|| DownloadError::Status {
                        url: current.clone(),
                        status,
                    })?;
                current = absolute(&uri, location);
                continue;
            }
            if status != StatusCode::OK {
                return Err(DownloadError::Status {
                    url: current,
                    status,
                });
            }
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            loop {
                let frame = tokio::time::timeout(STALL_TIMEOUT, body.frame())
                    .await
                    .map_err(|_| DownloadError::Stalled {
                        url: current.clone(),
                    })?;
                let Some(frame) = frame else { break };
                let frame = frame.map_err(|source| DownloadError::Body {
                    url: current.clone(),
                    source,
                })?;
                if let Ok(data) = frame.into_data() {
                    if bytes.len() as u64 + data.len() as u64 > limit {
                        return Err(DownloadError::TooLarge {
                            url: current,
                            limit,
                        });
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            return Ok(bytes);
        }
        Err(DownloadError::Redirects {
            url: url.to_owned(),
        })
    }
}

/// Parses `url` and applies the transport rule.
fn parse(url: &str) -> Result<Uri, DownloadError> {
    let uri: Uri = url.parse().map_err(|source| DownloadError::Url {
        url: url.to_owned(),
        source,
    })?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if uri.host().is_some_and(is_loopback) => Ok(uri),
        _ => Err(DownloadError::Insecure {
            url: url.to_owned(),
        }),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// A redirect target made absolute against the URI that sent it.
fn absolute(base: &Uri, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let scheme = base.scheme_str().unwrap_or("https");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or("");
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}");
    }
    let path = base.path();
    let dir = &path[..path.rfind('/').map_or(0, |at| at + 1)];
    format!("{scheme}://{authority}{dir}{location}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http() {
        assert!(parse("https://example.org/m.json").is_ok());
        assert!(parse("http://127.0.0.1:8080/m.json").is_ok());
        assert!(parse("http://localhost/m.json").is_ok());
        assert!(parse("http://[::1]:9/m.json").is_ok());
        assert!(matches!(
            parse("http://example.org/m.json"),
            Err(DownloadError::Insecure { .. })
        ));
        assert!(matches!(
            parse("ftp://127.0.0.1/m.json"),
            Err(DownloadError::Insecure { .. })
        ));
    }

    #[test]
    fn redirects_resolve() {
        let base: Uri = "https://a.dev/rel/latest/manifest.json".parse().unwrap();
        assert_eq!(absolute(&base, "https://b.dev/x"), "https://b.dev/x");
        assert_eq!(absolute(&base, "/v1/m.json"), "https://a.dev/v1/m.json");
        assert_eq!(
            absolute(&base, "m2.json"),
            "https://a.dev/rel/latest/m2.json"
        );
    }
}
