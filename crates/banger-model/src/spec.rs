//! A VM's size: vcpus, memory and work-disk size.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::size::ByteSize;

/// Firecracker accepts at most 32 vcpus.
pub const MAX_VCPU: u32 = 32;
/// Smallest memory a Linux guest with sshd can boot in.
pub const MIN_MEMORY_MIB: u32 = 128;
/// Smallest work disk (the guest's `/root`).
pub const MIN_DISK: ByteSize = ByteSize::mib(64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub vcpu: u32,
    pub memory_mib: u32,
    pub disk_size: ByteSize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("vcpu must be between 1 and {MAX_VCPU}, got {0}")]
    Vcpu(i64),
    #[error("memory must be at least {MIN_MEMORY_MIB} MiB, got {0}")]
    Memory(i64),
    #[error("disk size must be at least {MIN_DISK}, got {0}")]
    Disk(ByteSize),
}

impl VmSpec {
    /// Checks each field's bounds.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_vcpu(i64::from(self.vcpu))?;
        validate_memory_mib(i64::from(self.memory_mib))?;
        validate_disk(self.disk_size)?;
        Ok(())
    }
}

pub fn validate_vcpu(vcpu: i64) -> Result<u32, SpecError> {
    if (1..=i64::from(MAX_VCPU)).contains(&vcpu) {
        Ok(vcpu as u32)
    } else {
        Err(SpecError::Vcpu(vcpu))
    }
}

pub fn validate_memory_mib(memory: i64) -> Result<u32, SpecError> {
    if memory >= i64::from(MIN_MEMORY_MIB) && memory <= i64::from(u32::MAX) {
        Ok(memory as u32)
    } else {
        Err(SpecError::Memory(memory))
    }
}

pub fn validate_disk(disk: ByteSize) -> Result<ByteSize, SpecError> {
    if disk >= MIN_DISK {
        Ok(disk)
    } else {
        Err(SpecError::Disk(disk))
    }
}

impl fmt::Display for VmSpec {
    /// `4 vcpu · 8192 MiB · 8G disk`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} vcpu · {} MiB · {} disk",
            self.vcpu, self.memory_mib, self.disk_size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_spec_line() {
        let spec = VmSpec {
            vcpu: 4,
            memory_mib: 8192,
            disk_size: ByteSize::gib(8),
        };
        assert_eq!(spec.to_string(), "4 vcpu · 8192 MiB · 8G disk");
    }

    #[test]
    fn rejects_non_positive_values() {
        assert_eq!(validate_vcpu(0), Err(SpecError::Vcpu(0)));
        assert_eq!(validate_vcpu(-2), Err(SpecError::Vcpu(-2)));
        assert_eq!(validate_vcpu(33), Err(SpecError::Vcpu(33)));
        assert_eq!(validate_memory_mib(0), Err(SpecError::Memory(0)));
        assert_eq!(validate_memory_mib(-512), Err(SpecError::Memory(-512)));
        assert_eq!(
            validate_disk(ByteSize::mib(1)),
            Err(SpecError::Disk(ByteSize::mib(1)))
        );
        let spec = VmSpec {
            vcpu: 2,
            memory_mib: 1024,
            disk_size: ByteSize::gib(8),
        };
        assert_eq!(spec.validate(), Ok(()));
    }
}
