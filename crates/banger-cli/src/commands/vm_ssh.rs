//! `banger vm ssh REF [-- CMD]`, and the session step of `vm run`.

use banger_rpc::method;
use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use banger_model::layout::Layout;
use banger_model::vm::VmState;
use banger_rpc::request::RefParams;

use super::ssh_args::{remote_command, ssh_args};
use super::vm_workspace::running_ssh_info;
use crate::args::VmSshArgs;
use crate::daemon_client;

/// What to run over SSH.
#[derive(Debug, Clone)]
pub(super) struct Session {
    /// A shell command line for the guest (banger's own or quoted words);
    /// `None` opens a login shell.
    pub remote: Option<String>,
    /// A person is at the keyboard: a TTY when stdin is one, and a reminder
    /// afterwards when the VM still runs.
    pub interactive: bool,
}

impl Session {
    /// `vm ssh REF [-- CMD...]`
    pub(super) fn for_command(command: &[String]) -> Self {
        if command.is_empty() {
            Self {
                remote: None,
                interactive: true,
            }
        } else {
            Self {
                remote: Some(remote_command(command)),
                interactive: false,
            }
        }
    }
}

pub(super) async fn run(layout: &Layout, args: &VmSshArgs) -> anyhow::Result<ExitCode> {
    ssh(
        layout,
        &args.reference,
        &Session::for_command(&args.command),
        true,
    )
    .await
}

/// Connects to a running VM; propagates the remote exit code. After an
/// interactive session, reminds the user when the VM still runs (`remind`).
pub(super) async fn ssh(
    layout: &Layout,
    reference: &str,
    session: &Session,
    remind: bool,
) -> anyhow::Result<ExitCode> {
    let info = running_ssh_info(layout, reference).await?;
    let tty = session.interactive && std::io::stdin().is_terminal();
    let args = ssh_args(&info, session.remote.as_deref(), tty);
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
    if session.interactive && remind {
        remind_if_running(layout, &info.name).await;
    }
    Ok(exit_code(status))
}

async fn remind_if_running(layout: &Layout, name: &str) {
    let Ok(Some(mut client)) = daemon_client::connect_existing(layout).await else {
        return;
    };
    if let Ok(vm) = client
        .call::<method::VmShow>(RefParams::new(name), |_| {})
        .await
        && vm.vm.state == VmState::Running
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
