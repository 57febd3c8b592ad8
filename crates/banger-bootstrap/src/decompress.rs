//! The compressions a Linux kernel image (and its modules, and a `.deb`'s
//! data tarball) may use, told apart by magic and decoded in memory with a
//! bound on the output.

use std::fmt;
use std::io::Read;

/// One compression format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    /// The legacy `.lzma` ("LZMA alone") format.
    Lzma,
    /// LZ4's legacy frame format, which `lz4 -l` writes for kernels.
    Lz4Legacy,
    Zstd,
    Bzip2,
}

/// LZ4's legacy frame magic (`0x184C2102`, little-endian).
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
/// The legacy format's uncompressed block size.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

impl Compression {
    /// Every format, in the order a magic scan tries them.
    pub const ALL: [Compression; 6] = [
        Self::Gzip,
        Self::Xz,
        Self::Zstd,
        Self::Lz4Legacy,
        Self::Bzip2,
        Self::Lzma,
    ];

    /// The bytes a stream in this format starts with.
    pub fn magic(self) -> &'static [u8] {
        match self {
            Self::Gzip => &[0x1f, 0x8b, 0x08],
            Self::Xz => &[0xfd, b'7', b'z', b'X', b'Z', 0x00],
            // Properties byte 0x5d (lc=3 lp=0 pb=2), then a dictionary size
            // whose low bytes are zero for the sizes kernels use.
            Self::Lzma => &[0x5d, 0x00, 0x00],
            Self::Lz4Legacy => &LZ4_LEGACY_MAGIC,
            Self::Zstd => &[0x28, 0xb5, 0x2f, 0xfd],
            Self::Bzip2 => b"BZh",
        }
    }

    /// The format whose magic `data` starts with.
    pub fn detect(data: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|compression| data.starts_with(compression.magic()))
    }

    /// The format of a file named like `data.tar.xz` or `ext4.ko.zst`.
    pub fn from_extension(name: &str) -> Option<Self> {
        let ext = name.rsplit_once('.')?.1;
        match ext {
            "gz" => Some(Self::Gzip),
            "xz" => Some(Self::Xz),
            "lzma" => Some(Self::Lzma),
            "zst" => Some(Self::Zstd),
            "bz2" => Some(Self::Bzip2),
            "lz4" => Some(Self::Lz4Legacy),
            _ => None,
        }
    }

    /// Decodes one stream at the start of `data` (trailing bytes, such as the
    /// size a kernel appends to its payload, are ignored), refusing output
    /// larger than `limit` bytes.
    pub fn decompress(self, data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
        let err = |source: std::io::Error| DecompressError::Corrupt {
            format: self,
            source,
        };
        let mut out = Vec::new();
        match self {
            Self::Gzip => read_bounded(flate2::read::GzDecoder::new(data), limit, &mut out),
            Self::Xz => read_bounded(liblzma::read::XzDecoder::new(data), limit, &mut out),
            Self::Lzma => {
                let stream = liblzma::stream::Stream::new_lzma_decoder(u64::MAX)
                    .map_err(|source| err(source.into()))?;
                read_bounded(
                    liblzma::read::XzDecoder::new_stream(data, stream),
                    limit,
                    &mut out,
                )
            }
            Self::Zstd => {
                let mut decoder = zstd::stream::read::Decoder::new(data).map_err(err)?;
                // Kernels are compressed with `--ultra -22`: a 128 MiB window.
                decoder.window_log_max(31).map_err(err)?;
                read_bounded(decoder.single_frame(), limit, &mut out)
            }
            Self::Bzip2 => read_bounded(bzip2::read::BzDecoder::new(data), limit, &mut out),
            Self::Lz4Legacy => return lz4_legacy(data, limit),
        }
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::FileTooLarge => DecompressError::TooLarge {
                format: self,
                limit,
            },
            _ => err(source),
        })?;
        Ok(out)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Lzma => "lzma",
            Self::Lz4Legacy => "lz4",
            Self::Zstd => "zstd",
            Self::Bzip2 => "bzip2",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error("corrupt {format} data")]
    Corrupt {
        format: Compression,
        #[source]
        source: std::io::Error,
    },
    #[error("{format} data decompresses to more than {limit} bytes")]
    TooLarge { format: Compression, limit: usize },
}

fn read_bounded(reader: impl Read, limit: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut bounded = reader.take(limit as u64 + 1);
    bounded.read_to_end(out)?;
    if out.len() > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            "output limit exceeded",
        ));
    }
    Ok(())
}

