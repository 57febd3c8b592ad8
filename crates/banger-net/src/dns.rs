//! The `.vm` DNS server: `<name>.vm` A records for running VMs, served on a
//! loopback address over UDP and TCP with hickory-server.
//!
//! Answers, all authoritative:
//! - `<name>.vm` A (or ANY) for a known name: the VM's address.
//! - a known name, any other type: NOERROR with no answers (and the zone's
//!   SOA, so resolvers cache the absence briefly).
//! - any other name under `vm.`: NXDOMAIN (with the SOA).
//! - the apex `vm.`: its SOA for SOA queries, NOERROR/empty otherwise.
//! - names outside `vm.`, classes other than IN: REFUSED (this is not a
//!   recursive resolver).
//!
//! Names are matched case-insensitively. Records live in memory in
//! [`DnsRecords`], a cheap-to-clone handle the daemon updates at runtime.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use async_trait::async_trait;
use banger_model::Name as VmName;
use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

/// The zone banger serves.
pub const ZONE: &str = "vm.";

/// TTL of A records: short, a name can move to another VM at any time.
pub const RECORD_TTL: u32 = 5;

/// How long an idle TCP client may keep its connection.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Attempts at finding a port free for both UDP and TCP when asked for port 0.
const EPHEMERAL_PORT_ATTEMPTS: usize = 20;

/// The in-memory `.vm` records: VM name → IPv4 address. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct DnsRecords {
    inner: Arc<RwLock<HashMap<String, Ipv4Addr>>>,
}

impl DnsRecords {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Ipv4Addr>> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Ipv4Addr>> {
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Points `<name>.vm` at `ip`; returns the previous address.
    pub fn set(&self, name: &VmName, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        self.write().insert(name.as_str().to_owned(), ip)
    }

    /// Forgets `<name>.vm`; returns its address.
    pub fn remove(&self, name: &VmName) -> Option<Ipv4Addr> {
        self.write().remove(name.as_str())
    }

    /// Replaces every record at once (daemon start: rebuilt from running VMs).
    pub fn replace_all(&self, records: impl IntoIterator<Item = (VmName, Ipv4Addr)>) {
        let fresh: HashMap<String, Ipv4Addr> = records
            .into_iter()
            .map(|(name, ip)| (name.as_str().to_owned(), ip))
            .collect();
        *self.write() = fresh;
    }

    /// The address of a label, matched case-insensitively.
    pub fn get(&self, label: &str) -> Option<Ipv4Addr> {
        self.read().get(&label.to_ascii_lowercase()).copied()
    }

    /// Every record, sorted by name.
    pub fn snapshot(&self) -> BTreeMap<String, Ipv4Addr> {
        self.read().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }
}

/// What the zone has to say about one question.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Refused,
    NxDomain,
    /// NOERROR with no records.
    NoData,
    Address(Ipv4Addr),
    Soa,
}

/// The request handler: the `.vm` zone over [`DnsRecords`].
#[derive(Debug)]
struct VmZone {
    records: DnsRecords,
    zone: LowerName,
    soa: Record,
}

impl VmZone {
    fn new(records: DnsRecords) -> Self {
        let origin = Name::from_ascii(ZONE).expect("the zone name is valid");
        let soa = SOA::new(
            Name::from_ascii("ns.vm.").expect("valid name"),
            Name::from_ascii("hostmaster.vm.").expect("valid name"),
            1,
            3600,
            600,
            86_400,
            RECORD_TTL,
        );
        Self {
            records,
            zone: LowerName::new(&origin),
            soa: Record::from_rdata(origin, RECORD_TTL, RData::SOA(soa)),
        }
    }

    fn answer(&self, name: &LowerName, class: DNSClass, kind: RecordType) -> Answer {
        if class != DNSClass::IN && class != DNSClass::ANY {
            return Answer::Refused;
        }
        if !self.zone.zone_of(name) {
            return Answer::Refused;
        }
        let name = Name::from(name);
        let labels: Vec<&[u8]> = name.iter().collect();
        match labels.as_slice() {
            [_zone] => match kind {
                RecordType::SOA => Answer::Soa,
                _ => Answer::NoData,
            },
            [label, _zone] => {
                let found = std::str::from_utf8(label)
                    .ok()
                    .and_then(|label| self.records.get(label));
                match (found, kind) {
                    (None, _) => Answer::NxDomain,
                    (Some(ip), RecordType::A | RecordType::ANY) => Answer::Address(ip),
                    (Some(_), _) => Answer::NoData,
                }
            }
            _ => Answer::NxDomain,
        }
    }

