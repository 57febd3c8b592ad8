//! The daemon's lifecycle against recording fakes of the host (network,
//! disks, VMM, readiness): every rollback path, without root.

mod bootstrap;
mod crash;
mod doctor;
mod harness;
mod lifecycle;
mod reconcile;
mod routing;
