//! Downloads for `banger update` over banger's one HTTP(S) transport
//! ([`banger_http`]): https, or plain http to a loopback host (the test
//! suite's release server); every redirect hop obeys the same rule, bodies
//! are capped and stalls time out.
//!
//! Integrity does not rest on TLS: the manifest is signed and pins every
//! binary's sha256. TLS keeps what is fetched private and on time.

use banger_http::{HeaderMap, HttpClient, Timeouts, TransportPolicy};

pub use banger_http::HttpError as DownloadError;

/// A pooled HTTP(S) client for release files.
#[derive(Debug, Clone)]
pub struct Downloader {
    client: HttpClient,
}

impl Downloader {
    pub fn new(user_agent: impl Into<String>) -> Result<Self, DownloadError> {
        let client = HttpClient::new(TransportPolicy::default(), Timeouts::default())?
            .with_user_agent(&user_agent.into())?;
        Ok(Self { client })
    }

    /// GETs `url`, following redirects, and returns at most `limit` bytes
    /// (more is an error, as is any status but success).
    pub async fn get(&self, url: &str, limit: u64) -> Result<Vec<u8>, DownloadError> {
        self.client.get_bytes(url, &HeaderMap::new(), limit).await
    }
}
