//! Integration tests for banger-simvm: API conformance of both engines
//! against Firecracker v1.16.1's recorded answers (and a live Firecracker
//! when `BANGER_TEST_FIRECRACKER` names one), the qemu engine's processes,
//! and real boots of a Debian rootfs in the sim engine. Tests that need root skip with a printed
//! reason otherwise; each runs in a network namespace of its own.

mod boot;
mod conformance;
mod qemu;
mod support;
