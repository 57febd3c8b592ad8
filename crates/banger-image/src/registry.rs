//! A small client for the OCI distribution API: manifests, blobs and the
//! anonymous Bearer token dance.
//!
//! Why our own client and not `oci-client`: it is about 500 lines on hyper,
//! which the workspace already builds for the Firecracker API, plus rustls
//! with the `ring` provider (`oci-client` with `rustls-tls` pulls reqwest's
//! aws-lc-rs, whose C build is the largest single cost in the tree; its
//! oci-spec types add more). Owning it gives the pull what it needs and
//! `oci-client` does not offer in one place: every hop of a redirect checked
//! against the plain-http policy, `Range` requests to resume a partial blob,
//! per-chunk progress, and bytes hashed while they stream into the cache.
//!
//! Authentication: a request that gets `401` with a
//! `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge fetches an
//! anonymous token from the realm (same http policy) and is retried once with
//! it; tokens are kept per registry and repository for later requests.
//! `Basic` challenges mean credentials are required, which banger does not
//! support yet.

use std::collections::HashMap;
use std::sync::Mutex;

use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, HeaderValue,
    RANGE, WWW_AUTHENTICATE,
};
use serde::Deserialize;

use crate::digest::Digest;
use crate::http::{HttpClient, HttpError, HttpResponse, encode_query_value};
use crate::manifest::{self, Manifest, ParseManifestError, Platform};
use crate::reference::Reference;

/// Manifests and configs larger than this are refused.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Why a registry request failed (below the level of what was asked for).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(
        "{registry} requires credentials (it answered with a Basic challenge); banger only pulls anonymously"
    )]
    CredentialsRequired { registry: String },
    #[error("{registry} refused access to {repository}{detail}")]
    Unauthorized {
        registry: String,
        repository: String,
        detail: String,
    },
    #[error("{registry}: malformed WWW-Authenticate challenge {challenge:?}")]
    Challenge { registry: String, challenge: String },
    #[error("{registry}: the token endpoint {url} returned no token")]
    Token { registry: String, url: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot fetch the manifest of {reference}")]
    Request {
        reference: String,
        #[source]
        source: RequestError,
    },
    #[error("{reference} was not found in the registry{detail}")]
    NotFound { reference: String, detail: String },
    #[error("manifest of {reference}")]
    Parse {
        reference: String,
        #[source]
        source: ParseManifestError,
    },
    #[error("manifest of {reference} hashes to {actual}, but {expected} was asked for")]
    DigestMismatch {
        reference: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{reference} has no image for {platform} (it has: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("{reference}: an index points to another index; nested indexes are not supported")]
    NestedIndex { reference: String },
    #[error("cannot fetch the config blob of {reference}")]
    Config {
        reference: String,
        #[source]
        source: Box<FetchBlobError>,
    },
    #[error("config of {reference}")]
    ConfigParse {
        reference: String,
        #[source]
        source: ParseManifestError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FetchBlobError {
    #[error("cannot fetch blob {digest} of {repository}")]
    Request {
        repository: String,
        digest: Digest,
        #[source]
        source: RequestError,
    },
    #[error("blob {digest} of {repository} was not found in the registry")]
    NotFound { repository: String, digest: Digest },
    #[error(
        "blob {digest}: the registry sent more than the {expected} bytes the manifest declares"
    )]
    TooLong { digest: Digest, expected: u64 },
    #[error("blob {digest}: the transfer ended after {received} of {expected} bytes")]
    Truncated {
        digest: Digest,
        received: u64,
        expected: u64,
    },
    #[error("blob {digest}: downloaded content hashes to {actual}; the download was deleted")]
    DigestMismatch { digest: Digest, actual: Digest },
    #[error("blob {digest}: cannot write {path}")]
    Cache {
        digest: Digest,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FetchBlobError {
    /// Whether a retry (resuming from what is on disk) may help.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Request {
                source: RequestError::Http(err),
                ..
            } => err.is_transient(),
            Self::Truncated { .. } => true,
            _ => false,
        }
    }
}

/// A manifest as the registry returned it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub digest: Digest,
    pub media_type: Option<String>,
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
}

/// The image manifest a reference resolved to.
#[derive(Debug, Clone)]
pub struct ImageManifestFetch {
    /// The index's digest, when the reference named an index.
    pub index_digest: Option<Digest>,
    pub manifest_digest: Digest,
    pub manifest: manifest::ImageManifest,
}

/// A blob response, positioned at `offset`.
#[derive(Debug)]
pub struct BlobBody {
    /// The URL that served it (after redirects), for error messages.
    pub url: String,
    pub body: Incoming,
    /// Where the body starts in the blob: the requested offset when the
    /// server honoured the `Range`, else 0.
    pub offset: u64,
    pub content_length: Option<u64>,
}

/// Client for one or more registries. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RegistryClient {
    http: HttpClient,
    platform: Platform,
    /// (api host, repository) → bearer token.
    tokens: Mutex<HashMap<(String, String), String>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

