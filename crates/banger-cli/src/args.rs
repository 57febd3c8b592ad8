//! The command tree. clap structs only parse; `commands::*` resolve and act.

use banger_model::publish::PortForward;
use std::path::PathBuf;

use banger_model::ByteSize;
use banger_model::image::ImageProfile;
use banger_model::vm::VmmKind;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// banger: a disposable Firecracker microVM with your checkout inside, in one command.
#[derive(Debug, Parser)]
#[command(
    name = "banger",
    version = banger_buildinfo::version_line(),
    propagate_version = true,
    max_term_width = 100,
    after_help = "Start here: `banger vm run . -- make test`\nDocs: README.md · `banger doctor` checks this host."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, use and manage VMs
    #[command(subcommand)]
    Vm(VmCommand),
    /// Manage root filesystem images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage guest kernels
    #[command(subcommand)]
    Kernel(KernelCommand),
    /// Check that this host can run banger, and say how to fix what is missing
    Doctor(DoctorArgs),
    /// Show or install the ssh_config that makes `ssh NAME.vm` work
    SshConfig(SshConfigArgs),
    /// Start, stop or inspect the banger daemon
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Print version, git commit and build time
    Version(JsonFlag),
    /// Print a shell completion script
    Completion(CompletionArgs),
    /// Update banger to the latest release (signature verified)
    Update(UpdateArgs),
    /// Write man pages for every command into DIR (used by `make install`)
    #[command(name = "__generate-man", hide = true)]
    GenerateMan(GenerateManArgs),
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Boot a fresh VM and drop into it; with PATH, bring that git checkout; with -- CMD, run it and exit with its code
    #[command(after_help = RUN_EXAMPLES)]
    Run(VmRunArgs),
    /// Create and boot a VM without connecting to it (scripting primitive)
    Create(VmCreateArgs),
    /// Start stopped VMs
    Start(RefsArgs),
    /// Stop VMs gracefully (Ctrl-Alt-Del, then forced after the grace window)
    Stop(RefsArgs),
    /// Stop and start VMs
    Restart(RefsArgs),
    /// Delete VMs and everything they own
    #[command(visible_alias = "rm")]
    Delete(RefsArgs),
    /// Kill VMs' VMM processes immediately
    Kill(RefsArgs),
    /// Change VMs' size (applies at next start; the disk only grows)
    Set(VmSetArgs),
    /// List VMs
    #[command(visible_alias = "ls")]
    List(JsonFlag),
    /// Show one VM in detail
    Show(RefJsonArgs),
    /// Print a VM's serial console and VMM log
    Logs(VmLogsArgs),
    /// CPU and memory use of a VM's VMM process
    Stats(RefJsonArgs),
    /// Open a shell in a VM, or run a command there
    #[command(after_help = SSH_EXAMPLES)]
    Ssh(VmSshArgs),
    /// Check that a VM's guest agent answers
    Health(RefJsonArgs),
    /// List network listeners inside a VM and the host ports published to them
    Ports(RefJsonArgs),
    /// Publish host ports into a VM (or stop publishing them with --remove)
    #[command(
        name = "port-forward",
        after_help = "Examples:\n  banger vm port-forward web 8080:80            # http://127.0.0.1:8080 reaches port 80 of web\n  banger vm port-forward web 0.0.0.0:5432:5432  # reachable from other machines\n  banger vm port-forward web --remove 8080:80"
    )]
    PortForward(PortForwardArgs),
    /// Copy files and directory trees between the host and a VM
    #[command(
        after_help = "Examples:\n  banger vm cp ./config web:/etc/app         # a directory into the VM\n  banger vm cp web:/var/log/app.log .        # a file out of it\n  tar -c src | banger vm cp - web:/root/src  # a tar stream (the directory must exist)\n  banger vm cp web:/root/out - | tar -t      # ...and out as one"
    )]
    Cp(VmCpArgs),
    /// Copy a git checkout into a VM, or export the work done there
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
}

#[derive(Debug, Args)]
pub struct VmCpArgs {
    /// What to copy: a host path, REF:PATH in a VM (relative to /root), or - (a tar on stdin)
    #[arg(value_name = "SRC")]
    pub src: String,
    /// Where to: REF:PATH, a host path, or - (a tar on stdout); an existing directory receives SRC inside it
    #[arg(value_name = "DST")]
    pub dst: String,
}

const RUN_EXAMPLES: &str = "Examples:
  banger vm run                                a shell in a fresh VM
  banger vm run . -- make test                 several words: run as words (each one quoted)
  banger vm run . -- 'make lint && make test'  one argument: a command line for the guest's shell
  banger vm run --rm . -- cargo test           delete the VM when the command ends";

