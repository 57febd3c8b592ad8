//! Real tests of banger-net: netlink, TUN ioctls, iptables and DNS, each in
//! a network namespace of its own (see `support`). They need root and skip
//! with a message otherwise.

mod bridge;
mod dns;
mod nat;
mod pool;
mod support;
mod tap;
