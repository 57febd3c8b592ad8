//! The `/dev/kvm` probe: open, `KVM_GET_API_VERSION`, `KVM_CREATE_VM`.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::host::KvmProbe;

const KVMIO: u8 = 0xAE;
/// The only KVM API version Linux has shipped since 2.6.22.
pub(crate) const KVM_API_VERSION: i32 = 12;

pub(crate) fn probe(path: &Path) -> KvmProbe {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return KvmProbe::Missing,
        Err(err) => return KvmProbe::Open(err.to_string()),
    };
    let fd = file.as_raw_fd();
    // SAFETY: KVM_GET_API_VERSION takes no argument and returns an int; `fd`
    // is an open /dev/kvm descriptor for the duration of the call.
    let version = unsafe { libc::ioctl(fd, nix::request_code_none!(KVMIO, 0x00) as _, 0) };
    if version < 0 {
        return KvmProbe::ApiVersion(io::Error::last_os_error().to_string());
    }
    if version != KVM_API_VERSION {
        return KvmProbe::UnexpectedApi(version);
    }
    // SAFETY: KVM_CREATE_VM takes the machine type (0 = default) by value and
    // returns a new file descriptor or -1; `fd` is open for the call.
    let vm = unsafe { libc::ioctl(fd, nix::request_code_none!(KVMIO, 0x01) as _, 0) };
    if vm < 0 {
        return KvmProbe::CreateVm(io::Error::last_os_error().to_string());
    }
    // SAFETY: `vm` is a descriptor the kernel just created for us and that
    // nothing else owns; wrapping it closes it when dropped.
    drop(unsafe { OwnedFd::from_raw_fd(vm) });
    KvmProbe::Usable {
        api_version: version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_is_missing() {
        assert_eq!(
            probe(Path::new("/nonexistent/banger/kvm")),
            KvmProbe::Missing
        );
    }

    #[test]
    fn a_regular_file_is_not_kvm() {
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(
            matches!(probe(file.path()), KvmProbe::ApiVersion(_)),
            "{:?}",
            probe(file.path())
        );
    }
}
