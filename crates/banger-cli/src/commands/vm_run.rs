//! `banger vm run [PATH] [-- CMD...]`: a fresh VM, the checkout at PATH in
//! it, then a shell or the command (whose exit code becomes banger's).
//! With `--rm` the VM is deleted afterwards, whatever happened, except when
//! the boot timed out waiting for the guest: then it is kept for `vm logs`.

use banger_rpc::method;
use std::process::ExitCode;
use std::time::Duration;

use banger_model::layout::Layout;
use banger_model::vm::{Vm, WorkspaceInfo};
use banger_rpc::request::RefParams;
use banger_rpc::{CallError, ErrorCode, RpcError};

use super::vm_ssh::Session;
use super::vm_workspace::{self, open_repo};
use super::{vm_create, vm_ssh};
use crate::args::VmRunArgs;
use crate::daemon_client;
use crate::output::ExitError;
use crate::workspace::GUEST_REPO;
use crate::workspace::payload::Plan;

pub(super) async fn run(layout: &Layout, args: &VmRunArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan {
        branch: args.branch.clone(),
        from: args.from.clone(),
        full_copy: args.full_copy,
    };
    if args.path.is_none() && (args.branch.is_some() || args.full_copy) {
        return Err(ExitError {
            message: "--branch and --full-copy need a PATH".into(),
            code: 2,
        }
        .into());
    }
    // Everything that can be refused is refused before a VM exists.
    let repo = args
        .path
        .as_deref()
        .map(|path| open_repo(path, &plan))
        .transpose()?;
    let mut params = vm_create::request(&args.create)?;
    // The workspace is laid out now and written into the work disk at
    // create: the guest boots with it in place.
    let mut staged = match &repo {
        Some(repo) => Some(vm_workspace::stage(repo, &plan).await?),
        None => None,
    };

    params.work_content = staged.as_ref().map(|staged| staged.content().to_owned());
    params.work_host_files = staged
        .as_ref()
        .and_then(|staged| staged.host_files().map(std::path::Path::to_owned));

    let attempt = vm_create::create_requested(layout, params).await;
    let vm = match attempt.outcome {
        Ok(vm) => vm,
        Err(err) => {
            // The daemon names the VM in its spec; without one, it refused
            // the request before anything existed.
            if args.rm
                && let Some(spec) = &attempt.spec
            {
                cleanup_failed_create(layout, spec.name.value.as_str(), &err).await;
            }
            return Err(err);
        }
    };

    // From here on, Ctrl-C must not skip the cleanup below. The SSH
    // session handles Ctrl-C itself (see `vm_ssh::ssh`).
    let mut workspace = None;
    let outcome = async {
        let prepare = async {
            if let (Some(repo), Some(staged)) = (&repo, staged.take()) {
                workspace = Some(
                    vm_workspace::record_staged(layout, vm.name.as_str(), repo, &plan, staged)
                        .await?,
                );
                if args.command.is_empty() {
                    vm_workspace::bootstrap_tools(layout, vm.name.as_str()).await;
                }
            }
            anyhow::Ok(())
        };
        tokio::select! {
            prepared = prepare => prepared?,
            _ = interrupted() => return Ok(ExitCode::from(130)),
        }
        let session = session(&args.command, repo.is_some());
        vm_ssh::ssh(layout, vm.name.as_str(), &session, !args.rm).await
    }
    .await;

    if args.rm {
        if let Some(workspace) = &workspace {
            keep_or_report_changes(layout, &vm, workspace, args.export.as_deref()).await;
        }
        delete(layout, &vm).await;
    } else if !args.command.is_empty() {
        let name = &vm.name;
        eprintln!(
            "VM {name} keeps running: `banger vm ssh {name}` connects, `banger vm delete {name}` removes it (with --rm, vm run deletes it when the command ends)"
        );
    }
    outcome
}