const SSH_EXAMPLES: &str = "Examples:
  banger vm ssh box                    a login shell
  banger vm ssh box -- sh -c 'exit 3'  several words: run as words (each one quoted); exits 3
  banger vm ssh box -- 'id; uname -r'  one argument: a command line for the guest's shell";

/// Size and placement flags shared by `vm run` and `vm create`.
#[derive(Debug, Clone, Args)]
pub struct CreateFlags {
    /// VM name (a DNS label; the VM answers as NAME.vm) [default: random]
    #[arg(long)]
    pub name: Option<String>,
    /// Image name or id [default: the default image]
    #[arg(long)]
    pub image: Option<String>,
    /// Virtual CPUs
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub vcpu: Option<i64>,
    /// Memory in MiB
    #[arg(long, value_name = "MiB", allow_negative_numbers = true)]
    pub memory: Option<i64>,
    /// Size of the guest's /root disk, e.g. 8G
    #[arg(long, value_name = "SIZE")]
    pub disk_size: Option<ByteSize>,
    /// Give the VM outbound network access through NAT (the default unless `[network] nat = false`)
    #[arg(long, conflicts_with = "no_nat")]
    pub nat: bool,
    /// Keep the VM off the outside network: no NAT (it still reaches the host's bridge)
    #[arg(long)]
    pub no_nat: bool,
    /// Which VMM runs the guest: firecracker, qemu (the real kernel in QEMU; software emulation without usable KVM), or sim (namespaces, no hypervisor)
    #[arg(long, value_name = "VMM", value_parser = parse_vmm)]
    pub vmm: Option<VmmKind>,
    /// Publish a host port into the VM: [HOST_ADDR:]HOST_PORT:GUEST_PORT
    /// (TCP; HOST_ADDR defaults to 127.0.0.1), e.g. -p 8080:80; repeatable
    #[arg(short = 'p', long = "publish", value_name = "PORTS", value_parser = parse_port_forward)]
    pub publish: Vec<PortForward>,
    /// Create the VM even when the free space cannot hold its disks
    /// (they are sparse; a guest that fills them fills the host's filesystem)
    #[arg(long)]
    pub allow_overcommit: bool,
}

fn parse_port_forward(raw: &str) -> Result<PortForward, String> {
    raw.parse()
        .map_err(|err: banger_model::publish::PortForwardError| err.to_string())
}

#[derive(Debug, Args)]
pub struct PortForwardArgs {
    /// Name, id or unique id prefix
    #[arg(value_name = "REF")]
    pub reference: String,
    /// [HOST_ADDR:]HOST_PORT:GUEST_PORT, as for `vm run -p`
    #[arg(value_name = "PORTS", required = true, value_parser = parse_port_forward)]
    pub ports: Vec<PortForward>,
    /// Stop publishing these ports instead
    #[arg(long)]
    pub remove: bool,
}

fn parse_profile(raw: &str) -> Result<ImageProfile, String> {
    ImageProfile::parse(raw)
        .ok_or_else(|| format!("{raw:?} is not a profile; use developer or minimal"))
}

fn parse_vmm(raw: &str) -> Result<VmmKind, String> {
    VmmKind::parse(raw).ok_or_else(|| format!("{raw:?} is not a VMM; use firecracker, qemu or sim"))
}

