//! `banger vm ssh REF [-- CMD]`

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use banger_model::layout::Layout;
use banger_model::vm::{Vm, VmState};
use banger_rpc::Request;
use banger_rpc::request::RefParams;
use banger_rpc::response::SshInfo;

use super::ssh_args::ssh_args;
use crate::args::VmSshArgs;
use crate::daemon_client;
use crate::output::ExitError;

pub(super) async fn run(layout: &Layout, args: &VmSshArgs) -> anyhow::Result<ExitCode> {
    ssh(layout, &args.reference, &args.command).await
}

/// Connects to a running VM; propagates the remote exit code. After an
/// interactive session, reminds the user when the VM still runs.
pub(super) async fn ssh(
    layout: &Layout,
    reference: &str,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let info: SshInfo = client
        .call(&Request::VmSshInfo(RefParams::new(reference)), |_| {})
        .await?;
    drop(client);
    if info.state != VmState::Running {
        return Err(ExitError {
            message: format!(
                "VM {} is {}; start it with `banger vm start {}`",
                info.name, info.state, info.name
            ),
            code: 1,
        }
        .into());
    }
    let interactive = command.is_empty();
    let args = ssh_args(
        &info,
        command,
        interactive && std::io::stdin().is_terminal(),
    );
    let status = {
        let ssh = crate::exec::run_ssh(&args);
        tokio::pin!(ssh);
        loop {
            tokio::select! {
                status = &mut ssh => break status.context("running ssh (is openssh-client installed?)")?,
                // Ctrl-C belongs to ssh and the remote side; banger keeps waiting.
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    };
    if interactive {
        remind_if_running(layout, &info.name).await;
    }
    Ok(exit_code(status))
}

async fn remind_if_running(layout: &Layout, name: &str) {
    let Ok(Some(mut client)) = daemon_client::connect_existing(layout).await else {
        return;
    };
    if let Ok(vm) = client
        .call::<Vm>(&Request::VmShow(RefParams::new(name)), |_| {})
        .await
        && vm.state == VmState::Running
    {
        eprintln!(
            "VM {name} is still running; `banger vm stop {name}` stops it, `banger vm delete {name}` removes it"
        );
    }
}

/// The child's exit code; 128+N for a signal, like a shell.
pub(super) fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(signal)) => ExitCode::from(128u8.saturating_add(signal as u8)),
        (None, None) => ExitCode::FAILURE,
    }
}
