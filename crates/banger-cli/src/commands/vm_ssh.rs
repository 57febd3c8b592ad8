//! `banger vm ssh REF [-- CMD]`, and the session step of `vm run`.

use banger_rpc::method;
use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use banger_model::layout::Layout;
use banger_model::vm::VmState;
use banger_rpc::request::RefParams;

use super::ssh_args::{command_line, remote_script, ssh_args};
use super::vm_workspace::running_ssh_info;
use crate::args::VmSshArgs;
use crate::daemon_client;

/// What to run over SSH.
#[derive(Debug, Clone)]
pub(super) struct Session {
    /// A shell command line for the guest (see [`remote_script`]); `None`
    /// opens a login shell.
    pub remote: Option<String>,
    /// A person is at the keyboard of a shell (no command): a reminder
    /// afterwards when the VM still runs.
    pub interactive: bool,
}

impl Session {
    /// `vm ssh REF [-- CMD...]`; with `cwd`, the command runs there.
    pub(super) fn for_command(command: &[String], cwd: Option<&str>) -> Self {
        if command.is_empty() {
            Self {
                remote: None,
                interactive: true,
            }
        } else {
            Self {
                remote: Some(remote_script(&command_line(command), cwd)),
                interactive: false,
            }
        }
    }

    /// Whether ssh should give the remote side a terminal: a shell gets one
    /// when stdin is a terminal; a command when stdin and stdout both are
    /// (as `ssh -t` or `docker run -it`: `-- bash` is interactive, Ctrl-C
    /// reaches the command), so that output piped or redirected on the host
    /// stays byte for byte what the command wrote.
    fn wants_tty(&self) -> bool {
        let stdin = std::io::stdin().is_terminal();
        if self.interactive {
            stdin
        } else {
            stdin && std::io::stdout().is_terminal()
        }
    }
}

pub(super) async fn run(layout: &Layout, args: &VmSshArgs) -> anyhow::Result<ExitCode> {
    ssh(
        layout,
        &args.reference,
        &Session::for_command(&args.command, None),
        true,
    )
    .await
}

/// Connects to a running VM; propagates the remote exit code. After an
/// interactive session, reminds the user when the VM still runs (`remind`).
///
/// With a terminal, Ctrl-C goes through it to the remote command. Without
/// one, a Ctrl-C (or SIGINT from elsewhere) ends ssh, the session closes,
/// and the guest's session guard stops the command; banger exits 130.
pub(super) async fn ssh(
    layout: &Layout,
    reference: &str,
    session: &Session,
    remind: bool,
) -> anyhow::Result<ExitCode> {
    let info = running_ssh_info(layout, reference).await?;
    let tty = session.wants_tty();
    let args = ssh_args(&info, session.remote.as_deref(), tty);
    let mut child =
        crate::exec::spawn_ssh(&args).context("running ssh (is openssh-client installed?)")?;
    let mut interrupted = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.context("waiting for ssh")?,
            // With a terminal, Ctrl-C belongs to ssh and the remote side;
            // banger keeps waiting.
            _ = tokio::signal::ctrl_c() => {
                if !tty {
                    interrupted = true;
                    let _ = child.start_kill();
                }
            }
        }
    };
    if session.interactive && remind {
        remind_if_running(layout, &info.name).await;
    }
    if interrupted {
        return Ok(ExitCode::from(130));
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
