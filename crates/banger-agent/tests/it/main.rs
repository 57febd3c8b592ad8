//! Integration tests of `banger-vsock-agent`: the real binary, driven through
//! banger-guest's client.

mod serve;
mod session;
mod static_binary;
