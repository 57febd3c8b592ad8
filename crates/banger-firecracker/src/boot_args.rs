//! The guest kernel command line banger sends, and a parser for it.
//!
//! The daemon builds the command line with [`BootArgs`]:
//!
//! ```text
//! console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw \
//!   ip=<guest-ip>::<gateway>:<netmask>:<hostname>:eth0:off:<dns0>:<dns1> \
//!   [init=/usr/local/libexec/banger-first-boot]
//! ```
//!
//! `banger-simvm` has no kernel to read it, so it parses the same string with
//! [`Cmdline::parse`] and [`IpConfig`] to configure the guest's `eth0`,
//! hostname and resolver.
//!
//! Firecracker itself appends `root=/dev/vda rw` (`ro` for a read-only
//! drive, `root=PARTUUID=…` when the drive has a partuuid) for the drive with
//! `is_root_device`, and `pci=off` unless started with `--enable-pci`. Our
//! copies are redundant for Firecracker but harmless (the kernel takes the
//! last value), and they keep the command line self-describing for simvm and
//! for `vm show`.

use std::fmt;
use std::net::Ipv4Addr;

/// banger's first-boot script, `init=` for images without an initrd.
pub use banger_model::contract::FIRST_BOOT_PATH as FIRST_BOOT_INIT;

/// The guest interface banger configures.
pub const GUEST_DEVICE: &str = "eth0";

/// A kernel command line under construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    /// `console=`; `ttyS0` is Firecracker's serial port.
    pub console: Option<String>,
    /// `root=` device and whether it is mounted read-write.
    pub root: Option<(String, bool)>,
    /// Static network configuration (`ip=`).
    pub ip: Option<IpConfig>,
    /// `init=`.
    pub init: Option<String>,
    /// Further parameters, appended verbatim after the ones above.
    pub extra: Vec<String>,
}

impl Default for BootArgs {
    /// `console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw`.
    fn default() -> Self {
        Self {
            console: Some("ttyS0".to_owned()),
            root: Some(("/dev/vda".to_owned(), true)),
            ip: None,
            init: None,
            extra: Vec::new(),
        }
    }
}

impl BootArgs {
    /// banger's command line for a guest at `ip`.
    pub fn new(ip: IpConfig) -> Self {
        Self {
            ip: Some(ip),
            ..Self::default()
        }
    }

    /// Boot through the first-boot script (images without an initrd).
    pub fn with_first_boot_init(mut self) -> Self {
        self.init = Some(FIRST_BOOT_INIT.to_owned());
        self
    }

    /// Appends one parameter.
    pub fn with_extra(mut self, param: impl Into<String>) -> Self {
        self.extra.push(param.into());
        self
    }
}

impl fmt::Display for BootArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(console) = &self.console {
            parts.push(format!("console={console}"));
        }
        parts.extend(["reboot=k", "panic=1", "pci=off"].map(String::from));
        if let Some((device, rw)) = &self.root {
            parts.push(format!("root={device}"));
            parts.push(if *rw { "rw" } else { "ro" }.to_owned());
        }
        if let Some(ip) = &self.ip {
            parts.push(format!("ip={ip}"));
        }
        if let Some(init) = &self.init {
            parts.push(format!("init={init}"));
        }
        parts.extend(self.extra.iter().cloned());
        f.write_str(&parts.join(" "))
    }
}

/// The kernel's static `ip=` form:
/// `<client>:<server>:<gateway>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>`.
/// banger leaves the server empty and uses `off` for autoconf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub client: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub netmask: Ipv4Addr,
    pub hostname: Option<String>,
    pub device: String,
    pub dns: Vec<Ipv4Addr>,
}

impl IpConfig {
    /// `client/prefix_len` via `gateway`, on `eth0`.
    pub fn new(
        client: Ipv4Addr,
        prefix_len: u8,
        gateway: Ipv4Addr,
        hostname: impl Into<String>,
    ) -> Result<Self, InvalidIpConfig> {
        Ok(Self {
            client,
            gateway: Some(gateway),
            netmask: netmask_from_prefix(prefix_len)?,
            hostname: Some(hostname.into()),
            device: GUEST_DEVICE.to_owned(),
            dns: Vec::new(),
        })
    }

    /// Adds up to two resolvers (the kernel knows `dns0` and `dns1`).
    pub fn with_dns(mut self, servers: impl IntoIterator<Item = Ipv4Addr>) -> Self {
        self.dns = servers.into_iter().take(2).collect();
        self
    }

