//! banger-image integration tests: real layers applied as root, a real
//! registry (Debian's docker-registry) on 127.0.0.1, catalog downloads
//! from a local HTTP server, and a property test of tar → rootfs.

mod support;

mod catalog;
mod hostile;
mod layers;
mod prop;
mod pull;
