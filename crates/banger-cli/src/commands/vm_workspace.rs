//! `banger vm workspace prepare|export`, and the workspace step of `vm run`.

use banger_rpc::method;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use banger_model::layout::Layout;
use banger_model::vm::{Vm, VmState, WorkspaceInfo};
use banger_rpc::request::{RefParams, WorkspaceRecordParams};
use banger_rpc::response::SshInfo;

use super::ssh_args::ssh_args;
use crate::args::{WorkspaceExportArgs, WorkspacePrepareArgs};
use crate::daemon_client;
use crate::output::ExitError;
use crate::workspace::payload::{self, Plan, Summary};
use crate::workspace::stage;
use crate::workspace::{GUEST_REPO, Repo, export};
use std::io::IsTerminal;
use std::time::Duration;

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
struct Built {
    /// Holds the payload; removed when dropped.
    _scratch: tempfile::TempDir,
    payload: PathBuf,
    size: u64,
    pub summary: Summary,
}

/// Reads the checkout into a payload. Runs before the VM exists: a file
/// that cannot be read is an error here, not after a boot. What is left
/// out (nested repositories, FIFOs, sockets, devices) is said on stderr.
async fn build(repo: &Repo, plan: &Plan) -> anyhow::Result<Built> {
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
    report_skipped(&summary);
    let size = fs_err::metadata(&payload)?.len();
    Ok(Built {
        _scratch: scratch,
        payload,
        size,
        summary,
    })
}

/// A workspace laid out on the host for a VM about to be created (see
/// [`crate::workspace::stage`]).
#[derive(Debug)]
pub(super) struct StagedWorkspace {
    /// The new work disk's extra content; removed when dropped.
    scratch: tempfile::TempDir,
    /// The list of files the daemon takes from the checkout; removed when
    /// dropped.
    host_files: Option<tempfile::NamedTempFile>,
    staged: stage::Staged,
    size: u64,
}

impl StagedWorkspace {
    /// The directory the daemon builds the work disk from.
    pub(super) fn content(&self) -> &Path {
        self.scratch.path()
    }

    /// The file listing what the daemon takes from the checkout.
    pub(super) fn host_files(&self) -> Option<&Path> {
        self.host_files.as_ref().map(tempfile::NamedTempFile::path)
    }
}

/// Lays the checkout out as the guest's `/root/repo`, before the VM
/// exists: a file that cannot be read is an error here. A workspace that
/// takes more than a second says how far it got, every second on a
/// terminal (every five otherwise).
pub(super) async fn stage(repo: &Repo, plan: &Plan) -> anyhow::Result<StagedWorkspace> {
    let scratch = match memory_scratch_dir() {
        Some(dir) => tempfile::Builder::new()
            .prefix("banger-workspace")
            .tempdir_in(dir),
        None => tempfile::Builder::new()
            .prefix("banger-workspace")
            .tempdir(),
    }
    .context("creating a scratch dir")?;
    let root = scratch.path().to_owned();
    let build = {
        let (repo, plan, root) = (repo.clone(), plan.clone(), root.clone());
        tokio::task::spawn_blocking(move || stage::build(&repo, &plan, &root))
    };
    tokio::pin!(build);
    let started = std::time::Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let every = Duration::from_secs(if terminal { 1 } else { 5 });
    let mut shown = false;
    let staged = loop {
        tokio::select! {
            staged = &mut build => break staged?.map_err(user_error)?,
            _ = tokio::signal::ctrl_c() => {
                // git got the same Ctrl-C (one process group); once the
                // layout stops, its scratch dir (maybe hundreds of MB of
                // memory on a tmpfs) goes with `scratch`.
                let _ = tokio::time::timeout(Duration::from_secs(10), &mut build).await;
                drop(scratch);
                return Err(ExitError {
                    message: "interrupted while laying out the workspace; nothing was created".into(),
                    code: 130,
                }
                .into());
            }
            _ = tokio::time::sleep(every) => {
                let (files, bytes) = {
                    let root = root.clone();
                    tokio::task::spawn_blocking(move || tree_size(&root)).await?
                };
                let line = format!(
                    "workspace: {} staged, {} ({:.0?})",
                    plural(files as usize, "file"),
                    banger_model::ByteSize(bytes).human(),
                    started.elapsed()
                );
                if terminal {
                    eprint!("\r\x1b[2K{line}");
                } else {
                    eprintln!("{line}");
                }
                shown = true;
            }
        }
    };
    if shown && terminal {
        eprintln!();
    }
    report_skipped(&staged.summary);
    let size = {
        let (root, host_files) = (root.clone(), staged.host_files.clone());
        tokio::task::spawn_blocking(move || {
            tree_size(&root).1 + host_files.as_ref().map_or(0, host_files_size)
        })
        .await?
    };
    let host_files = match &staged.host_files {
        Some(list) => {
            let dir = scratch.path().parent().unwrap_or(Path::new("/tmp"));
            let mut file = tempfile::Builder::new()
                .prefix("banger-host-files")
                .tempfile_in(dir)
                .context("writing the list of the checkout's files")?;
            std::io::Write::write_all(&mut file, &list.encode())
                .context("writing the list of the checkout's files")?;
            Some(file)
        }
        None => None,
    };
    Ok(StagedWorkspace {
        scratch,
        host_files,
        staged,
        size,
    })
}