    /// The netmask as a prefix length.
    pub fn prefix_len(&self) -> u8 {
        // A contiguous mask is checked on construction and parse.
        u32::from(self.netmask).leading_ones() as u8
    }

    /// Parses an `ip=` value. `Ok(None)` for the non-static forms the kernel
    /// knows (`off`, `none`, `dhcp`, `on`, `any`, …) and for a value without
    /// a client address.
    pub fn parse(value: &str) -> Result<Option<Self>, InvalidIpConfig> {
        let fields: Vec<&str> = value.split(':').collect();
        if fields.len() == 1 {
            return Ok(None);
        }
        let field = |i: usize| fields.get(i).copied().filter(|f| !f.is_empty());
        let addr = |i: usize, what: &'static str| -> Result<Option<Ipv4Addr>, InvalidIpConfig> {
            field(i)
                .map(|raw| {
                    raw.parse().map_err(|_| InvalidIpConfig::Address {
                        field: what,
                        value: raw.to_owned(),
                    })
                })
                .transpose()
        };
        let Some(client) = addr(0, "client")? else {
            return Ok(None);
        };
        let gateway = addr(2, "gateway")?;
        let netmask = addr(3, "netmask")?.ok_or(InvalidIpConfig::MissingNetmask)?;
        check_netmask(netmask)?;
        let hostname = field(4).map(str::to_owned);
        let device = field(5).unwrap_or(GUEST_DEVICE).to_owned();
        let dns = [addr(7, "dns0")?, addr(8, "dns1")?]
            .into_iter()
            .flatten()
            .collect();
        Ok(Some(Self {
            client,
            gateway,
            netmask,
            hostname,
            device,
            dns,
        }))
    }
}

impl fmt::Display for IpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |a: Option<Ipv4Addr>| a.map(|a| a.to_string()).unwrap_or_default();
        write!(
            f,
            "{}::{}:{}:{}:{}:off",
            self.client,
            opt(self.gateway),
            self.netmask,
            self.hostname.as_deref().unwrap_or(""),
            self.device,
        )?;
        if !self.dns.is_empty() {
            write!(
                f,
                ":{}:{}",
                opt(self.dns.first().copied()),
                opt(self.dns.get(1).copied())
            )?;
        }
        Ok(())
    }
}

/// Why an `ip=` value or prefix cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIpConfig {
    #[error("ip= {field} {value:?} is not an IPv4 address")]
    Address { field: &'static str, value: String },
    #[error("ip= has a client address but no netmask")]
    MissingNetmask,
    #[error("netmask {0} is not contiguous")]
    Netmask(Ipv4Addr),
    #[error("prefix length {0} is longer than 32")]
    PrefixLen(u8),
}

fn netmask_from_prefix(prefix_len: u8) -> Result<Ipv4Addr, InvalidIpConfig> {
    if prefix_len > 32 {
        return Err(InvalidIpConfig::PrefixLen(prefix_len));
    }
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    Ok(Ipv4Addr::from(bits))
}

fn check_netmask(mask: Ipv4Addr) -> Result<(), InvalidIpConfig> {
    let bits = u32::from(mask);
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        return Err(InvalidIpConfig::Netmask(mask));
    }
    Ok(())
}

/// A parsed kernel command line: `key[=value]` parameters up to a bare
/// `--` (what follows belongs to init). Double quotes group a value with
/// spaces, as the kernel allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    params: Vec<(String, Option<String>)>,
    init_args: Vec<String>,
}

impl Cmdline {
    pub fn parse(raw: &str) -> Self {
        let mut out = Self::default();
        let mut after_separator = false;
        for word in split_words(raw) {
            if after_separator {
                out.init_args.push(word);
                continue;
            }
            if word == "--" {
                after_separator = true;
                continue;
            }
            match word.split_once('=') {
                Some((key, value)) => out
                    .params
                    .push((key.to_owned(), Some(value.trim_matches('"').to_owned()))),
                None => out.params.push((word, None)),
            }
        }
        out
    }

    /// The value of the last `key=` (the kernel's rule for repeats).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Whether a bare flag such as `rw` is present.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.params.iter().any(|(k, v)| k == flag && v.is_none())
    }

    /// The static `ip=` configuration, if any.
    pub fn ip(&self) -> Result<Option<IpConfig>, InvalidIpConfig> {
        self.get("ip")
            .map(IpConfig::parse)
            .transpose()
            .map(Option::flatten)
    }

    /// `init=`.
    pub fn init(&self) -> Option<&str> {
        self.get("init")
    }

    /// Arguments after `--`.
    pub fn init_args(&self) -> &[String] {
        &self.init_args
    }
}

