//! An uncompressed `vmlinux` ELF out of a distribution's `vmlinuz` (an x86
//! bzImage): Firecracker boots the ELF, not the bzImage.
//!
//! The bzImage's setup header (boot protocol ≥ 2.08) says where the
//! compressed payload is (`payload_offset`, `payload_length`); its magic says
//! how it is compressed. For images without a usable header the payload is
//! found the way `scripts/extract-vmlinux` finds it: by scanning for each
//! format's magic and keeping the first candidate that decodes to an ELF.

use crate::decompress::Compression;

/// Largest vmlinux accepted (a bound on decompression).
pub const MAX_VMLINUX: usize = 512 << 20;
/// How many magic matches per format a scan tries.
const SCAN_ATTEMPTS: usize = 8;

/// An extracted kernel.
#[derive(Debug, Clone)]
pub struct Vmlinux {
    pub elf: Vec<u8>,
    /// How the payload was compressed (`None`: the input was already an ELF).
    pub compression: Option<Compression>,
    /// The release from the `Linux version …` banner, when present.
    pub release: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractVmlinuxError {
    #[error("not a Linux kernel image: no bzImage header and no compressed payload found")]
    NotAKernel,
    #[error("the kernel payload is compressed with {0}, which banger cannot decode")]
    Unsupported(&'static str),
    #[error("the bzImage payload ({compression}) could not be decoded")]
    Payload {
        compression: Compression,
        #[source]
        source: crate::decompress::DecompressError,
    },
    #[error("the decoded kernel is not an ELF x86-64 executable ({0})")]
    NotX86_64(String),
}

/// Extracts the ELF from `image` (a bzImage, a compressed vmlinux, or a
/// vmlinux already).
pub fn extract(image: &[u8]) -> Result<Vmlinux, ExtractVmlinuxError> {
    if image.starts_with(b"\x7fELF") {
        check_elf(image)?;
        return Ok(Vmlinux {
            release: release(image),
            elf: image.to_vec(),
            compression: None,
        });
    }
    if let Some(payload) = bzimage_payload(image) {
        let Some(compression) = Compression::detect(payload) else {
            if payload.starts_with(b"\x89LZO") {
                return Err(ExtractVmlinuxError::Unsupported("lzo"));
            }
            return Err(ExtractVmlinuxError::NotAKernel);
        };
        let elf = compression
            .decompress(payload, MAX_VMLINUX)
            .map_err(|source| ExtractVmlinuxError::Payload {
                compression,
                source,
            })?;
        check_elf(&elf)?;
        return Ok(Vmlinux {
            release: release(&elf),
            elf,
            compression: Some(compression),
        });
    }
    scan(image)
}

/// The compressed payload a bzImage's setup header points at.
fn bzimage_payload(image: &[u8]) -> Option<&[u8]> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(image.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?));
    if image.get(0x202..0x206)? != b"HdrS" || u16_at(0x206)? < 0x0208 {
        return None;
    }
    let setup_sects = match *image.get(0x1f1)? {
        0 => 4,
        n => usize::from(n),
    };
    let protected_mode = (setup_sects + 1) * 512;
    let offset = protected_mode + u32_at(0x248)? as usize;
    let length = u32_at(0x24c)? as usize;
    image.get(offset..offset.checked_add(length)?)
}

/// Tries each format at each place its magic occurs.
fn scan(image: &[u8]) -> Result<Vmlinux, ExtractVmlinuxError> {
    let mut found_payload = None;
    for compression in Compression::ALL {
        for at in memchr::memmem::find_iter(image, compression.magic()).take(SCAN_ATTEMPTS) {
            let Ok(elf) = compression.decompress(&image[at..], MAX_VMLINUX) else {
                continue;
            };
            match check_elf(&elf) {
                Ok(()) => {
                    return Ok(Vmlinux {
                        release: release(&elf),
                        elf,
                        compression: Some(compression),
                    });
                }
                Err(err) => found_payload = Some(err),
            }
        }
    }
    Err(found_payload.unwrap_or(ExtractVmlinuxError::NotAKernel))
}

