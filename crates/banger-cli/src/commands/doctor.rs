//! `banger doctor [--json]`
//!
//! The daemon runs the host and state checks (`doctor.run`): it is the
//! process that needs the privileges and knows storage, DNS and the store.
//! The CLI adds what is about its user: whether the daemon can be reached
//! (starting it like any command does) and the `~/.ssh/config` include.
//! When no daemon can be reached the CLI runs the host checks itself, so
//! doctor still explains a host where the daemon cannot start.

use banger_rpc::{NoParams, method};
use std::process::ExitCode;

use banger_doctor::{CheckStatus, DoctorCheck, HostInputs, RealHost, checks};
use banger_model::config::Config;
use banger_model::defaults::{HostFacts, VmDefaults};
use banger_model::layout::Layout;
use banger_rpc::response::{DoctorResult, StatusResult};

use crate::args::DoctorArgs;
use crate::daemon_client;
use crate::output::{color, print_json};

pub(super) async fn run(layout: &Layout, args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut all = Vec::new();
    match daemon_checks(layout).await {
        Ok((detail, checks)) => {
            all.push(checks::daemon(Ok(detail)));
            all.extend(checks);
        }
        Err(err) => {
            all.push(checks::daemon(Err(format!("{err:#}"))));
            all.extend(local_checks(layout));
        }
    }
    all.push(checks::ssh_include(
        &super::ssh_config::include_state(layout),
        &super::ssh_config::user_config(layout),
    ));

    let (pass, warn, fail) = banger_doctor::tally(&all);
    if args.json {
        print_json(&serde_json::json!({
            "ok": fail == 0,
            "summary": { "pass": pass, "warn": warn, "fail": fail },
            "checks": all,
        }))?;
    } else {
        print!("{}", render(&all, color()));
        eprintln!(
            "{} checks: {pass} pass, {warn} warn, {fail} fail",
            all.len()
        );
    }
    Ok(if fail == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The daemon's identity line and its checks.
async fn daemon_checks(layout: &Layout) -> anyhow::Result<(String, Vec<DoctorCheck>)> {
    let mut client = daemon_client::connect(layout).await?;
    let status: StatusResult = client.call::<method::Status>(NoParams {}, |_| {}).await?;
    let result: DoctorResult = client.call::<method::Doctor>(NoParams {}, |_| {}).await?;
    let detail = format!(
        "bangerd {} running (pid {}, socket {})",
        status.build.version,
        status.pid,
        status.socket.display()
    );
    Ok((detail, result.checks))
}

/// The host checks run in the CLI, when the daemon cannot run them.
fn local_checks(layout: &Layout) -> Vec<DoctorCheck> {
    let config_path = layout.config_file();
    let mut out = Vec::new();
    let config = match Config::load(&config_path) {
        Ok(config) => config,
        Err(err) => {
            out.push(DoctorCheck::fail(
                "config",
                err.to_string(),
                format!("fix {} (every key is optional)", config_path.display()),
            ));
            Config::default()
        }
    };
    let defaults = VmDefaults::resolve(&config.vm_defaults, HostFacts::detect());
    out.extend(banger_doctor::host_checks(
        &RealHost,
        &HostInputs {
            config: &config,
            config_path: &config_path,
            state_dir: &layout.state_dir,
            own_dirs: &layout.own_dirs(),
            defaults: &defaults,
        },
    ));
    out
}

/// One line per check; a non-pass is followed by its fix.
pub(crate) fn render(checks: &[DoctorCheck], color: bool) -> String {
    let width = checks
        .iter()
        .map(|check| check.name.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for check in checks {
        let status = check.status.as_str();
        let status = if color {
            let code = match check.status {
                CheckStatus::Pass => "32",
                CheckStatus::Warn => "33",
                CheckStatus::Fail => "31",
            };
            format!("\x1b[{code}m{status}\x1b[0m")
        } else {
            status.to_owned()
        };
        out.push_str(&format!(
            "{status}  {:width$}  {}\n",
            check.name, check.detail
        ));
        if let Some(fix) = &check.fix {
            out.push_str(&format!("      {:width$}  fix: {fix}\n", ""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_line_per_check_and_the_fixes() {
        let checks = vec![
            DoctorCheck::pass("arch", "x86_64"),
            DoctorCheck::fail("kvm", "/dev/kvm does not exist", "sudo modprobe kvm_intel"),
        ];
        assert_eq!(
            render(&checks, false),
            "pass  arch  x86_64\n\
             fail  kvm   /dev/kvm does not exist\n\
             \x20           fix: sudo modprobe kvm_intel\n"
        );
        assert!(render(&checks, true).contains("\x1b[31mfail\x1b[0m"));
    }
}
