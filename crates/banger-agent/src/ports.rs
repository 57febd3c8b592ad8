//! Listening sockets, read from procfs (no `ss`).
//!
//! `/proc/net/{tcp,tcp6,udp,udp6}` list the sockets of the agent's network
//! namespace with their inodes; `/proc/<pid>/fd/*` links (`socket:[inode]`)
//! say which process holds each one. A socket held by several processes
//! (forked servers) is reported once, with the lowest pid.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use banger_guest::agent::{Listener, Proto};

/// `TCP_LISTEN` in `/proc/net/tcp*`.
const TCP_LISTEN: u8 = 0x0A;
/// `TCP_CLOSE`, which `/proc/net/udp*` shows for unconnected UDP sockets.
const UDP_UNCONNECTED: u8 = 0x07;

/// Reading the socket tables failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadListenersError {
    /// A `/proc/net` table exists but could not be read.
    #[error("reading socket table {path}")]
    Read {
        /// The table.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// One socket from a `/proc/net` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEntry {
    /// TCP or UDP.
    pub proto: Proto,
    /// Local address.
    pub address: IpAddr,
    /// Local port.
    pub port: u16,
    /// Socket inode.
    pub inode: u64,
}

/// The listening TCP and bound UDP sockets (IPv4 and IPv6) visible under
/// `proc_root` (normally `/proc`), sorted by protocol, port and address.
pub fn read_listeners(proc_root: &Path) -> Result<Vec<Listener>, ReadListenersError> {
    let tables = [
        ("net/tcp", Proto::Tcp, false),
        ("net/tcp6", Proto::Tcp, true),
        ("net/udp", Proto::Udp, false),
        ("net/udp6", Proto::Udp, true),
    ];
    let mut sockets = Vec::new();
    for (table, proto, v6) in tables {
        let path = proc_root.join(table);
        match std::fs::read_to_string(&path) {
            Ok(text) => sockets.extend(parse_table(&text, proto, v6)),
            // No IPv6 in this kernel, or no such table: nothing listens there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(ReadListenersError::Read { path, source }),
        }
    }

    let wanted: HashSet<u64> = sockets.iter().map(|s| s.inode).collect();
    let owners = socket_owners(proc_root, &wanted);
    let mut listeners: Vec<Listener> = sockets
        .into_iter()
        .map(|socket| {
            let pid = owners.get(&socket.inode).copied();
            let (process, command) = match pid {
                Some(pid) => process_identity(proc_root, pid),
                None => (None, None),
            };
            Listener {
                proto: socket.proto,
                address: socket.address,
                port: socket.port,
                pid,
                process,
                command,
            }
        })
        .collect();
    listeners.sort_by_key(|l| (l.proto, l.port, l.address));
    Ok(listeners)
}

/// The listening (TCP) or unconnected bound (UDP) sockets of one
/// `/proc/net/{tcp,udp}{,6}` table. Malformed lines are skipped.
pub fn parse_table(text: &str, proto: Proto, v6: bool) -> Vec<SocketEntry> {
    let wanted_state = match proto {
        Proto::Tcp => TCP_LISTEN,
        Proto::Udp => UDP_UNCONNECTED,
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 {
                return None;
            }
            let state = u8::from_str_radix(fields[3], 16).ok()?;
            if state != wanted_state {
                return None;
            }
            let (address, port) = parse_endpoint(fields[1], v6)?;
            if port == 0 {
                return None;
            }
            let inode = fields[9].parse().ok()?;
            Some(SocketEntry {
                proto,
                address,
                port,
                inode,
            })
        })
        .collect()
}

/// Decodes `0100007F:1F90` (IPv4) or the 32-hex-digit IPv6 form. The kernel
/// prints each 32-bit word of the address as a host-order integer.
pub fn parse_endpoint(text: &str, v6: bool) -> Option<(IpAddr, u16)> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let address = if v6 {
        if addr.len() != 32 || !addr.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
            chunk.copy_from_slice(&word(&addr[i * 8..i * 8 + 8])?);
        }
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        if addr.len() != 8 {
            return None;
        }
        IpAddr::V4(Ipv4Addr::from(word(addr)?))
    };
    Some((address, port))
}

