//! Integration tests for banger-simvm: API conformance (against simvm, and
//! against a real Firecracker when `BANGER_TEST_FIRECRACKER` names one) and
//! real boots of a Debian rootfs. Tests that need root skip with a printed
//! reason otherwise; each runs in a network namespace of its own.

mod boot;
mod conformance;
mod qemu;
mod support;