#[derive(Debug, Args)]
pub struct VmRunArgs {
    #[command(flatten)]
    pub create: CreateFlags,
    /// Create a guest-only branch B for the checkout
    #[arg(long, value_name = "B")]
    pub branch: Option<String>,
    /// Start --branch from REF instead of HEAD (needs --branch)
    #[arg(long, value_name = "REF", requires = "branch")]
    pub from: Option<String>,
    /// Delete the VM when the session or command ends
    #[arg(long)]
    pub rm: bool,
    /// With --rm: before deleting, write the workspace's changes (a patch
    /// for `git apply` in this checkout) to FILE
    #[arg(long, value_name = "FILE", requires_all = ["rm", "path"])]
    pub export: Option<PathBuf>,
    /// Copy the whole directory (submodules included) instead of git history plus changes
    #[arg(long)]
    pub full_copy: bool,
    /// A path inside the git repository to copy to /root/repo
    pub path: Option<PathBuf>,
    /// Command to run in the VM (after --): one argument is a shell command line, several are words; banger exits with its exit code
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct VmCreateArgs {
    #[command(flatten)]
    pub create: CreateFlags,
    /// Print the created VM as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RefsArgs {
    /// VM names, ids or unique id prefixes
    #[arg(required = true, value_name = "REF")]
    pub refs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct VmSetArgs {
    /// VM names, ids or unique id prefixes
    #[arg(required = true, value_name = "REF")]
    pub refs: Vec<String>,
    /// Virtual CPUs
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub vcpu: Option<i64>,
    /// Memory in MiB
    #[arg(long, value_name = "MiB", allow_negative_numbers = true)]
    pub memory: Option<i64>,
    /// New /root disk size (grow only), e.g. 16G
    #[arg(long, value_name = "SIZE")]
    pub disk_size: Option<ByteSize>,
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RefJsonArgs {
    /// Name, id or unique id prefix
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RefArg {
    /// Name, id or unique id prefix
    #[arg(value_name = "REF")]
    pub reference: String,
}

#[derive(Debug, Args)]
pub struct VmLogsArgs {
    /// VM name, id or unique id prefix
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Keep printing as the logs grow
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct VmSshArgs {
    /// VM name, id or unique id prefix
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Command to run instead of a shell (after --): one argument is a shell command line, several are words
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Copy the git checkout around PATH into the VM at /root/repo
    Prepare(WorkspacePrepareArgs),
    /// Print a binary-safe patch of everything changed in the VM since the base commit
    Export(WorkspaceExportArgs),
}

#[derive(Debug, Args)]
pub struct WorkspacePrepareArgs {
    /// VM name, id or unique id prefix
    #[arg(value_name = "REF")]
    pub reference: String,
    /// A path inside the git repository
    pub path: PathBuf,
    /// Create a guest-only branch B
    #[arg(long, value_name = "B")]
    pub branch: Option<String>,
    /// Start --branch from REF (needs --branch)
    #[arg(long, value_name = "REF", requires = "branch")]
    pub from: Option<String>,
    /// Copy submodules too (full copy instead of a git bundle)
    #[arg(long)]
    pub full_copy: bool,
}

#[derive(Debug, Args)]
pub struct WorkspaceExportArgs {
    /// VM name, id or unique id prefix
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Diff against this commit [default: the head recorded at prepare time]
    #[arg(long, value_name = "SHA")]
    pub base_commit: Option<String>,
    /// Write the patch to FILE instead of stdout
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an OCI image (e.g. docker.io/library/debian:bookworm) or a catalog image
    Pull(ImagePullArgs),
    /// Turn a rootfs directory or tarball into an image
    Import(ImageImportArgs),
    /// Register existing rootfs/work-seed ext4 files as an image
    Register(ImageRegisterArgs),
    /// Build an image from distribution packages (debootstrap)
    Bootstrap(ImageBootstrapArgs),
    /// List images
    #[command(visible_alias = "ls")]
    List(JsonFlag),
    /// Show one image with its digests and sizes
    Show(RefJsonArgs),
    /// Delete an image (refused while VMs use it)
    #[command(visible_alias = "rm")]
    Delete(RefArg),
    /// Make an image the default for new VMs
    Promote(RefArg),
}

#[derive(Debug, Args)]
pub struct ImagePullArgs {
    /// OCI reference or catalog name
    pub reference: String,
    /// Name for the image [default: derived from the reference]
    #[arg(long)]
    pub name: Option<String>,
    /// Kernel to boot it with [default: the default kernel]
    #[arg(long, value_name = "K")]
    pub kernel_ref: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImageImportArgs {
    /// Rootfs directory or tarball (.tar, .tar.gz, .tar.zst)
    pub path: PathBuf,
    /// Name for the image
    #[arg(long)]
    pub name: String,
    /// Kernel to boot it with [default: the default kernel]
    #[arg(long, value_name = "K")]
    pub kernel_ref: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImageRegisterArgs {
    /// Name for the image
    #[arg(long)]
    pub name: String,
    /// Existing root filesystem (ext4)
    #[arg(long)]
    pub rootfs: PathBuf,
    /// Existing /root seed (ext4) [default: made from the rootfs's /root]
    #[arg(long)]
    pub work_seed: Option<PathBuf>,
    /// Kernel to boot it with [default: the default kernel]
    #[arg(long, value_name = "K")]
    pub kernel_ref: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImageBootstrapArgs {
    /// Distribution and release: debian:bookworm or debian:trixie (debian:12, debian:13)
    #[arg(default_value = "debian:bookworm")]
    pub distro: String,
    /// Name for the image [default: derived from the distro]
    #[arg(long)]
    pub name: Option<String>,
    /// Package set: developer (compilers and make, git, curl, tmux, editors, jq, Python with venv and pip, Docker with compose, …) or minimal (sshd, systemd, iproute2, git, procps, TLS roots)
    #[arg(long, value_name = "PROFILE", default_value = "developer", value_parser = parse_profile)]
    pub profile: ImageProfile,
    /// Extra packages, comma-separated, on top of the profile's
    #[arg(long, value_delimiter = ',')]
    pub packages: Vec<String>,
    /// Package mirror URL [default: the distribution's, e.g. http://deb.debian.org/debian]
    #[arg(long)]
    pub mirror: Option<String>,
    /// Kernel to boot it with [default: the default kernel]
    #[arg(long, value_name = "K")]
    pub kernel_ref: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// Download a kernel from the catalog
    Pull(KernelPullArgs),
    /// Register a directory holding vmlinux (and optionally initrd.img and modules.ext4)
    Import(KernelImportArgs),
    /// Build a kernel from the distribution's packages
    Bootstrap(KernelBootstrapArgs),
    /// List kernels
    #[command(visible_alias = "ls")]
    List(JsonFlag),
    /// Show one kernel
    Show(RefJsonArgs),
    /// Delete a kernel (refused while images use it)
    Rm(RefArg),
}

#[derive(Debug, Args)]
pub struct KernelPullArgs {
    /// Catalog name
    pub name: String,
}

#[derive(Debug, Args)]
pub struct KernelImportArgs {
    /// Directory containing vmlinux and optionally initrd.img
    pub dir: PathBuf,
    /// Name for the kernel
    #[arg(long)]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct KernelBootstrapArgs {
    /// Distribution (its cloud kernel, e.g. Debian's linux-image-cloud-amd64): debian, debian:trixie
    #[arg(default_value = "debian")]
    pub distro: String,
    /// Name for the kernel [default: e.g. debian-bookworm-cloud]
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SshConfigArgs {
    /// Add an Include of banger's ssh_config to ~/.ssh/config
    #[arg(long, conflicts_with = "uninstall")]
    pub install: bool,
    /// Remove banger's Include from ~/.ssh/config
    #[arg(long)]
    pub uninstall: bool,
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start the daemon if it is not running
    Start,
    /// Stop the daemon (VMs keep running and are re-adopted at next start)
    Stop,
    /// Show whether the daemon runs, its build, socket and log
    Status(JsonFlag),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// Shell to print the script for
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct GenerateManArgs {
    /// Directory to write banger.1, banger-vm.1, banger-vm-run.1, … into
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Only report whether an update is available
    #[arg(long)]
    pub check: bool,
    /// Allow installing an older version
    #[arg(long)]
    pub allow_downgrade: bool,
}

/// The command tree with the resolved VM defaults written into the help of
/// `vm run` and `vm create`, e.g. `--vcpu N  Virtual CPUs [default: 2 (host)]`.
pub fn command_with_defaults(defaults: &banger_model::defaults::VmDefaults) -> clap::Command {
    use clap::CommandFactory;
    let vcpu = format!(
        "Virtual CPUs [default: {} ({})]",
        defaults.vcpu.value, defaults.vcpu.provenance
    );
    let memory = format!(
        "Memory in MiB [default: {} ({})]",
        defaults.memory_mib.value, defaults.memory_mib.provenance
    );
    let disk = format!(
        "Size of the guest's /root disk, e.g. 8G [default: {} ({})]",
        defaults.disk_size.value, defaults.disk_size.provenance
    );
    let annotate = |command: clap::Command| {
        command
            .mut_arg("vcpu", |arg| arg.help(vcpu.clone()))
            .mut_arg("memory", |arg| arg.help(memory.clone()))
            .mut_arg("disk_size", |arg| arg.help(disk.clone()))
    };
    Cli::command().mut_subcommand("vm", |vm| {
        vm.mut_subcommand("run", annotate)
            .mut_subcommand("create", annotate)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn from_requires_branch() {
        let err = Cli::try_parse_from(["banger", "vm", "run", "--from", "main", "."]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(err.to_string().contains("--branch"), "{err}");
    }

    #[test]
    fn run_takes_path_and_command() {
        let cli = Cli::try_parse_from([
            "banger", "vm", "run", "--rm", ".", "--", "make", "-j4", "test",
        ])
        .unwrap();
        let Command::Vm(VmCommand::Run(run)) = cli.command else {
            panic!("not vm run")
        };
        assert!(run.rm);
        assert_eq!(run.path, Some(PathBuf::from(".")));
        assert_eq!(run.command, ["make", "-j4", "test"]);
    }

    #[test]
    fn negative_sizes_reach_validation() {
        let cli = Cli::try_parse_from(["banger", "vm", "create", "--vcpu", "-1"]).unwrap();
        let Command::Vm(VmCommand::Create(create)) = cli.command else {
            panic!()
        };
        assert_eq!(create.create.vcpu, Some(-1));
        assert!(Cli::try_parse_from(["banger", "vm", "create", "--disk-size", "8"]).is_err());
        assert!(Cli::try_parse_from(["banger", "vm", "create", "--vmm", "bochs"]).is_err());
    }
}
