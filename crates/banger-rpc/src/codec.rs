//! Reading and writing newline-delimited frames with a size limit.
//!
//! A line longer than the limit is reported as [`FrameReadError::TooLarge`]
//! and skipped up to its newline without being buffered, so the connection
//! stays usable and memory stays bounded.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::frame::MAX_FRAME_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum FrameReadError {
    #[error("frame exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("frame is not valid JSON: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("frame is not valid UTF-8")]
    NotUtf8,
    #[error("reading frame")]
    Io(#[source] std::io::Error),
}

/// Reads newline-delimited frames.
#[derive(Debug)]
pub struct FrameReader<R> {
    reader: BufReader<R>,
    limit: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R) -> Self {
        Self::with_limit(reader, MAX_FRAME_BYTES)
    }

    pub fn with_limit(reader: R, limit: usize) -> Self {
        Self {
            reader: BufReader::new(reader),
            limit,
        }
    }

    /// The next raw line; `None` at end of stream. Blank lines are skipped.
    /// An oversized line is consumed up to its newline and reported once.
    pub async fn next_line(&mut self) -> Option<Result<String, FrameReadError>> {
        loop {
            let mut line = Vec::new();
            let mut oversized = false;
            loop {
                let available = match self.reader.fill_buf().await {
                    Ok(available) => available,
                    Err(err) => return Some(Err(FrameReadError::Io(err))),
                };
                if available.is_empty() {
                    // End of stream: a partial last line still counts.
                    if oversized {
                        return Some(Err(FrameReadError::TooLarge { limit: self.limit }));
                    }
                    if line.is_empty() {
                        return None;
                    }
                    break;
                }
                let (chunk, found_newline) = match available.iter().position(|&b| b == b'\n') {
                    Some(at) => (&available[..at], true),
                    None => (available, false),
                };
                if !oversized {
                    if line.len() + chunk.len() > self.limit {
                        oversized = true;
                        line.clear();
                    } else {
                        line.extend_from_slice(chunk);
                    }
                }
                let consumed = chunk.len() + usize::from(found_newline);
                self.reader.consume(consumed);
                if found_newline {
                    break;
                }
            }
            if oversized {
                return Some(Err(FrameReadError::TooLarge { limit: self.limit }));
            }
            let text = match String::from_utf8(line) {
                Ok(text) => text,
                Err(_) => return Some(Err(FrameReadError::NotUtf8)),
            };
            if text.trim().is_empty() {
                continue;
            }
            return Some(Ok(text));
        }
    }

    /// The next frame decoded as `T`; `None` at end of stream.
    pub async fn next_frame<T: DeserializeOwned>(&mut self) -> Option<Result<T, FrameReadError>> {
        let line = match self.next_line().await? {
            Ok(line) => line,
            Err(err) => return Some(Err(err)),
        };
        Some(serde_json::from_str(&line).map_err(FrameReadError::Malformed))
    }
}

/// Writes one frame and its newline, then flushes.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    frame: &T,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(frame).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    writer.write_all(&bytes).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn oversized_line_is_skipped_and_reading_continues() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut reader = FrameReader::with_limit(server, 32);
        let big = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(100));
        client.write_all(big.as_bytes()).await.unwrap();
        client.write_all(b"\n{\"ok\":1}\n").await.unwrap();
        client.write_all(b"{not json}\n").await.unwrap();
        drop(client);

        assert!(matches!(
            reader.next_line().await,
            Some(Err(FrameReadError::TooLarge { limit: 32 }))
        ));
        let value: serde_json::Value = reader.next_frame().await.unwrap().unwrap();
        assert_eq!(value["ok"], 1);
        assert!(matches!(
            reader.next_frame::<serde_json::Value>().await,
            Some(Err(FrameReadError::Malformed(_)))
        ));
        assert!(reader.next_line().await.is_none());
    }

    #[tokio::test]
    async fn write_then_read_round_trip() {
        let (client, server) = tokio::io::duplex(1024);
        let (_, mut write_half) = tokio::io::split(client);
        write_frame(&mut write_half, &serde_json::json!({"a": [1, 2]}))
            .await
            .unwrap();
        let mut reader = FrameReader::new(server);
        let value: serde_json::Value = reader.next_frame().await.unwrap().unwrap();
        assert_eq!(value, serde_json::json!({"a": [1, 2]}));
    }
}