/// Accepts an ELF64 x86-64 executable.
pub fn check_elf(data: &[u8]) -> Result<(), ExtractVmlinuxError> {
    use object::{Architecture, Object, ObjectKind};
    let file = object::read::elf::ElfFile64::<object::Endianness>::parse(data)
        .map_err(|err| ExtractVmlinuxError::NotX86_64(err.to_string()))?;
    if file.architecture() != Architecture::X86_64 {
        return Err(ExtractVmlinuxError::NotX86_64(format!(
            "architecture {:?}",
            file.architecture()
        )));
    }
    if file.kind() != ObjectKind::Executable {
        return Err(ExtractVmlinuxError::NotX86_64(format!(
            "object kind {:?}",
            file.kind()
        )));
    }
    Ok(())
}

/// The release from the `Linux version X …` banner inside a kernel.
pub fn release(image: &[u8]) -> Option<String> {
    let marker = b"Linux version ";
    let at = memchr::memmem::find_iter(image, marker)
        .map(|at| at + marker.len())
        // The banner's release starts with a digit; skip other mentions.
        .find(|at| image.get(*at).is_some_and(u8::is_ascii_digit))?;
    let rest = &image[at..image.len().min(at + 128)];
    let end = rest
        .iter()
        .position(|b| b.is_ascii_whitespace() || *b == 0)?;
    let version = std::str::from_utf8(&rest[..end]).ok()?;
    (!version.is_empty()).then(|| version.to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decompress::tests::compress;

    /// A minimal ELF64 x86-64 executable header followed by a banner.
    pub(crate) fn tiny_elf(machine: u16) -> Vec<u8> {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2; // 64-bit
        elf[5] = 1; // little-endian
        elf[6] = 1; // version
        elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf[18..20].copy_from_slice(&machine.to_le_bytes());
        elf[20..24].copy_from_slice(&1u32.to_le_bytes());
        elf[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        elf[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        elf.extend_from_slice(
            b"Linux version 6.1.0-50-cloud-amd64 (debian-kernel@lists.debian.org)\0",
        );
        elf.extend((0..100_000u32).map(|n| (n % 13) as u8));
        elf
    }

    /// A bzImage-shaped file: setup sectors with a 2.15 header, some
    /// decompressor code, then the payload where the header says.
    pub(crate) fn tiny_bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 3u8;
        let mut image = vec![0u8; (usize::from(setup_sects) + 1) * 512];
        image[0x1f1] = setup_sects;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        let code = vec![0x90u8; 700];
        image[0x248..0x24c].copy_from_slice(&(code.len() as u32).to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(&code);
        image.extend_from_slice(payload);
        image.extend_from_slice(&[0u8; 300]);
        image
    }

    #[test]
    fn every_compression_through_the_header() {
        let elf = tiny_elf(62);
        for format in Compression::ALL {
            let mut payload = compress(format, &elf);
            payload.extend_from_slice(&(elf.len() as u32).to_le_bytes());
            let image = tiny_bzimage(&payload);
            let out = extract(&image).unwrap_or_else(|err| panic!("{format}: {err}"));
            assert_eq!(out.elf, elf, "{format}");
            assert_eq!(out.compression, Some(format));
            assert_eq!(out.release.as_deref(), Some("6.1.0-50-cloud-amd64"));
        }
    }

    #[test]
    fn every_compression_by_magic_scan() {
        let elf = tiny_elf(62);
        for format in Compression::ALL {
            let mut image = vec![0x11u8; 4096];
            image.extend_from_slice(&compress(format, &elf));
            image.extend_from_slice(&[0u8; 64]);
            let out = extract(&image).unwrap_or_else(|err| panic!("{format}: {err}"));
            assert_eq!(out.elf, elf, "{format}");
        }
    }

    #[test]
    fn refuses_other_architectures_and_junk() {
        let arm = tiny_elf(183);
        let image = tiny_bzimage(&compress(Compression::Gzip, &arm));
        assert!(matches!(
            extract(&image),
            Err(ExtractVmlinuxError::NotX86_64(_))
        ));
        assert!(matches!(
            extract(b"definitely not a kernel"),
            Err(ExtractVmlinuxError::NotAKernel)
        ));
        let lzo = tiny_bzimage(b"\x89LZO\0\r\n\x1a\nrest");
        assert!(matches!(
            extract(&lzo),
            Err(ExtractVmlinuxError::Unsupported("lzo"))
        ));
    }

    #[test]
    fn an_elf_passes_through() {
        let elf = tiny_elf(62);
        let out = extract(&elf).unwrap();
        assert_eq!(out.compression, None);
        assert_eq!(out.elf, elf);
    }
}
