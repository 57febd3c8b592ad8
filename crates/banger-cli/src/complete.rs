//! Live shell completion: VM, image and kernel names from the running daemon.
//!
//! `banger completion SHELL` prints a script that calls back into `banger`
//! with `COMPLETE=SHELL` set (clap_complete's dynamic protocol); [`main`]
//! answers those calls before anything else runs. The completers attached
//! here ask the daemon for names, but only a daemon that already runs
//! ([`daemon_client::connect_existing`], bounded by [`TIMEOUT`]): completing
//! never starts or restarts a daemon, and without one it quietly offers
//! nothing. Completers of arguments that take many refs skip the names
//! already on the command line.
//!
//! [`main`]: crate::main

use banger_rpc::{NoParams, method};
use std::ffi::{OsStr, OsString};
use std::time::Duration;

use banger_model::layout::Layout;
use banger_rpc::response::{ImageListResult, KernelListResult, VmListResult};
use clap::{Command, CommandFactory};
use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};

use crate::args::{Cli, Shell};
use crate::daemon_client;

/// How long a completer waits for the daemon before offering nothing.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The environment variable of clap_complete's protocol.
pub const VAR: &str = "COMPLETE";

/// The command tree with the live completers attached (the factory for
/// [`clap_complete::CompleteEnv`]). Completing an empty word offers values
/// and subcommands only: `vm ssh <TAB>` lists VM names, and with none to
/// offer (no daemon) the shell inserts nothing, rather than the `--` that
/// `--help` and `--version` have in common. Typing `-` first offers them.
pub fn command() -> Command {
    let cli = attach(Cli::command());
    let args = std::env::args_os().collect::<Vec<_>>();
    if completing_empty_word(&args, completion_index()) {
        without_help_flags(cli)
    } else {
        cli
    }
}

/// Whether the word being completed (`args` is our own argv: `banger --
/// banger vm ssh ''`) is empty.
fn completing_empty_word(args: &[OsString], index: Option<usize>) -> bool {
    let Some(start) = args.iter().position(|arg| arg == "--") else {
        return false;
    };
    let words = &args[start + 1..];
    let current = index.unwrap_or(words.len().saturating_sub(1));
    words.get(current).is_none_or(|word| word.is_empty())
}

/// The command tree without `--help`/`--version` flags, all the way down.
fn without_help_flags(command: Command) -> Command {
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    let mut command = command.disable_help_flag(true).disable_version_flag(true);
    for name in names {
        command = command.mut_subcommand(name, without_help_flags);
    }
    command
}

/// Answers a completion request (`COMPLETE=SHELL banger -- WORDS…`) and
/// exits; returns at once on a normal run.
pub fn answer_and_exit_if_asked() {
    clap_complete::CompleteEnv::with_factory(command)
        .var(VAR)
        .complete();
}

/// The registration script for `shell`: it calls `banger` (found on `PATH`
/// when completing) with [`VAR`] set.
pub fn script(shell: Shell) -> std::io::Result<Vec<u8>> {
    use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};
    let mut out = Vec::new();
    let completer: &dyn EnvCompleter = match shell {
        Shell::Bash => &Bash,
        Shell::Zsh => &Zsh,
        Shell::Fish => &Fish,
    };
    completer.write_registration(VAR, "banger", "banger", "banger", &mut out)?;
    if shell == Shell::Zsh {
        // Installed as `_banger` in $fpath, the file is autoloaded as the
        // completion function itself: complete right away, not only on the
        // next Tab.
        out.extend_from_slice(
            b"if [ \"${funcstack[1]}\" = \"_banger\" ]; then\n    _clap_dynamic_completer_banger \"$@\"\nfi\n",
        );
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Vm,
    Image,
    Kernel,
}

/// Attaches the completers to the arguments that take names.
pub fn attach(cli: Command) -> Command {
    let one =
        |kind| ArgValueCompleter::new(move |current: &OsStr| candidates(kind, current, false));
    let many =
        |kind| ArgValueCompleter::new(move |current: &OsStr| candidates(kind, current, true));
    // `mut_args` keeps the arguments in place (`mut_arg` would move one to
    // the end and renumber the positionals).
    let with = |command: Command, arg: &str, completer: ArgValueCompleter| {
        command.mut_args(|a| {
            if a.get_id() == arg {
                a.add(completer.clone())
            } else {
                a
            }
        })
    };
    cli.mut_subcommand("vm", |vm| {
        let mut vm = vm;
        for name in ["start", "stop", "restart", "delete", "kill", "set"] {
            vm = vm.mut_subcommand(name, |c| with(c, "refs", many(Kind::Vm)));
        }
        for name in ["show", "logs", "stats", "ssh", "health", "ports"] {
            vm = vm.mut_subcommand(name, |c| with(c, "reference", one(Kind::Vm)));
        }
        for name in ["run", "create"] {
            vm = vm.mut_subcommand(name, |c| with(c, "image", one(Kind::Image)));
        }
        vm.mut_subcommand("workspace", |workspace| {
            workspace
                .mut_subcommand("prepare", |c| with(c, "reference", one(Kind::Vm)))
                .mut_subcommand("export", |c| with(c, "reference", one(Kind::Vm)))
        })
    })
    .mut_subcommand("image", |image| {
        let mut image = image;
        for name in ["show", "delete", "promote"] {
            image = image.mut_subcommand(name, |c| with(c, "reference", one(Kind::Image)));
        }
        for name in ["pull", "import", "register"] {
            image = image.mut_subcommand(name, |c| with(c, "kernel_ref", one(Kind::Kernel)));
        }
        image
    })
    .mut_subcommand("kernel", |kernel| {
        kernel
            .mut_subcommand("show", |c| with(c, "reference", one(Kind::Kernel)))
            .mut_subcommand("rm", |c| with(c, "reference", one(Kind::Kernel)))
    })
}

