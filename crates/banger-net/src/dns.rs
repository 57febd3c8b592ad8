//! The `.vm` DNS server: `<name>.vm` A records for running VMs, served on a
//! loopback address over UDP (our own threads) and TCP (hickory-server).
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
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use async_trait::async_trait;
use banger_model::Name as VmName;
use hickory_proto::op::{Edns, Header, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use nix::sys::socket::{Shutdown, shutdown};
use tokio::net::TcpListener;

/// The zone banger serves.
pub const ZONE: &str = "vm.";

/// TTL of A records: short, a name can move to another VM at any time.
pub const RECORD_TTL: u32 = 5;

/// How long an idle TCP client may keep its connection.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Threads answering UDP queries.
const UDP_THREADS: usize = 2;

/// The largest UDP query read; anything longer is cut and answered FORMERR.
const UDP_MAX_QUERY: usize = 4096;

/// How often UDP threads look at their stop flag while idle.
const UDP_STOP_POLL: Duration = Duration::from_millis(250);

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

    /// The reply to one wire-format message, or `None` when it deserves
    /// none (it is itself a response, or too short to have a header).
    fn reply_to_bytes(&self, bytes: &[u8]) -> Option<Message> {
        match Message::from_vec(bytes) {
            Ok(request) => self.reply(&request),
            Err(_) => {
                let header = Header::read(&mut BinDecoder::new(bytes)).ok()?;
                if header.metadata.message_type != MessageType::Query {
                    return None;
                }
                let mut reply = Message::response(header.metadata.id, header.metadata.op_code);
                reply.metadata.response_code = ResponseCode::FormErr;
                Some(reply)
            }
        }
    }

    /// The reply to a decoded message.
    fn reply(&self, request: &Message) -> Option<Message> {
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
        reply.metadata = Metadata::response_from_request(&request.metadata);
        reply.queries.clone_from(&request.queries);
        if let Some(request_edns) = &request.edns {
            let mut ours = Edns::new();
            ours.set_max_payload(request_edns.max_payload().max(512));
            ours.set_version(0);
            reply.edns = Some(ours);
            if request_edns.version() > 0 {
                reply.metadata.response_code = ResponseCode::BADVERS;
                return Some(reply);
            }
        }
        if request.metadata.op_code != OpCode::Query {
            reply.metadata.response_code = ResponseCode::NotImp;
            return Some(reply);
        }
        let [query] = request.queries.as_slice() else {
            reply.metadata.response_code = ResponseCode::FormErr;
            return Some(reply);
        };
        let name = LowerName::new(query.name());
        let answer = self.answer(&name, query.query_class(), query.query_type());
        tracing::trace!(name = %query.name(), kind = %query.query_type(), ?answer, "dns query");

        reply.metadata.authoritative = answer != Answer::Refused;
        match answer {
            Answer::Refused => reply.metadata.response_code = ResponseCode::Refused,
            Answer::NxDomain => {
                reply.metadata.response_code = ResponseCode::NXDomain;
                reply.authorities.push(self.soa.clone());
            }
            Answer::NoData => reply.authorities.push(self.soa.clone()),
            Answer::Soa => reply.answers.push(self.soa.clone()),
            Answer::Address(ip) => reply.answers.push(Record::from_rdata(
                query.name().clone(),
                RECORD_TTL,
                RData::A(A(ip)),
            )),
        }
        Some(reply)
    }
}

/// TCP goes through hickory-server, which owns connection handling; the
/// reply itself is the same one UDP gets.
#[async_trait]
impl RequestHandler for VmZone {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let failed = |response_code| {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = response_code;
            ResponseInfo::from(Header {
                metadata,
                counts: Default::default(),
            })
        };
        let Some(reply) = self.reply_to_bytes(request.as_slice()) else {
            return failed(ResponseCode::FormErr);
        };
        let builder = MessageResponseBuilder::new(&request.queries, reply.edns.as_ref());
        let response = builder.build(
            reply.metadata,
            reply.answers.iter(),
            [],
            reply.authorities.iter(),
            [],
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(error = %error, "cannot send DNS response");
                failed(ResponseCode::ServFail)
            }
        }
    }
}

