//! `banger vm workspace prepare|export`, and the workspace step of `vm run`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use banger_model::layout::Layout;
use banger_model::vm::{Vm, VmState, WorkspaceInfo};
use banger_rpc::Request;
use banger_rpc::request::{RefParams, WorkspaceRecordParams};
use banger_rpc::response::SshInfo;

use super::ssh_args::ssh_args;
use crate::args::{WorkspaceExportArgs, WorkspacePrepareArgs};
use crate::daemon_client;
use crate::output::ExitError;
use crate::workspace::payload::{self, Plan, Summary};
use crate::workspace::{GUEST_REPO, Repo, export};

/// git's empty tree: the base of a repository that had no commits.
const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

pub(super) async fn prepare_cmd(
    layout: &Layout,
    args: &WorkspacePrepareArgs,
) -> anyhow::Result<ExitCode> {
    let plan = Plan {
        branch: args.branch.clone(),
        from: args.from.clone(),
        full_copy: args.full_copy,
    };
    let repo = open_repo(&args.path, &plan)?;
    prepare(layout, &args.reference, &repo, &plan).await?;
    Ok(ExitCode::SUCCESS)
}

/// Checks `path` before any VM exists, so bad input creates nothing.
pub(super) fn open_repo(path: &Path, plan: &Plan) -> anyhow::Result<Repo> {
    let repo = Repo::open(path, plan.full_copy).map_err(user_error)?;
    if let Some(branch) = &plan.branch {
        repo.check_branch_name(branch).map_err(user_error)?;
    }
    if let Some(from) = &plan.from {
        repo.resolve_from(from).map_err(user_error)?;
    }
    Ok(repo)
}

fn user_error(err: impl std::fmt::Display) -> anyhow::Error {
    ExitError {
        message: err.to_string(),
        code: 1,
    }
    .into()
}

/// A workspace payload read from the host checkout, ready to send.
#[derive(Debug)]
pub(super) struct Built {
    /// Holds the payload; removed when dropped.
    _scratch: tempfile::TempDir,
    payload: PathBuf,
    size: u64,
    pub summary: Summary,
}

/// Reads the checkout into a payload. Runs before the VM exists: a file
/// that cannot be read is an error here, not after a boot. What is left
/// out (nested repositories, FIFOs, sockets, devices) is said on stderr.
pub(super) async fn build(repo: &Repo, plan: &Plan) -> anyhow::Result<Built> {
    let scratch = tempfile::Builder::new()
        .prefix("banger-workspace")
        .tempdir()
        .context("creating a scratch dir")?;
    let payload = scratch.path().join("payload.tar");
    let summary = {
        let (repo, plan, scratch_dir, out) = (
            repo.clone(),
            plan.clone(),
            scratch.path().to_owned(),
            payload.clone(),
        );
        tokio::task::spawn_blocking(move || payload::build(&repo, &plan, &scratch_dir, &out))
            .await?
            .map_err(user_error)?
    };
    for skipped in &summary.skipped {
        eprintln!(
            "workspace: not copied: {}: {}",
            skipped.path.display(),
            skipped.reason
        );
    }
    let size = fs_err::metadata(&payload)?.len();
    Ok(Built {
        _scratch: scratch,
        payload,
        size,
        summary,
    })
}

/// Reads the checkout, sends it to the VM and records its base commit.
pub(super) async fn prepare(
    layout: &Layout,
    reference: &str,
    repo: &Repo,
    plan: &Plan,
) -> anyhow::Result<Summary> {
    let built = build(repo, plan).await?;
    send(layout, reference, repo, plan, built).await
}