    async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        let mut edns = None;
        if let Some(request_edns) = &request.edns {
            let mut ours = Edns::new();
            ours.set_max_payload(request_edns.max_payload().max(512));
            ours.set_version(0);
            if request_edns.version() > 0 {
                ours.set_rcode_high(ResponseCode::BADVERS.high());
                let builder = MessageResponseBuilder::new(&request.queries, Some(&ours));
                let response = builder.error_msg(&request.metadata, ResponseCode::BADVERS);
                return response_handle.send_response(response).await;
            }
            edns = Some(ours);
        }
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());

        if request.metadata.message_type != MessageType::Query {
            let response = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return response_handle.send_response(response).await;
        }
        if request.metadata.op_code != OpCode::Query {
            let response = builder.error_msg(&request.metadata, ResponseCode::NotImp);
            return response_handle.send_response(response).await;
        }
        let info = match request.request_info() {
            Ok(info) => info,
            Err(_) => {
                let response = builder.error_msg(&request.metadata, ResponseCode::FormErr);
                return response_handle.send_response(response).await;
            }
        };
        let query = info.query;
        let answer = self.answer(query.name(), query.query_class(), query.query_type());
        tracing::trace!(name = %query.name(), kind = %query.query_type(), ?answer, "dns query");

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = answer != Answer::Refused;
        let mut answers = Vec::new();
        let mut soa = Vec::new();
        match answer {
            Answer::Refused => metadata.response_code = ResponseCode::Refused,
            Answer::NxDomain => {
                metadata.response_code = ResponseCode::NXDomain;
                soa.push(&self.soa);
            }
            Answer::NoData => soa.push(&self.soa),
            Answer::Soa => answers.push(self.soa.clone()),
            Answer::Address(ip) => answers.push(Record::from_rdata(
                query.original().name().clone(),
                RECORD_TTL,
                RData::A(A(ip)),
            )),
        }
        let response = builder.build(metadata, answers.iter(), [], soa, []);
        response_handle.send_response(response).await
    }
}

#[async_trait]
impl RequestHandler for VmZone {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        match self.respond(request, response_handle).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(error = %error, "cannot send DNS response");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                hickory_proto::op::Header {
                    metadata,
                    counts: Default::default(),
                }
                .into()
            }
        }
    }
}

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartDnsError {
    #[error(
        "cannot listen for DNS over {protocol} on {addr}; is another bangerd or DNS server using it? (network.dns_listen sets the address)"
    )]
    Bind {
        protocol: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Why the DNS server did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownDnsError {
    #[error("DNS server on {addr} stopped with an error")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: hickory_server::net::NetError,
    },
}

/// A running `.vm` DNS server. Dropping it stops the listeners abruptly;
/// [`DnsServer::shutdown`] stops them gracefully.
pub struct DnsServer {
    records: DnsRecords,
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    server: Server<VmZone>,
}

impl fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsServer")
            .field("udp_addr", &self.udp_addr)
            .field("tcp_addr", &self.tcp_addr)
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), StartDnsError> {
    let bind_udp = |addr| async move {
        UdpSocket::bind(addr)
            .await
            .map_err(|source| StartDnsError::Bind {
                protocol: "UDP",
                addr,
                source,
            })
    };
    let bind_tcp = |addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartDnsError::Bind {
                protocol: "TCP",
                addr,
                source,
            })
    };
    if addr.port() != 0 {
        return Ok((bind_udp(addr).await?, bind_tcp(addr).await?));
    }
    // Port 0: find one port free for both protocols.
    let mut last_error = None;
    for _ in 0..EPHEMERAL_PORT_ATTEMPTS {
        let udp = bind_udp(addr).await?;
        let port = udp.local_addr().map_err(|source| StartDnsError::Bind {
            protocol: "UDP",
            addr,
            source,
        })?;
        match bind_tcp(port).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.expect("at least one attempt was made"))
}