#[derive(Deserialize)]
struct RegistryErrors {
    #[serde(default)]
    errors: Vec<RegistryErrorEntry>,
}

#[derive(Deserialize)]
struct RegistryErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl RegistryClient {
    pub fn new(http: HttpClient, platform: Platform) -> Self {
        Self {
            http,
            platform,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    fn url(&self, reference: &Reference, path: &str) -> String {
        let host = reference.api_host();
        let scheme = self.http.policy().scheme_for(host);
        format!("{scheme}://{host}/v2/{}/{path}", reference.repository())
    }

    /// GET with the cached token, answering a Bearer challenge once.
    async fn authed_get(
        &self,
        reference: &Reference,
        url: &str,
        mut headers: HeaderMap,
    ) -> Result<HttpResponse, RequestError> {
        let key = (
            reference.api_host().to_owned(),
            reference.repository().to_owned(),
        );
        let cached = self.tokens.lock().expect("token cache").get(&key).cloned();
        if let Some(token) = &cached {
            headers.insert(AUTHORIZATION, bearer(token));
        }
        let response = self.http.get(url, &headers).await?;
        if response.response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let token = self.fetch_token(reference, &challenge).await?;
        self.tokens
            .lock()
            .expect("token cache")
            .insert(key, token.clone());
        headers.insert(AUTHORIZATION, bearer(&token));
        let mut retried = self.http.get(url, &headers).await?;
        if retried.response.status() == StatusCode::UNAUTHORIZED {
            let detail = registry_detail(&self.http, &retried.url, &mut retried.response).await;
            return Err(RequestError::Unauthorized {
                registry: reference.registry().to_owned(),
                repository: reference.repository().to_owned(),
                detail,
            });
        }
        Ok(retried)
    }

    async fn fetch_token(
        &self,
        reference: &Reference,
        challenge: &str,
    ) -> Result<String, RequestError> {
        let registry = reference.registry().to_owned();
        let (scheme, params) =
            parse_challenge(challenge).ok_or_else(|| RequestError::Challenge {
                registry: registry.clone(),
                challenge: challenge.to_owned(),
            })?;
        if scheme.eq_ignore_ascii_case("basic") {
            return Err(RequestError::CredentialsRequired { registry });
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(RequestError::Challenge {
                registry,
                challenge: challenge.to_owned(),
            });
        }
        let Some(realm) = params.get("realm") else {
            return Err(RequestError::Challenge {
                registry,
                challenge: challenge.to_owned(),
            });
        };
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", reference.repository()));
        let mut url = realm.clone();
        url.push(if url.contains('?') { '&' } else { '?' });
        if let Some(service) = params.get("service") {
            url.push_str(&format!("service={}&", encode_query_value(service)));
        }
        url.push_str(&format!("scope={}", encode_query_value(&scope)));
        let body = self
            .http
            .get_bytes(&url, &HeaderMap::new(), 1024 * 1024)
            .await?;
        let token: TokenResponse =
            serde_json::from_slice(&body).map_err(|_| RequestError::Token {
                registry: registry.clone(),
                url: url.clone(),
            })?;
        token
            .token
            .or(token.access_token)
            .filter(|token| !token.is_empty())
            .ok_or(RequestError::Token { registry, url })
    }

    /// Fetches the manifest `reference` names, verifying its digest when
    /// the reference pins one.
    pub async fn fetch_manifest(
        &self,
        reference: &Reference,
    ) -> Result<FetchedManifest, ResolveError> {
        let url = self.url(
            reference,
            &format!("manifests/{}", reference.manifest_ref()),
        );
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(manifest::MANIFEST_ACCEPT));
        let request_error = |source: RequestError| ResolveError::Request {
            reference: reference.to_string(),
            source,
        };
        let HttpResponse { url, mut response } = self
            .authed_get(reference, &url, headers)
            .await
            .map_err(request_error)?;
        if response.status() == StatusCode::NOT_FOUND {
            let detail = registry_detail(&self.http, &url, &mut response).await;
            return Err(ResolveError::NotFound {
                reference: reference.to_string(),
                detail,
            });
        }
        if !response.status().is_success() {
            let err = self.http.status_error(&url, &mut response).await;
            return Err(request_error(err.into()));
        }
        let media_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let bytes = self
            .http
            .read_body(&url, response.body_mut(), MAX_MANIFEST_BYTES)
            .await
            .map_err(|err| request_error(err.into()))?;
        let digest = Digest::of(&bytes);
        if let Some(expected) = reference.digest()
            && *expected != digest
        {
            return Err(ResolveError::DigestMismatch {
                reference: reference.to_string(),
                expected: expected.clone(),
                actual: digest,
            });
        }
        let manifest = Manifest::parse(media_type.as_deref(), &bytes).map_err(|source| {
            ResolveError::Parse {
                reference: reference.to_string(),
                source,
            }
        })?;
        Ok(FetchedManifest {
            digest,
            media_type,
            bytes,
            manifest,
        })
    }

    /// Fetches the image manifest for this client's platform: the manifest
    /// itself, or the matching entry of an index.
    pub async fn fetch_image_manifest(
        &self,
        reference: &Reference,
    ) -> Result<ImageManifestFetch, ResolveError> {
        let fetched = self.fetch_manifest(reference).await?;
        match fetched.manifest {
            Manifest::Image(image) => Ok(ImageManifestFetch {
                index_digest: None,
                manifest_digest: fetched.digest,
                manifest: image,
            }),
            Manifest::Index(index) => {
                let Some(entry) = index.select(&self.platform) else {
                    return Err(ResolveError::NoPlatform {
                        reference: reference.to_string(),
                        platform: self.platform.to_string(),
                        available: index.platforms().join(", "),
                    });
                };
                tracing::debug!(%reference, platform = %self.platform, digest = %entry.digest, "index resolved");
                let pinned = reference.with_digest(entry.digest.clone());
                let inner = self.fetch_manifest(&pinned).await?;
                match inner.manifest {
                    Manifest::Image(image) => Ok(ImageManifestFetch {
                        index_digest: Some(fetched.digest),
                        manifest_digest: inner.digest,
                        manifest: image,
                    }),
                    Manifest::Index(_) => Err(ResolveError::NestedIndex {
                        reference: reference.to_string(),
                    }),
                }
            }
        }
    }

    /// Opens blob `digest`, from byte `offset` when the server honours
    /// ranges.
    pub async fn open_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobBody, FetchBlobError> {
        let url = self.url(reference, &format!("blobs/{digest}"));
        let mut headers = HeaderMap::new();
        if offset > 0 {
            headers.insert(
                RANGE,
                HeaderValue::from_str(&format!("bytes={offset}-"))
                    .expect("a numeric range is a header value"),
            );
        }
        let request_error = |source: RequestError| FetchBlobError::Request {
            repository: reference.repository().to_owned(),
            digest: digest.clone(),
            source,
        };
        let HttpResponse { url, mut response } = self
            .authed_get(reference, &url, headers)
            .await
            .map_err(request_error)?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Err(FetchBlobError::NotFound {
                repository: reference.repository().to_owned(),
                digest: digest.clone(),
            });
        }
        if status == StatusCode::RANGE_NOT_SATISFIABLE && offset > 0 {
            // What we have is not a prefix the server recognises: start over.
            return Box::pin(self.open_blob(reference, digest, 0)).await;
        }
        if !status.is_success() {
            let err = self.http.status_error(&url, &mut response).await;
            return Err(request_error(err.into()));
        }
        let content_length = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        let start = if status == StatusCode::PARTIAL_CONTENT {
            response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|value| value.to_str().ok())
                .and_then(parse_content_range_start)
                .unwrap_or(offset)
        } else {
            0
        };
        Ok(BlobBody {
            url,
            body: response.into_body(),
            offset: start,
            content_length,
        })
    }
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"))
}