/// Bytes of the files a host file list names (as they are now).
fn host_files_size(list: &banger_model::host_files::HostFiles) -> u64 {
    list.sections
        .iter()
        .flat_map(|section| section.paths.iter().map(|path| section.root.join(path)))
        .filter_map(|path| std::fs::symlink_metadata(path).ok())
        .filter(std::fs::Metadata::is_file)
        .map(|meta| meta.len())
        .sum()
}

/// A memory-backed directory (tmpfs) with room to lay a workspace out in:
/// its files are written twice, once here and once into the work disk, and
/// in memory the first write costs next to nothing (a 10k-file checkout
/// took 0.3 s on tmpfs and 2.1 s on this machine's ext4). The scratch dir
/// is gone when the create answers.
fn memory_scratch_dir() -> Option<PathBuf> {
    /// Below this much free memory-backed space, the disk's temp dir is used.
    const ROOM: u64 = 4 << 30;
    let candidates = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/dev/shm")]);
    candidates.into_iter().find(|dir| {
        let tmpfs = nix::sys::statfs::statfs(dir)
            .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
        let room = nix::sys::statvfs::statvfs(dir)
            .is_ok_and(|fs| fs.blocks_available().saturating_mul(fs.fragment_size()) >= ROOM);
        tmpfs && room
    })
}

/// Says on stderr what of the working tree is left out, and why.
fn report_skipped(summary: &Summary) {
    for skipped in &summary.skipped {
        eprintln!(
            "workspace: not copied: {}: {}",
            skipped.path.display(),
            skipped.reason
        );
    }
}

/// Regular files and their bytes under `dir` (not following symlinks).
fn tree_size(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => stack.push(entry.path()),
                Ok(kind) if kind.is_file() => {
                    files += 1;
                    bytes += entry.metadata().map(|meta| meta.len()).unwrap_or(0);
                }
                _ => {}
            }
        }
    }
    (files, bytes)
}

/// Records the workspace written into a new VM's work disk, and says so.
pub(super) async fn record_staged(
    layout: &Layout,
    reference: &str,
    repo: &Repo,
    plan: &Plan,
    staged: StagedWorkspace,
) -> anyhow::Result<WorkspaceInfo> {
    let summary = &staged.staged.summary;
    eprintln!(
        "workspace: {} → {reference}:{GUEST_REPO} (history, {}, {} deleted; {}) written before boot",
        repo.top.display(),
        plural(summary.files, "changed file"),
        summary.deleted,
        banger_model::ByteSize(staged.size).human()
    );
    let workspace = WorkspaceInfo {
        host_path: repo.top.clone(),
        guest_path: PathBuf::from(GUEST_REPO),
        base_commit: staged.staged.copied_in.clone(),
        branch: plan.branch.clone(),
        head_commit: summary.base.clone(),
    };
    record(layout, reference, &workspace).await?;
    Ok(workspace)
}

async fn record(layout: &Layout, reference: &str, workspace: &WorkspaceInfo) -> anyhow::Result<()> {
    let mut client = daemon_client::connect(layout).await?;
    let _: Vm = client
        .call::<method::WorkspaceRecord>(
            WorkspaceRecordParams {
                reference: reference.to_owned(),
                workspace: workspace.clone(),
            },
            |_| {},
        )
        .await?;
    Ok(())
}

/// Reads the checkout, sends it to the VM and records its base commit.
pub(super) async fn prepare(
    layout: &Layout,
    reference: &str,
    repo: &Repo,
    plan: &Plan,
) -> anyhow::Result<WorkspaceInfo> {
    let built = build(repo, plan).await?;
    send(layout, reference, repo, plan, built).await
}

/// Sends a built payload to the VM and records its base commit.
async fn send(
    layout: &Layout,
    reference: &str,
    repo: &Repo,
    plan: &Plan,
    built: Built,
) -> anyhow::Result<WorkspaceInfo> {
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
    record(layout, reference, &workspace).await?;
    Ok(workspace)
}

/// `1 changed file`, `2 changed files`.
pub(super) fn plural(count: usize, noun: &str) -> String {
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
        .call::<method::VmSshInfo>(RefParams::new(reference), |_| {})
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
    let vm = client
        .call::<method::VmShow>(RefParams::new(&args.reference), |_| {})
        .await?
        .vm;
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
    let patch = export_patch(layout, vm.id.as_str(), &base).await?;
    match &args.output {
        Some(path) => {
            fs_err::write(path, &patch)?;
            eprintln!(
                "base: {base}\npatch: {} ({} bytes)",
                path.display(),
                patch.len()
            );
        }
        None => {
            std::io::stdout().lock().write_all(&patch)?;
            eprintln!("base: {base}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The patch of everything in the VM's workspace since `base` (a commit id).
pub(super) async fn export_patch(
    layout: &Layout,
    reference: &str,
    base: &str,
) -> anyhow::Result<Vec<u8>> {
    let info = running_ssh_info(layout, reference).await?;
    let args_ssh = ssh_args(&info, Some(&export::remote_command(base)), false);
    let output = crate::exec::ssh_with_input(&args_ssh, tokio::io::empty())
        .await
        .context("running ssh")?;
    if !output.status.success() {
        anyhow::bail!(
            "exporting the workspace of {} failed ({}): {}",
            info.name,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output.stdout)
}

/// The files a patch touches (`diff --git a/X b/X` lines).
pub(super) fn patched_files(patch: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(patch)
        .lines()
        .filter_map(|line| line.strip_prefix("diff --git a/"))
        .filter_map(|rest| rest.split_once(" b/").map(|(a, _)| a.to_owned()))
        .collect()
}