impl DnsServer {
    /// Binds UDP and TCP on `listen` (port 0 picks one free port for both)
    /// and serves `records` until shut down, on the current tokio runtime.
    pub async fn start(listen: SocketAddr, records: DnsRecords) -> Result<Self, StartDnsError> {
        let (udp, tcp) = bind_pair(listen).await?;
        let local = |protocol, result: io::Result<SocketAddr>| {
            result.map_err(|source| StartDnsError::Bind {
                protocol,
                addr: listen,
                source,
            })
        };
        let udp_addr = local("UDP", udp.local_addr())?;
        let tcp_addr = local("TCP", tcp.local_addr())?;
        let mut server = Server::new(VmZone::new(records.clone()));
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, 64);
        tracing::info!(%udp_addr, %tcp_addr, "DNS server for .vm listening");
        Ok(Self {
            records,
            udp_addr,
            tcp_addr,
            server,
        })
    }

    /// The UDP listener's address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The TCP listener's address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The records it serves (shared: updates are visible at once).
    pub fn records(&self) -> &DnsRecords {
        &self.records
    }

    /// Stops accepting queries and waits for the listeners to end.
    pub async fn shutdown(mut self) -> Result<(), ShutdownDnsError> {
        let addr = self.udp_addr;
        self.server
            .shutdown_gracefully()
            .await
            .map_err(|source| ShutdownDnsError::Serve { addr, source })?;
        tracing::info!(%addr, "DNS server stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone_with(records: &[(&str, Ipv4Addr)]) -> VmZone {
        let store = DnsRecords::new();
        for (name, ip) in records {
            store.set(&VmName::parse(name).unwrap(), *ip);
        }
        VmZone::new(store)
    }

    fn ask(zone: &VmZone, name: &str, kind: RecordType) -> Answer {
        let name = LowerName::new(&Name::from_ascii(name).unwrap());
        zone.answer(&name, DNSClass::IN, kind)
    }

    #[test]
    fn answers_by_name_and_type() {
        let ip = Ipv4Addr::new(172, 30, 0, 2);
        let zone = zone_with(&[("web", ip)]);
        assert_eq!(ask(&zone, "web.vm.", RecordType::A), Answer::Address(ip));
        assert_eq!(ask(&zone, "WeB.Vm.", RecordType::A), Answer::Address(ip));
        assert_eq!(ask(&zone, "web.vm", RecordType::ANY), Answer::Address(ip));
        assert_eq!(ask(&zone, "web.vm.", RecordType::AAAA), Answer::NoData);
        assert_eq!(ask(&zone, "db.vm.", RecordType::A), Answer::NxDomain);
        assert_eq!(ask(&zone, "a.web.vm.", RecordType::A), Answer::NxDomain);
        assert_eq!(ask(&zone, "vm.", RecordType::SOA), Answer::Soa);
        assert_eq!(ask(&zone, "vm.", RecordType::A), Answer::NoData);
        assert_eq!(ask(&zone, "example.com.", RecordType::A), Answer::Refused);
        assert_eq!(ask(&zone, "web.vmx.", RecordType::A), Answer::Refused);
        assert_eq!(ask(&zone, ".", RecordType::NS), Answer::Refused);
        let name = LowerName::new(&Name::from_ascii("web.vm.").unwrap());
        assert_eq!(
            zone.answer(&name, DNSClass::CH, RecordType::A),
            Answer::Refused
        );
    }

    #[test]
    fn records_update_in_place() {
        let records = DnsRecords::new();
        let zone = VmZone::new(records.clone());
        let web = VmName::parse("web").unwrap();
        let ip = Ipv4Addr::new(10, 0, 0, 2);
        assert_eq!(ask(&zone, "web.vm.", RecordType::A), Answer::NxDomain);
        assert_eq!(records.set(&web, ip), None);
        assert_eq!(ask(&zone, "web.vm.", RecordType::A), Answer::Address(ip));
        assert_eq!(records.remove(&web), Some(ip));
        assert_eq!(ask(&zone, "web.vm.", RecordType::A), Answer::NxDomain);
        records.set(&web, ip);
        records.replace_all([(VmName::parse("db").unwrap(), ip)]);
        assert_eq!(ask(&zone, "web.vm.", RecordType::A), Answer::NxDomain);
        assert_eq!(ask(&zone, "db.vm.", RecordType::A), Answer::Address(ip));
        assert_eq!(records.get("DB"), Some(ip));
        assert_eq!(records.snapshot().len(), 1);
        assert!(!records.is_empty());
    }
}