/// Maps each wanted socket inode to the lowest pid holding it.
fn socket_owners(proc_root: &Path, wanted: &HashSet<u64>) -> HashMap<u64, u32> {
    let mut owners: HashMap<u64, u32> = HashMap::new();
    if wanted.is_empty() {
        return owners;
    }
    let Ok(procs) = std::fs::read_dir(proc_root) else {
        return owners;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go, and some fd dirs are unreadable: skip those.
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = socket_inode(&link) else {
                continue;
            };
            if wanted.contains(&inode) {
                owners
                    .entry(inode)
                    .and_modify(|owner| *owner = (*owner).min(pid))
                    .or_insert(pid);
            }
        }
    }
    owners
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &Path) -> Option<u64> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// `/proc/<pid>/comm` and `/proc/<pid>/cmdline` (arguments joined by spaces).
fn process_identity(proc_root: &Path, pid: u32) -> (Option<String>, Option<String>) {
    let dir = proc_root.join(pid.to_string());
    let process = std::fs::read_to_string(dir.join("comm"))
        .ok()
        .map(|comm| comm.trim_end_matches('\n').to_owned())
        .filter(|comm| !comm.is_empty());
    let command = std::fs::read(dir.join("cmdline")).ok().and_then(|raw| {
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        (!args.is_empty()).then(|| args.join(" "))
    });
    (process, command)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 100 0 0 10 0
   3: garbage
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 100 0 0 10 0
";
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 3001 2 0000000000000000 0
  101: 0100007F:E2F1 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 3002 2 0000000000000000 0
";

    #[test]
    fn tcp_keeps_only_listeners() {
        let entries = parse_table(TCP, Proto::Tcp, false);
        assert_eq!(
            entries,
            vec![
                SocketEntry {
                    proto: Proto::Tcp,
                    address: "127.0.0.1".parse().expect("ip"),
                    port: 8080,
                    inode: 1001
                },
                SocketEntry {
                    proto: Proto::Tcp,
                    address: "0.0.0.0".parse().expect("ip"),
                    port: 22,
                    inode: 1002
                },
            ]
        );
    }

    #[test]
    fn tcp6_addresses_decode() {
        let entries = parse_table(TCP6, Proto::Tcp, true);
        let got: Vec<(IpAddr, u16)> = entries.iter().map(|e| (e.address, e.port)).collect();
        assert_eq!(
            got,
            vec![
                ("::".parse().expect("ip"), 22),
                ("::1".parse().expect("ip"), 80)
            ]
        );
    }

    #[test]
    fn udp_keeps_only_unconnected_bound_sockets() {
        let entries = parse_table(UDP, Proto::Udp, false);
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0].address,
            "127.0.0.53".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(entries[0].port, 53);
        assert_eq!(entries[0].inode, 3001);
    }

    #[test]
    fn endpoint_rejects_malformed_input() {
        assert_eq!(parse_endpoint("0100007F", false), None);
        assert_eq!(parse_endpoint("0100007:0016", false), None);
        assert_eq!(parse_endpoint("zz00007F:0016", false), None);
        assert_eq!(parse_endpoint("0100007F:0016", true), None);
    }

    #[test]
    fn fake_proc_tree_maps_sockets_to_processes() {
        let root = tempfile::tempdir().expect("tempdir");
        let proc_root = root.path();
        fs_err::create_dir_all(proc_root.join("net")).expect("net dir");
        fs_err::write(proc_root.join("net/tcp"), TCP).expect("tcp");
        fs_err::write(proc_root.join("net/udp"), UDP).expect("udp");
        // No tcp6/udp6: an IPv6-less kernel.
        for (pid, comm, cmdline, inodes) in [
            (42u32, "sshd", "/usr/sbin/sshd\0-D\0", &[1002u64][..]),
            (41, "sshd", "sshd: worker\0", &[1002]),
            (7, "web", "python3\0-m\0http.server\0", &[1001, 3001]),
        ] {
            let dir = proc_root.join(pid.to_string());
            fs_err::create_dir_all(dir.join("fd")).expect("fd dir");
            fs_err::write(dir.join("comm"), format!("{comm}\n")).expect("comm");
            fs_err::write(dir.join("cmdline"), cmdline).expect("cmdline");
            for (fd, inode) in inodes.iter().enumerate() {
                let link = dir.join("fd").join(fd.to_string());
                fs_err::os::unix::fs::symlink(format!("socket:[{inode}]"), link).expect("fd link");
            }
            fs_err::os::unix::fs::symlink("/dev/null", dir.join("fd/99")).expect("non-socket fd");
        }

        let listeners = read_listeners(proc_root).expect("listeners");
        type Row<'a> = (Proto, u16, Option<u32>, Option<&'a str>, Option<&'a str>);
        let summary: Vec<Row<'_>> = listeners
            .iter()
            .map(|l| {
                (
                    l.proto,
                    l.port,
                    l.pid,
                    l.process.as_deref(),
                    l.command.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (Proto::Tcp, 22, Some(41), Some("sshd"), Some("sshd: worker")),
                (
                    Proto::Tcp,
                    8080,
                    Some(7),
                    Some("web"),
                    Some("python3 -m http.server")
                ),
                (
                    Proto::Udp,
                    53,
                    Some(7),
                    Some("web"),
                    Some("python3 -m http.server")
                ),
            ]
        );
    }
}