/// Sends a built payload to the VM and records its base commit.
pub(super) async fn send(
    layout: &Layout,
    reference: &str,
    repo: &Repo,
    plan: &Plan,
    built: Built,
) -> anyhow::Result<Summary> {
    let info = running_ssh_info(layout, reference).await?;
    let summary = built.summary;
    eprintln!(
        "workspace: {} → {}:{GUEST_REPO} (history, {}, {} deleted; {})",
        repo.top.display(),
        info.name,
        plural(summary.files, "changed file"),
        summary.deleted,
        banger_model::ByteSize(built.size).human()
    );
    let input = tokio::fs::File::open(&built.payload).await?;
    let args = ssh_args(&info, Some(payload::REMOTE_COMMAND), false);
    let output = crate::exec::ssh_with_input(&args, input)
        .await
        .context("running ssh")?;
    if !output.status.success() {
        anyhow::bail!(
            "copying the workspace into {} failed ({}): {}",
            info.name,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let copied_in = String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("banger-base "))
        .map(str::to_owned)
        .filter(|sha| export::valid_base(sha));
    let workspace = WorkspaceInfo {
        host_path: repo.top.clone(),
        guest_path: PathBuf::from(GUEST_REPO),
        base_commit: copied_in
            .or_else(|| summary.base.clone())
            .unwrap_or_else(|| EMPTY_TREE.to_owned()),
        branch: plan.branch.clone(),
        head_commit: summary.base.clone(),
    };
    let mut client = daemon_client::connect(layout).await?;
    let _: Vm = client
        .call(
            &Request::WorkspaceRecord(WorkspaceRecordParams {
                reference: reference.to_owned(),
                workspace,
            }),
            |_| {},
        )
        .await?;
    Ok(summary)
}

/// `1 changed file`, `2 changed files`.
fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// Best-effort `mise install` in the checkout (see
/// [`crate::workspace::MISE_BOOTSTRAP`]); its messages go to stderr.
pub(super) async fn bootstrap_tools(layout: &Layout, reference: &str) {
    let Ok(info) = running_ssh_info(layout, reference).await else {
        return;
    };
    let args = ssh_args(&info, Some(crate::workspace::MISE_BOOTSTRAP), false);
    match crate::exec::ssh_with_input(&args, tokio::io::empty()).await {
        Ok(output) => eprint!("{}", String::from_utf8_lossy(&output.stderr)),
        Err(err) => eprintln!("warning: tool bootstrap skipped: {err}"),
    }
}

/// SSH details of a VM that must be running.
pub(super) async fn running_ssh_info(layout: &Layout, reference: &str) -> anyhow::Result<SshInfo> {
    let mut client = daemon_client::connect(layout).await?;
    let info: SshInfo = client
        .call(&Request::VmSshInfo(RefParams::new(reference)), |_| {})
        .await?;
    if info.state != VmState::Running {
        return Err(user_error(format!(
            "VM {} is {}; start it with `banger vm start {}`",
            info.name, info.state, info.name
        )));
    }
    Ok(info)
}

pub(super) async fn export_cmd(
    layout: &Layout,
    args: &WorkspaceExportArgs,
) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let vm: Vm = client
        .call(&Request::VmShow(RefParams::new(&args.reference)), |_| {})
        .await?;
    drop(client);
    let base = match (&args.base_commit, &vm.workspace) {
        (Some(base), _) => base.clone(),
        (None, Some(workspace)) => workspace.base_commit.clone(),
        (None, None) => {
            return Err(user_error(format!(
                "VM {} has no recorded workspace; pass --base-commit SHA or prepare one with `banger vm workspace prepare`",
                vm.name
            )));
        }
    };
    if !export::valid_base(&base) {
        return Err(user_error(format!(
            "--base-commit {base:?} is not a commit id (hex)"
        )));
    }
    let info = running_ssh_info(layout, vm.id.as_str()).await?;
    let args_ssh = ssh_args(&info, Some(&export::remote_command(&base)), false);
    let output = crate::exec::ssh_with_input(&args_ssh, tokio::io::empty())
        .await
        .context("running ssh")?;
    if !output.status.success() {
        anyhow::bail!(
            "exporting the workspace of {} failed ({}): {}",
            vm.name,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    match &args.output {
        Some(path) => {
            fs_err::write(path, &output.stdout)?;
            eprintln!(
                "base: {base}\npatch: {} ({} bytes)",
                path.display(),
                output.stdout.len()
            );
        }
        None => {
            std::io::stdout().lock().write_all(&output.stdout)?;
            eprintln!("base: {base}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
