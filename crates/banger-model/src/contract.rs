//! Names that banger's programs must agree on across process boundaries:
//! paths inside every guest (written by the image tools, used by the
//! VMMs and the first-boot script) and the host links banger-simvm makes
//! (swept by the daemon). One definition each, here.

use std::path::PathBuf;

/// Where banger's first-boot script lives in a guest (`init=` for images
/// without an initrd; a oneshot unit otherwise).
pub const FIRST_BOOT_PATH: &str = "/usr/local/libexec/banger-first-boot";

/// The key exchanges ssh to a guest tries first (`KexAlgorithms`; the rest
/// of ssh's list stays behind them): on a link to a guest on this host, the
/// default post-quantum hybrid costs 50–70 ms of CPU per connection.
pub const SSH_KEX_FIRST: &str = "^curve25519-sha256,curve25519-sha256@libssh.org";

/// Where, inside a sim guest, unix sockets stand in for vsock listeners.
pub const SIM_VSOCK_DIR: &str = "/run/banger/vsock";

/// The unix socket inside a sim guest that stands in for a vsock listener
/// on `port`: `/run/banger/vsock/<port>.sock`.
pub fn sim_guest_listener_path(port: u32) -> PathBuf {
    PathBuf::from(format!("{SIM_VSOCK_DIR}/{port}.sock"))
}

/// The prefix of the host ends of banger-simvm's veths.
pub const SIM_VETH_PREFIX: &str = "bsv";

/// Longest Linux interface name.
pub const MAX_IFNAME_LEN: usize = 15;

/// The host end of banger-simvm instance `id`'s veth: `bsv` + the id when
/// it is short and plain, otherwise `bsv` + a few id characters + a hash of
/// the id (Linux interface names hold 15 bytes).
pub fn sim_veth_name(id: &str) -> String {
    let plain: String = id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let room = MAX_IFNAME_LEN - SIM_VETH_PREFIX.len();
    if !plain.is_empty() && plain.len() <= room && plain.len() == id.len() {
        return format!("{SIM_VETH_PREFIX}{plain}");
    }
    // FNV-1a: stable across builds and platforms.
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let head: String = plain.chars().take(room - 8).collect();
    format!("{SIM_VETH_PREFIX}{head}{:08x}", hash as u32)
}