/// UDP is answered on plain threads, each a blocking receive–answer–send
/// loop over one shared socket: several times the queries per second of a
/// task per query, which is what a resolver in front of it sends.
#[derive(Debug)]
struct UdpWorkers {
    socket: Arc<std::net::UdpSocket>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl UdpWorkers {
    fn start(socket: std::net::UdpSocket, zone: Arc<VmZone>) -> io::Result<Self> {
        // A fallback wake-up: the stop flag is seen within this even if
        // shutting the socket down did not wake a receiver.
        socket.set_read_timeout(Some(UDP_STOP_POLL))?;
        let socket = Arc::new(socket);
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Self {
            socket: socket.clone(),
            stop: stop.clone(),
            threads: Vec::with_capacity(UDP_THREADS),
        };
        for index in 0..UDP_THREADS {
            let (socket, stop, zone) = (socket.clone(), stop.clone(), zone.clone());
            let thread = std::thread::Builder::new()
                .name(format!("dns-udp-{index}"))
                .spawn(move || serve_udp(&socket, &stop, &zone))?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Tells the threads to stop and wakes any blocked in a receive.
    fn signal_stop(&self) {
        self.stop.store(true, Ordering::Release);
        // Shutting down an unconnected UDP socket reports ENOTCONN on Linux
        // but still wakes its receivers, which then read 0 bytes.
        let _ = shutdown(self.socket.as_raw_fd(), Shutdown::Read);
    }

    /// Stops the threads and waits for them (and so for the socket) to end.
    fn stop_and_join(mut self) {
        self.signal_stop();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for UdpWorkers {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

fn serve_udp(socket: &std::net::UdpSocket, stop: &AtomicBool, zone: &VmZone) {
    let mut buffer = [0u8; UDP_MAX_QUERY];
    while !stop.load(Ordering::Acquire) {
        let (len, peer) = match socket.recv_from(&mut buffer) {
            Ok(received) => received,
            Err(error) => {
                if !matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) {
                    tracing::debug!(%error, "DNS receive failed");
                }
                continue;
            }
        };
        let Some(reply) = zone.reply_to_bytes(&buffer[..len]) else {
            continue;
        };
        match reply.to_vec() {
            Ok(bytes) => {
                if let Err(error) = socket.send_to(&bytes, peer) {
                    tracing::debug!(%error, %peer, "cannot send DNS response");
                }
            }
            Err(error) => tracing::debug!(%error, "cannot encode DNS response"),
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
    udp: UdpWorkers,
    tcp: Server<VmZone>,
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

async fn bind_pair(addr: SocketAddr) -> Result<(std::net::UdpSocket, TcpListener), StartDnsError> {
    let bind_udp = |addr| async move {
        std::net::UdpSocket::bind(addr).map_err(|source| StartDnsError::Bind {
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
        let udp =
            UdpWorkers::start(udp, Arc::new(VmZone::new(records.clone()))).map_err(|source| {
                StartDnsError::Bind {
                    protocol: "UDP",
                    addr: udp_addr,
                    source,
                }
            })?;
        let mut server = Server::new(VmZone::new(records.clone()));
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, 64);
        tracing::info!(%udp_addr, %tcp_addr, "DNS server for .vm listening");
        Ok(Self {
            records,
            udp_addr,
            tcp_addr,
            udp,
            tcp: server,
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
    pub async fn shutdown(self) -> Result<(), ShutdownDnsError> {
        let Self {
            udp_addr: addr,
            udp,
            mut tcp,
            ..
        } = self;
        let udp_stopped = tokio::task::spawn_blocking(move || udp.stop_and_join());
        let tcp_stopped = tcp.shutdown_gracefully().await;
        let _ = udp_stopped.await;
        tcp_stopped.map_err(|source| ShutdownDnsError::Serve { addr, source })?;
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

    fn query(name: &str, kind: RecordType) -> Message {
        let mut message = Message::new(4242, MessageType::Query, OpCode::Query);
        message.add_query(hickory_proto::op::Query::query(
            Name::from_ascii(name).unwrap(),
            kind,
        ));
        message
    }

    fn reply(zone: &VmZone, request: &Message) -> Message {
        let bytes = zone
            .reply_to_bytes(&request.to_vec().unwrap())
            .expect("a reply");
        // What goes on the wire must decode again.
        Message::from_vec(&bytes.to_vec().unwrap()).unwrap()
    }

    #[test]
    fn wire_replies_carry_the_question_and_the_right_code() {
        let ip = Ipv4Addr::new(172, 30, 0, 2);
        let zone = zone_with(&[("web", ip)]);

        let found = reply(&zone, &query("WEB.vm.", RecordType::A));
        assert_eq!(found.metadata.id, 4242);
        assert_eq!(found.metadata.message_type, MessageType::Response);
        assert!(found.metadata.authoritative);
        assert_eq!(found.queries.len(), 1);
        assert_eq!(found.answers.len(), 1);
        assert_eq!(
            found.answers[0].name.to_ascii(),
            "WEB.vm.",
            "asked case kept"
        );
        assert_eq!(found.answers[0].data, RData::A(A(ip)));

        let missing = reply(&zone, &query("db.vm.", RecordType::A));
        assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(missing.authorities.len(), 1);

        let outside = reply(&zone, &query("example.com.", RecordType::A));
        assert_eq!(outside.metadata.response_code, ResponseCode::Refused);
        assert!(!outside.metadata.authoritative);

        let mut update = query("web.vm.", RecordType::A);
        update.metadata.op_code = OpCode::Update;
        assert_eq!(
            reply(&zone, &update).metadata.response_code,
            ResponseCode::NotImp
        );

        let mut two = query("web.vm.", RecordType::A);
        two.add_query(hickory_proto::op::Query::query(
            Name::from_ascii("db.vm.").unwrap(),
            RecordType::A,
        ));
        assert_eq!(
            reply(&zone, &two).metadata.response_code,
            ResponseCode::FormErr
        );

        let mut future = query("web.vm.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_version(1);
        future.set_edns(edns);
        let refused = reply(&zone, &future);
        // 16 decodes as BADSIG, the other name for the same code.
        assert_eq!(
            u16::from(refused.metadata.response_code),
            u16::from(ResponseCode::BADVERS)
        );
        assert_eq!(refused.edns.map(|edns| edns.version()), Some(0));
    }

    #[test]
    fn garbage_gets_formerr_and_responses_get_nothing() {
        let zone = zone_with(&[]);
        let mut bytes = query("web.vm.", RecordType::A).to_vec().unwrap();
        bytes.truncate(14); // a header and a cut-off question
        let formerr = zone.reply_to_bytes(&bytes).expect("a reply");
        assert_eq!(formerr.metadata.id, 4242);
        assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);

        assert!(zone.reply_to_bytes(&bytes[..5]).is_none(), "no header");
        let mut response = query("web.vm.", RecordType::A);
        response.metadata.message_type = MessageType::Response;
        assert!(
            zone.reply_to_bytes(&response.to_vec().unwrap()).is_none(),
            "never answer an answer"
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
