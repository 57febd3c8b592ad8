//! `vm.ssh_info`, `vm.health`, `vm.stats`.

use std::time::Duration;

use banger_guest::agent::{AGENT_VSOCK_PORT, AgentClient};
use banger_model::vm::VmState;
use banger_rpc::response::{SshInfo, VmHealth, VmStats};

use crate::daemon::Daemon;
use crate::errors::ServiceError;
use crate::vm::resolve;

pub async fn ssh_info(daemon: &Daemon, reference: &str) -> Result<SshInfo, ServiceError> {
    let vm = resolve(daemon, reference)?;
    let ip = vm.network.ip;
    let key = daemon.keys.ensure().await?;
    Ok(SshInfo {
        name: vm.name.to_string(),
        ip,
        user: "root".into(),
        key_path: key.private,
        known_hosts: crate::ssh::known_hosts_file(&daemon.layout, vm.name.as_str()),
        state: vm.state,
    })
}

pub async fn health(daemon: &Daemon, reference: &str) -> Result<VmHealth, ServiceError> {
    let vm = resolve(daemon, reference)?;
    let mut health = VmHealth {
        name: vm.name.to_string(),
        state: vm.state,
        agent_ok: false,
        agent_version: None,
        agent_error: None,
    };
    if vm.state != VmState::Running {
        health.agent_error = Some(format!("the VM is {}", vm.state));
        return Ok(health);
    }
    let client = AgentClient::hybrid_vsock(vm.paths().vsock_socket(), AGENT_VSOCK_PORT)
        .with_step_timeout(Duration::from_secs(3));
    match client.health().await {
        Ok(answer) => {
            health.agent_ok = true;
            health.agent_version = Some(answer.version);
        }
        Err(err) => health.agent_error = Some(err.to_string()),
    }
    Ok(health)
}

/// CPU use is sampled over this long.
const CPU_SAMPLE: Duration = Duration::from_millis(250);

pub async fn stats(daemon: &Daemon, reference: &str) -> Result<VmStats, ServiceError> {
    let vm = resolve(daemon, reference)?;
    let pid = vm
        .pid
        .filter(|_| vm.state == VmState::Running)
        .ok_or_else(|| {
            ServiceError::precondition(format!("VM {} is {}, not running", vm.name, vm.state))
                .with_hint(format!("start it with `banger vm start {}`", vm.name))
        })?;
    // The VMM and what it runs: QEMU and its vsock device under the qemu
    // engine, the guest's processes under the sim engine.
    let read = || {
        tree_stat(pid)
            .ok_or_else(|| ServiceError::not_found(format!("the VMM process {pid} is gone")))
    };
    let first = read()?;
    tokio::time::sleep(CPU_SAMPLE).await;
    let second = read()?;
    let ticks = ticks_per_second() as f64;
    let busy = (second.cpu_ticks.saturating_sub(first.cpu_ticks)) as f64 / ticks;
    let uptime = uptime_seconds().unwrap_or(0.0) - second.start_ticks as f64 / ticks;
    Ok(VmStats {
        name: vm.name.to_string(),
        pid,
        cpu_percent: (busy / CPU_SAMPLE.as_secs_f64() * 1000.0).round() / 10.0,
        rss_bytes: second.rss_pages * page_size(),
        threads: second.threads,
        uptime_seconds: uptime.max(0.0) as u64,
        disks: crate::disk_space::vm_disks(&vm, daemon.store.get_image(&vm.image_id)?.as_ref()),
    })
}

#[derive(Debug, PartialEq, Eq)]
struct ProcStat {
    cpu_ticks: u64,
    start_ticks: u64,
    rss_pages: u64,
    threads: u32,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `pid`'s figures plus those of all its descendants (the start time stays
/// `pid`'s own).
fn tree_stat(pid: u32) -> Option<ProcStat> {
    let mut total = proc_stat(pid)?;
    let mut parents = vec![pid];
    let mut seen = std::collections::HashSet::from([pid]);
    while let Some(parent) = parents.pop() {
        for child in children(parent) {
            if !seen.insert(child) {
                continue;
            }
            if let Some(stat) = proc_stat(child) {
                total.cpu_ticks += stat.cpu_ticks;
                total.rss_pages += stat.rss_pages;
                total.threads += stat.threads;
            }
            parents.push(child);
        }
    }
    Some(total)
}

/// Direct children of `pid` (from every thread's `children` list).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Fields of `/proc/<pid>/stat` after the parenthesised command name.
fn parse_stat(stat: &str) -> Option<ProcStat> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        cpu_ticks: field(14)? + field(15)?,
        threads: field(20)? as u32,
        start_ticks: field(22)?,
        rss_pages: field(24)?,
    })
}

fn uptime_seconds() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_even_with_spaces_in_the_name() {
        let stat = "1234 (fire cracker) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    70 30 0 0 20 0 3 0 5000 1000000 2560 18446744073709551615";
        let parsed = parse_stat(stat).unwrap();
        assert_eq!(
            parsed,
            ProcStat {
                cpu_ticks: 100,
                start_ticks: 5000,
                rss_pages: 2560,
                threads: 3
            }
        );
    }

    #[test]
    fn a_tree_counts_the_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let own = std::process::id();
        let listed = children(own);
        let tree = tree_stat(own).unwrap();
        let alone = proc_stat(own).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(listed.contains(&child.id()), "{listed:?}");
        assert!(tree.threads > alone.threads, "{tree:?} vs {alone:?}");
    }

    #[test]
    fn reads_our_own_process() {
        let own = proc_stat(std::process::id()).unwrap();
        assert!(own.rss_pages > 0);
        assert!(own.threads >= 1);
    }
}
