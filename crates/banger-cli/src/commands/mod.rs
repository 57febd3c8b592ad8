//! One module per verb.

mod bootstrap;
mod completion;
mod daemon;
pub(crate) mod default_image;
mod doctor;
mod image_list;
mod image_ops;
mod kernel_list;
mod man;
mod ssh_args;
pub(crate) mod ssh_config;
mod update;
mod version;
mod vm_batch;
mod vm_create;
mod vm_inspect;
mod vm_list;
mod vm_ops;
mod vm_ports;
mod vm_run;
mod vm_ssh;
mod vm_workspace;

use std::process::ExitCode;

use banger_model::layout::Layout;

use crate::args::{
    Cli, Command, DaemonCommand, ImageCommand, KernelCommand, VmCommand, WorkspaceCommand,
};

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Version(args) => version::run(&args),
        Command::Completion(args) => completion::run(&args),
        Command::Daemon(command) => {
            let layout = Layout::from_env()?;
            match command {
                DaemonCommand::Start => daemon::start(&layout).await,
                DaemonCommand::Stop => daemon::stop(&layout).await,
                DaemonCommand::Status(args) => daemon::status(&layout, &args).await,
            }
        }
        Command::Vm(command) => {
            let layout = Layout::from_env()?;
            match command {
                VmCommand::List(args) => vm_list::list(&layout, &args).await,
                VmCommand::Show(args) => vm_list::show(&layout, &args).await,
                VmCommand::Run(args) => vm_run::run(&layout, &args).await,
                VmCommand::Create(args) => vm_create::run(&layout, &args).await,
                VmCommand::Start(args) => vm_ops::start(&layout, &args.refs).await,
                VmCommand::Stop(args) => vm_ops::stop(&layout, &args.refs).await,
                VmCommand::Restart(args) => vm_ops::restart(&layout, &args.refs).await,
                VmCommand::Delete(args) => vm_ops::delete(&layout, &args.refs).await,
                VmCommand::Kill(args) => vm_ops::kill(&layout, &args.refs).await,
                VmCommand::Set(args) => vm_ops::set(&layout, &args).await,
                VmCommand::Logs(args) => vm_inspect::logs(&layout, &args).await,
                VmCommand::Stats(args) => vm_inspect::stats(&layout, &args).await,
                VmCommand::Ssh(args) => vm_ssh::run(&layout, &args).await,
                VmCommand::Health(args) => vm_inspect::health(&layout, &args).await,
                VmCommand::Ports(args) => vm_ports::run(&layout, &args).await,
                VmCommand::PortForward(args) => vm_ports::port_forward(&layout, &args).await,
                VmCommand::Workspace(WorkspaceCommand::Prepare(args)) => {
                    vm_workspace::prepare_cmd(&layout, &args).await
                }
                VmCommand::Workspace(WorkspaceCommand::Export(args)) => {
                    vm_workspace::export_cmd(&layout, &args).await
                }
            }
        }
        Command::Image(command) => {
            let layout = Layout::from_env()?;
            match command {
                ImageCommand::List(args) => image_list::list(&layout, &args).await,
                ImageCommand::Show(args) => image_list::show(&layout, &args).await,
                ImageCommand::Pull(args) => image_ops::image_pull(&layout, &args).await,
                ImageCommand::Import(args) => image_ops::image_import(&layout, &args).await,
                ImageCommand::Register(args) => image_ops::image_register(&layout, &args).await,
                ImageCommand::Bootstrap(args) => bootstrap::image(&layout, &args).await,
                ImageCommand::Delete(args) => image_ops::image_delete(&layout, &args).await,
                ImageCommand::Promote(args) => image_ops::image_promote(&layout, &args).await,
            }
        }
        Command::Kernel(command) => {
            let layout = Layout::from_env()?;
            match command {
                KernelCommand::List(args) => kernel_list::list(&layout, &args).await,
                KernelCommand::Show(args) => kernel_list::show(&layout, &args).await,
                KernelCommand::Pull(args) => image_ops::kernel_pull(&layout, &args).await,
                KernelCommand::Import(args) => image_ops::kernel_import(&layout, &args).await,
                KernelCommand::Bootstrap(args) => bootstrap::kernel(&layout, &args).await,
                KernelCommand::Rm(args) => image_ops::kernel_rm(&layout, &args).await,
            }
        }
        Command::Doctor(args) => doctor::run(&Layout::from_env()?, &args).await,
        Command::SshConfig(args) => ssh_config::run(&Layout::from_env()?, &args),
        Command::Update(args) => update::run(&Layout::from_env()?, &args).await,
        Command::GenerateMan(args) => man::generate(&args),
    }
}