/// LZ4's legacy format: the magic, then blocks of `u32` (LE) compressed
/// length + an LZ4 block of at most 8 MiB uncompressed. A length that cannot
/// be a block (the kernel's trailing size, or the end of the data) ends it;
/// the magic again starts a concatenated stream.
fn lz4_legacy(data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let corrupt = |message: String| DecompressError::Corrupt {
        format: Compression::Lz4Legacy,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, message),
    };
    if !data.starts_with(&LZ4_LEGACY_MAGIC) {
        return Err(corrupt("no lz4 legacy magic".into()));
    }
    let mut at = LZ4_LEGACY_MAGIC.len();
    let mut out: Vec<u8> = Vec::new();
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    let bound = lz4_flex::block::get_maximum_output_size(LZ4_LEGACY_BLOCK);
    while data.len() - at >= 4 {
        let header: [u8; 4] = data[at..at + 4].try_into().expect("four bytes");
        if header == LZ4_LEGACY_MAGIC {
            at += 4;
            continue;
        }
        let size = u32::from_le_bytes(header) as usize;
        if size == 0 || size > bound || size > data.len() - at - 4 {
            break;
        }
        let input = &data[at + 4..at + 4 + size];
        match lz4_flex::block::decompress_into(input, &mut block) {
            Ok(n) => {
                if out.len() + n > limit {
                    return Err(DecompressError::TooLarge {
                        format: Compression::Lz4Legacy,
                        limit,
                    });
                }
                out.extend_from_slice(&block[..n]);
            }
            // Past the first block, garbage is the end of the stream.
            Err(_) if !out.is_empty() => break,
            Err(err) => return Err(corrupt(format!("block at offset {at}: {err}"))),
        }
        at += 4 + size;
    }
    if out.is_empty() {
        return Err(corrupt("no lz4 blocks".into()));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Compresses `data` the way the kernel's build does for `format`.
    pub(crate) fn compress(format: Compression, data: &[u8]) -> Vec<u8> {
        match format {
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                encoder.write_all(data).unwrap();
                encoder.finish().unwrap()
            }
            Compression::Xz => {
                // xz_wrap.sh: --check=crc32 --x86 --lzma2=...: a BCJ filter first.
                let mut filters = liblzma::stream::Filters::new();
                filters.x86();
                filters.lzma2(&liblzma::stream::LzmaOptions::new_preset(6).unwrap());
                let stream = liblzma::stream::Stream::new_stream_encoder(
                    &filters,
                    liblzma::stream::Check::Crc32,
                )
                .unwrap();
                let mut encoder = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
                encoder.write_all(data).unwrap();
                encoder.finish().unwrap()
            }
            Compression::Lzma => {
                let options = liblzma::stream::LzmaOptions::new_preset(6).unwrap();
                let stream = liblzma::stream::Stream::new_lzma_encoder(&options).unwrap();
                let mut encoder = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
                encoder.write_all(data).unwrap();
                encoder.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(data, 19).unwrap(),
            Compression::Bzip2 => {
                let mut encoder =
                    bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
                encoder.write_all(data).unwrap();
                encoder.finish().unwrap()
            }
            Compression::Lz4Legacy => {
                let mut out = LZ4_LEGACY_MAGIC.to_vec();
                for chunk in data.chunks(LZ4_LEGACY_BLOCK) {
                    let block = lz4_flex::block::compress(chunk);
                    out.extend_from_slice(&(block.len() as u32).to_le_bytes());
                    out.extend_from_slice(&block);
                }
                out
            }
        }
    }

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|n| (n % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_format_round_trips_with_a_trailer() {
        let data = sample();
        for format in Compression::ALL {
            let mut packed = compress(format, &data);
            assert_eq!(Compression::detect(&packed), Some(format), "{format}");
            // The kernel appends the uncompressed size after the stream.
            packed.extend_from_slice(&(data.len() as u32).to_le_bytes());
            let unpacked = format
                .decompress(&packed, 1 << 30)
                .unwrap_or_else(|err| panic!("{format}: {err:?}"));
            assert_eq!(unpacked, data, "{format}");
        }
    }

    #[test]
    fn output_is_bounded() {
        let data = vec![0u8; 1 << 20];
        for format in Compression::ALL {
            let packed = compress(format, &data);
            let err = format.decompress(&packed, 1000).unwrap_err();
            assert!(
                matches!(err, DecompressError::TooLarge { .. }),
                "{format}: {err:?}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error() {
        for format in Compression::ALL {
            let mut junk = format.magic().to_vec();
            junk.extend_from_slice(&[0xff; 64]);
            assert!(format.decompress(&junk, 1 << 20).is_err(), "{format}");
        }
    }

    #[test]
    fn extensions() {
        assert_eq!(
            Compression::from_extension("data.tar.xz"),
            Some(Compression::Xz)
        );
        assert_eq!(
            Compression::from_extension("ext4.ko.zst"),
            Some(Compression::Zstd)
        );
        assert_eq!(Compression::from_extension("ext4.ko"), None);
    }
}