fn candidates(kind: Kind, current: &OsStr, skip_typed: bool) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    let typed = if skip_typed {
        typed_words(&std::env::args_os().collect::<Vec<_>>(), completion_index())
    } else {
        Vec::new()
    };
    live_names(kind)
        .into_iter()
        .filter(|(name, _)| name.starts_with(current.as_ref()))
        .filter(|(name, _)| !typed.contains(name))
        .map(|(name, help)| CompletionCandidate::new(name).help(help.map(Into::into)))
        .collect()
}

/// The index of the word being completed, as the shell script passes it
/// (bash, zsh); `None` means the last word (fish).
fn completion_index() -> Option<usize> {
    std::env::var("_CLAP_COMPLETE_INDEX")
        .ok()
        .and_then(|index| index.parse().ok())
}

/// The words already typed after `banger VERB SUBVERB`, except the one being
/// completed and flags. `args` is our own argv: `banger -- banger vm stop a b`.
fn typed_words(args: &[OsString], index: Option<usize>) -> Vec<String> {
    let Some(start) = args.iter().position(|arg| arg == "--") else {
        return Vec::new();
    };
    let words = &args[start + 1..];
    let current = index.unwrap_or(words.len().saturating_sub(1));
    words
        .iter()
        .enumerate()
        .skip(3)
        .filter(|(at, word)| *at != current && !word.to_string_lossy().starts_with('-'))
        .map(|(_, word)| word.to_string_lossy().into_owned())
        .collect()
}

/// Names (with a short description) from a daemon that already runs, or
/// nothing.
fn live_names(kind: Kind) -> Vec<(String, Option<String>)> {
    let Ok(layout) = Layout::from_env() else {
        return Vec::new();
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    runtime
        .block_on(async {
            tokio::time::timeout(TIMEOUT, fetch(&layout, kind))
                .await
                .ok()
                .flatten()
        })
        .unwrap_or_default()
}

async fn fetch(layout: &Layout, kind: Kind) -> Option<Vec<(String, Option<String>)>> {
    let mut client = daemon_client::connect_existing(layout).await.ok()??;
    let names = match kind {
        Kind::Vm => {
            let list: VmListResult = client
                .call::<method::VmList>(NoParams {}, |_| {})
                .await
                .ok()?;
            list.vms
                .into_iter()
                .map(|vm| (vm.name.to_string(), Some(vm.state.as_str().to_owned())))
                .collect()
        }
        Kind::Image => {
            let list: ImageListResult = client
                .call::<method::ImageList>(NoParams {}, |_| {})
                .await
                .ok()?;
            list.images
                .into_iter()
                .map(|image| {
                    let help = image.is_default.then(|| "default".to_owned());
                    (image.name.to_string(), help)
                })
                .collect()
        }
        Kind::Kernel => {
            let list: KernelListResult = client
                .call::<method::KernelList>(NoParams {}, |_| {})
                .await
                .ok()?;
            list.kernels
                .into_iter()
                .map(|kernel| (kernel.name.to_string(), kernel.version))
                .collect()
        }
    };
    Some(names)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_empty_word_is_told_apart() {
        use std::ffi::OsString;
        let args = |words: &[&str]| -> Vec<OsString> {
            ["banger", "--", "banger"]
                .iter()
                .chain(words)
                .map(OsString::from)
                .collect()
        };
        assert!(super::completing_empty_word(
            &args(&["vm", "ssh", ""]),
            Some(3)
        ));
        assert!(super::completing_empty_word(
            &args(&["vm", "ssh", ""]),
            None
        ));
        assert!(!super::completing_empty_word(
            &args(&["vm", "ssh", "b"]),
            Some(3)
        ));
        assert!(!super::completing_empty_word(
            &args(&["vm", "ssh", "-"]),
            None
        ));
        // The word completed may be before the last one (bash, zsh).
        assert!(super::completing_empty_word(
            &args(&["vm", "ssh", "", "x"]),
            Some(3)
        ));
        assert!(!super::completing_empty_word(&["banger".into()], None));
    }

    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn typed_words_skip_the_command_the_current_word_and_flags() {
        let argv = args(&[
            "banger", "--", "banger", "vm", "stop", "web", "--x", "db", "we",
        ]);
        assert_eq!(typed_words(&argv, None), ["web", "db"]);
        assert_eq!(typed_words(&argv, Some(3)), ["db", "we"]);
        assert!(typed_words(&args(&["banger", "vm"]), None).is_empty());
    }

    #[test]
    fn every_named_argument_has_a_completer() {
        let cli = command();
        cli.clone().debug_assert();
        let arg = |path: &[&str], id: &str| {
            let mut command = &cli;
            for name in path {
                command = command.find_subcommand(name).unwrap();
            }
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == id)
                .unwrap_or_else(|| panic!("{path:?} has no {id}"));
            assert!(
                arg.get::<ArgValueCompleter>().is_some(),
                "{path:?} {id} has no completer"
            );
        };
        arg(&["vm", "stop"], "refs");
        arg(&["vm", "set"], "refs");
        arg(&["vm", "ssh"], "reference");
        arg(&["vm", "workspace", "export"], "reference");
        arg(&["vm", "run"], "image");
        arg(&["vm", "create"], "image");
        arg(&["image", "delete"], "reference");
        arg(&["image", "pull"], "kernel_ref");
        arg(&["image", "register"], "kernel_ref");
        arg(&["kernel", "rm"], "reference");
    }
}