/// `bytes 100-199/200` → 100.
fn parse_content_range_start(value: &str) -> Option<u64> {
    value
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// What a registry error body says: `: CODE: message`, or empty.
async fn registry_detail(
    http: &HttpClient,
    url: &str,
    response: &mut hyper::Response<Incoming>,
) -> String {
    let Ok(body) = http.read_body(url, response.body_mut(), 64 * 1024).await else {
        return String::new();
    };
    match serde_json::from_slice::<RegistryErrors>(&body) {
        Ok(errors) if !errors.errors.is_empty() => {
            let parts: Vec<String> = errors
                .errors
                .iter()
                .map(|entry| format!("{}: {}", entry.code, entry.message))
                .collect();
            format!(": {}", parts.join("; "))
        }
        _ => String::new(),
    }
}

/// Parses `Scheme k="v", k2=v2` into the scheme and its parameters.
pub(crate) fn parse_challenge(header: &str) -> Option<(String, HashMap<String, String>)> {
    let header = header.trim();
    let (scheme, mut rest) = match header.split_once(char::is_whitespace) {
        Some((scheme, rest)) => (scheme, rest.trim_start()),
        None if !header.is_empty() => (header, ""),
        None => return None,
    };
    let mut params = HashMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((at, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = Some(at + 1);
                        break;
                    }
                    other => value.push(other),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.insert(key, value);
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some((scheme.to_owned(), params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_challenge() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#,
        )
        .unwrap();
        assert_eq!(scheme, "Bearer");
        assert_eq!(params["realm"], "https://auth.docker.io/token");
        assert_eq!(params["service"], "registry.docker.io");
        assert_eq!(params["scope"], "repository:library/debian:pull");

        let (scheme, params) = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(scheme, "Basic");
        assert_eq!(params["realm"], "Registry Realm");

        let (_, params) =
            parse_challenge(r#"Bearer realm=https://x/token, service=x, scope="a,b""#).unwrap();
        assert_eq!(params["realm"], "https://x/token");
        assert_eq!(params["scope"], "a,b");
        assert!(parse_challenge("").is_none());
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn parses_content_range() {
        assert_eq!(parse_content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(parse_content_range_start("bytes */200"), None);
    }
}
