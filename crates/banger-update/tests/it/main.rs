//! banger-update against a real HTTP server on loopback and releases signed
//! with a key made for each test.

mod fetch;
