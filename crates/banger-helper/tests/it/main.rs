//! Real tests of banger-helper: the helper serves on a temp socket inside
//! a network namespace of the test's own, and clients connect as root and
//! as unprivileged uids. They need root and skip with a message otherwise.

mod access;
mod bootstrap;
mod daemon;
mod frames;
mod install;
mod netops;
mod ownership;
mod refusals;
mod restart;
mod sims;
mod support;
mod taps;
