//! Published ports: a host address and port forwarded to a guest port,
//! written as `docker run -p` writes them: `[HOST_ADDR:]HOST_PORT:GUEST_PORT`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One forward: connections to `host_addr:host_port` on the host reach
/// `guest_port` in the guest. TCP only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortForward {
    pub host_addr: IpAddr,
    pub host_port: u16,
    pub guest_port: u16,
}

impl PortForward {
    /// Loopback unless an address is given, as `docker run -p` does not
    /// (a sandbox is not published to the network by default).
    pub const DEFAULT_HOST_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortForwardError {
    #[error(
        "{0:?} is not a port to publish; write [HOST_ADDR:]HOST_PORT:GUEST_PORT, e.g. 8080:80 or 0.0.0.0:8080:80"
    )]
    Shape(String),
    #[error("{0:?} is not a port (1-65535)")]
    Port(String),
    #[error("{0:?} is not an IP address")]
    Address(String),
    #[error("{0:?}: only TCP ports are published")]
    Protocol(String),
}

impl FromStr for PortForward {
    type Err = PortForwardError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let spec = match raw.rsplit_once('/') {
            Some((spec, "tcp")) => spec,
            Some(_) => return Err(PortForwardError::Protocol(raw.to_owned())),
            None => raw,
        };
        let (addr, ports) = match spec.strip_prefix('[') {
            // [v6]:HOST:GUEST
            Some(rest) => {
                let (addr, ports) = rest
                    .split_once("]:")
                    .ok_or_else(|| PortForwardError::Shape(raw.to_owned()))?;
                (Some(addr), ports)
            }
            None => match spec.matches(':').count() {
                1 => (None, spec),
                2 => {
                    let (addr, ports) = spec.split_once(':').expect("two colons");
                    (Some(addr), ports)
                }
                _ => return Err(PortForwardError::Shape(raw.to_owned())),
            },
        };
        let (host, guest) = ports
            .split_once(':')
            .ok_or_else(|| PortForwardError::Shape(raw.to_owned()))?;
        let port = |text: &str| match text.parse::<u16>() {
            Ok(0) | Err(_) => Err(PortForwardError::Port(text.to_owned())),
            Ok(port) => Ok(port),
        };
        let host_addr = match addr {
            None | Some("") => Self::DEFAULT_HOST_ADDR,
            Some(addr) => addr
                .parse()
                .map_err(|_| PortForwardError::Address(addr.to_owned()))?,
        };
        Ok(Self {
            host_addr,
            host_port: port(host)?,
            guest_port: port(guest)?,
        })
    }
}

impl fmt::Display for PortForward {
    /// `127.0.0.1:8080:80`, `[::1]:8080:80`: what was typed, normalised.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_addr {
            IpAddr::V4(addr) => write!(f, "{addr}:{}:{}", self.host_port, self.guest_port),
            IpAddr::V6(addr) => write!(f, "[{addr}]:{}:{}", self.host_port, self.guest_port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<PortForward, PortForwardError> {
        raw.parse()
    }

    #[test]
    fn docker_forms_parse_and_print_back() {
        for (raw, shown) in [
            ("8080:80", "127.0.0.1:8080:80"),
            ("8080:80/tcp", "127.0.0.1:8080:80"),
            ("0.0.0.0:8080:80", "0.0.0.0:8080:80"),
            ("192.168.1.5:443:8443", "192.168.1.5:443:8443"),
            ("[::1]:8080:80", "[::1]:8080:80"),
            (":9000:9000", "127.0.0.1:9000:9000"),
        ] {
            let forward = parse(raw).unwrap_or_else(|err| panic!("{raw}: {err}"));
            assert_eq!(forward.to_string(), shown, "{raw}");
            assert_eq!(parse(shown).unwrap(), forward);
        }
    }

    #[test]
    fn bad_forms_say_what_is_wrong() {
        assert!(matches!(parse("80"), Err(PortForwardError::Shape(_))));
        assert!(matches!(parse("a:b:c:d"), Err(PortForwardError::Shape(_))));
        assert!(matches!(parse("8080:0"), Err(PortForwardError::Port(_))));
        assert!(matches!(parse("70000:80"), Err(PortForwardError::Port(_))));
        assert!(matches!(
            parse("web:8080:80"),
            Err(PortForwardError::Address(_))
        ));
        assert!(matches!(
            parse("53:53/udp"),
            Err(PortForwardError::Protocol(_))
        ));
        let err = parse("80").unwrap_err().to_string();
        assert!(err.contains("e.g. 8080:80"), "{err}");
    }
}