fn split_words(raw: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in raw.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_ascii_whitespace() && !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip() -> IpConfig {
        IpConfig::new(
            Ipv4Addr::new(172, 30, 0, 5),
            24,
            Ipv4Addr::new(172, 30, 0, 1),
            "calm-otter",
        )
        .unwrap()
    }

    #[test]
    fn renders_banger_contract() {
        let args =
            BootArgs::new(ip().with_dns([Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(9, 9, 9, 9)]))
                .with_first_boot_init();
        assert_eq!(
            args.to_string(),
            "console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw \
             ip=172.30.0.5::172.30.0.1:255.255.255.0:calm-otter:eth0:off:1.1.1.1:9.9.9.9 \
             init=/usr/local/libexec/banger-first-boot"
        );
        let without_dns = BootArgs::new(ip()).to_string();
        assert!(
            without_dns.ends_with("ip=172.30.0.5::172.30.0.1:255.255.255.0:calm-otter:eth0:off"),
            "{without_dns}"
        );
        crate::api::validate_cmdline(&args.to_string()).unwrap();
    }

    #[test]
    fn round_trips_through_parser() {
        let config = ip().with_dns([Ipv4Addr::new(10, 0, 0, 53)]);
        let rendered = BootArgs::new(config.clone())
            .with_first_boot_init()
            .to_string();
        let parsed = Cmdline::parse(&rendered);
        assert_eq!(parsed.ip().unwrap(), Some(config.clone()));
        assert_eq!(parsed.init(), Some(FIRST_BOOT_INIT));
        assert_eq!(parsed.get("root"), Some("/dev/vda"));
        assert!(parsed.has_flag("rw"));
        assert_eq!(config.prefix_len(), 24);
    }

    #[test]
    fn parses_kernel_forms() {
        let parsed = Cmdline::parse(
            "console=ttyS0 ip=10.1.2.3:10.1.2.9:10.1.2.1:255.255.0.0::eth1:off \
             foo=\"a b\" ip=10.1.2.4::10.1.2.1:255.255.255.252:h -- single x",
        );
        let ip = parsed.ip().unwrap().unwrap();
        assert_eq!(ip.client, Ipv4Addr::new(10, 1, 2, 4), "last ip= wins");
        assert_eq!(ip.prefix_len(), 30);
        assert_eq!(ip.device, "eth0");
        assert_eq!(ip.hostname.as_deref(), Some("h"));
        assert!(ip.dns.is_empty());
        assert_eq!(parsed.get("foo"), Some("a b"));
        assert_eq!(parsed.init_args(), ["single", "x"]);
        assert_eq!(parsed.get("single"), None);

        assert_eq!(IpConfig::parse("dhcp"), Ok(None));
        assert_eq!(IpConfig::parse("off"), Ok(None));
        assert_eq!(IpConfig::parse(":::::eth0:dhcp"), Ok(None));
        assert_eq!(
            IpConfig::parse("10.0.0.2::10.0.0.1"),
            Err(InvalidIpConfig::MissingNetmask)
        );
        assert_eq!(
            IpConfig::parse("10.0.0.2::10.0.0.1:255.0.255.0"),
            Err(InvalidIpConfig::Netmask(Ipv4Addr::new(255, 0, 255, 0)))
        );
        assert!(matches!(
            IpConfig::parse("10.0.0.x::10.0.0.1:255.0.0.0"),
            Err(InvalidIpConfig::Address {
                field: "client",
                ..
            })
        ));
        assert_eq!(Cmdline::parse("console=ttyS0").ip(), Ok(None));
    }

    #[test]
    fn prefix_lengths() {
        for (len, mask) in [
            (0, Ipv4Addr::new(0, 0, 0, 0)),
            (8, Ipv4Addr::new(255, 0, 0, 0)),
            (24, Ipv4Addr::new(255, 255, 255, 0)),
            (32, Ipv4Addr::new(255, 255, 255, 255)),
        ] {
            assert_eq!(netmask_from_prefix(len), Ok(mask));
        }
        assert_eq!(netmask_from_prefix(33), Err(InvalidIpConfig::PrefixLen(33)));
    }
}
