use std::net::{Ipv4Addr, SocketAddr};

use banger_model::Name;
use banger_net::{DnsRecords, DnsServer, StartDnsError};
use tokio::process::Command;

use crate::support::{in_netns, root_or_skip};

/// Runs `dig @127.0.0.1 -p PORT ARGS...` and returns its full output.
async fn dig(server: SocketAddr, args: &[&str]) -> String {
    let output = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .await
        .expect("run dig");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "dig {args:?} failed: {stdout}");
    stdout
}

fn status(output: &str) -> &str {
    output
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig output:\n{output}"))
}

fn answer_count(output: &str) -> usize {
    output
        .split("ANSWER: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no answer count in dig output:\n{output}"))
}

fn name(raw: &str) -> Name {
    Name::parse(raw).unwrap()
}

#[test]
fn dns_answers_over_udp_and_tcp_and_sees_updates() {
    if !root_or_skip("dns_answers_over_udp_and_tcp_and_sees_updates") {
        return;
    }
    in_netns(|| async {
        let records = DnsRecords::new();
        records.set(&name("web"), Ipv4Addr::new(172, 30, 0, 2));
        let server = DnsServer::start("127.0.0.1:0".parse().unwrap(), records.clone())
            .await
            .unwrap();
        let udp = server.udp_addr();
        assert_eq!(udp, server.tcp_addr(), "one port for both protocols");
        assert!(udp.ip().is_loopback() && udp.port() != 0);

        for transport in ["+notcp", "+tcp"] {
            let out = dig(udp, &[transport, "+short", "web.vm", "A"]).await;
            assert_eq!(out.trim(), "172.30.0.2", "{transport}");
            let out = dig(udp, &[transport, "+short", "WeB.Vm", "A"]).await;
            assert_eq!(out.trim(), "172.30.0.2", "{transport}: case-insensitive");

            let out = dig(udp, &[transport, "nope.vm", "A"]).await;
            assert_eq!(status(&out), "NXDOMAIN", "{transport}\n{out}");
            assert!(out.contains("flags: qr aa"), "authoritative\n{out}");
            assert!(
                out.contains("SOA"),
                "negative answer carries the SOA\n{out}"
            );

            let out = dig(udp, &[transport, "web.vm", "AAAA"]).await;
            assert_eq!(status(&out), "NOERROR", "{transport}\n{out}");
            assert_eq!(answer_count(&out), 0, "{out}");

            let out = dig(udp, &[transport, "example.com", "A"]).await;
            assert_eq!(status(&out), "REFUSED", "{transport}\n{out}");
        }

        // Updates are visible to the next query.
        records.set(&name("db"), Ipv4Addr::new(172, 30, 0, 3));
        assert_eq!(dig(udp, &["+short", "db.vm"]).await.trim(), "172.30.0.3");
        records.set(&name("web"), Ipv4Addr::new(172, 30, 0, 9));
        assert_eq!(
            dig(udp, &["+tcp", "+short", "web.vm"]).await.trim(),
            "172.30.0.9"
        );
        server.records().remove(&name("web"));
        assert_eq!(status(&dig(udp, &["web.vm"]).await), "NXDOMAIN");
        records.replace_all([(name("api"), Ipv4Addr::new(172, 30, 0, 4))]);
        assert_eq!(status(&dig(udp, &["db.vm"]).await), "NXDOMAIN");
        assert_eq!(dig(udp, &["+short", "api.vm"]).await.trim(), "172.30.0.4");

        server.shutdown().await.unwrap();
        let out = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &udp.port().to_string(),
                "+time=1",
                "+tries=1",
                "api.vm",
            ])
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "still answering after shutdown");
    });
}

#[test]
fn a_taken_port_is_a_clear_error_naming_the_address() {
    if !root_or_skip("a_taken_port_is_a_clear_error_naming_the_address") {
        return;
    }
    in_netns(|| async {
        let first = DnsServer::start("127.0.0.1:0".parse().unwrap(), DnsRecords::new())
            .await
            .unwrap();
        let taken = first.udp_addr();
        let err = DnsServer::start(taken, DnsRecords::new())
            .await
            .unwrap_err();
        let StartDnsError::Bind { addr, source, .. } = &err;
        assert_eq!(*addr, taken);
        assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        let message = err.to_string();
        assert!(message.contains(&taken.to_string()), "{message}");
        first.shutdown().await.unwrap();
        // Freed again after shutdown.
        let again = DnsServer::start(taken, DnsRecords::new()).await.unwrap();
        again.shutdown().await.unwrap();
    });
}