/// Before `--rm` deletes the VM: its workspace changes are written to the
/// `--export` file, or named as discarded.
async fn keep_or_report_changes(
    layout: &Layout,
    vm: &Vm,
    workspace: &WorkspaceInfo,
    export: Option<&std::path::Path>,
) {
    let patch = tokio::time::timeout(
        Duration::from_secs(60),
        vm_workspace::export_patch(layout, vm.name.as_str(), &workspace.base_commit),
    )
    .await;
    let patch = match patch {
        Ok(Ok(patch)) => patch,
        Ok(Err(err)) => {
            eprintln!("warning: could not read the workspace's changes before deleting: {err:#}");
            return;
        }
        Err(_) => {
            eprintln!(
                "warning: reading the workspace's changes timed out; they are deleted with the VM"
            );
            return;
        }
    };
    let files = vm_workspace::patched_files(&patch);
    match export {
        Some(path) => match fs_err::write(path, &patch) {
            Ok(()) if files.is_empty() => eprintln!(
                "workspace: no changes; wrote an empty patch to {}",
                path.display()
            ),
            Ok(()) => eprintln!(
                "workspace: {} changed ({} bytes) saved to {}; `git apply {}` in {} brings them back",
                vm_workspace::plural(files.len(), "file"),
                patch.len(),
                path.display(),
                path.display(),
                workspace.host_path.display()
            ),
            Err(err) => {
                eprintln!("warning: {err}; the workspace's changes are deleted with the VM")
            }
        },
        None if files.is_empty() => {}
        None => {
            let shown: Vec<&str> = files.iter().take(5).map(String::as_str).collect();
            let more = files.len().saturating_sub(shown.len());
            eprintln!(
                "workspace: discarding {} changed in {} ({}{}); `vm run --rm --export FILE` keeps them",
                vm_workspace::plural(files.len(), "file"),
                vm.name,
                shown.join(", "),
                if more > 0 {
                    format!(", and {more} more")
                } else {
                    String::new()
                }
            );
        }
    }
}

/// With a workspace, commands run in it and shells start in it.
fn session(command: &[String], workspace: bool) -> Session {
    let cwd = workspace.then_some(GUEST_REPO);
    if command.is_empty() && workspace {
        return Session {
            remote: Some(format!(
                "cd {GUEST_REPO} && exec \"${{SHELL:-/bin/sh}}\" -l"
            )),
            interactive: true,
        };
    }
    Session::for_command(command, cwd)
}

/// Resolves on the first Ctrl-C (the handler keeps banger alive for cleanup).
async fn interrupted() {
    let _ = tokio::signal::ctrl_c().await;
}

/// `--rm` after a failed create: the daemon already rolled back a failure
/// before boot; a VM whose guest never answered in time keeps running to be
/// looked at (the daemon's hint says how); any other leftover is deleted.
async fn cleanup_failed_create(layout: &Layout, name: &str, err: &anyhow::Error) {
    // The name belongs to a VM someone else made: never touch it.
    if rpc_code(err) == Some(ErrorCode::AlreadyExists) {
        return;
    }
    let timed_out = rpc_code(err) == Some(ErrorCode::Timeout);
    if timed_out {
        eprintln!(
            "VM {name} is not deleted despite --rm: its guest did not answer in time, and it keeps running so you can look at it"
        );
        return;
    }
    if let Ok(Some(mut client)) = daemon_client::connect_existing(layout).await
        && client
            .call::<method::VmShow>(RefParams::new(name), |_| {})
            .await
            .is_ok()
    {
        let _ = client
            .call::<method::VmDelete>(RefParams::new(name), |_| {})
            .await;
        eprintln!("VM {name} deleted (--rm)");
    }
}

fn rpc_code(err: &anyhow::Error) -> Option<ErrorCode> {
    match err.downcast_ref::<CallError>() {
        Some(CallError::Rpc(RpcError { code, .. })) => Some(*code),
        _ => err.downcast_ref::<RpcError>().map(|rpc| rpc.code),
    }
}

/// Deletes the VM on a fresh connection with its own deadline, so that a
/// Ctrl-C earlier does not stop the cleanup.
async fn delete(layout: &Layout, vm: &Vm) {
    let attempt = async {
        let mut client = daemon_client::connect(layout).await?;
        client
            .call::<method::VmDelete>(RefParams::new(vm.id.as_str()), |_| {})
            .await?;
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(60), attempt).await {
        Ok(Ok(())) => eprintln!("VM {} deleted (--rm)", vm.name),
        Ok(Err(err)) => eprintln!(
            "warning: deleting VM {} failed: {err:#}; `banger vm delete {}` retries",
            vm.name, vm.name
        ),
        Err(_) => eprintln!(
            "warning: deleting VM {} timed out; `banger vm delete {}` retries",
            vm.name, vm.name
        ),
    }
}
