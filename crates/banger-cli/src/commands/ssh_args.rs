//! The `ssh` command line for a VM.

use std::ffi::OsString;

use banger_guest::files::SESSION_PATH;
use banger_model::contract::SSH_KEX_FIRST;
use banger_model::shell::quote;
use banger_rpc::response::SshInfo;

/// Options that make ssh to a banger VM quiet and prompt-free: the managed
/// key only, this VM's own known_hosts file, new host keys accepted.
/// `remote` is a shell command line banger wrote itself (or quoted).
pub(super) fn ssh_args(info: &SshInfo, remote: Option<&str>, force_tty: bool) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "-i".into(),
        info.key_path.clone().into(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", info.known_hosts.display()).into(),
        "-o".into(),
        "StrictHostKeyChecking=accept-new".into(),
        "-o".into(),
        format!("HostKeyAlias={}.vm", info.name).into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
        "-o".into(),
        "ConnectTimeout=10".into(),
        "-o".into(),
        format!("KexAlgorithms={SSH_KEX_FIRST}").into(),
    ];
    if force_tty {
        args.push("-t".into());
    }
    args.push(format!("{}@{}", info.user, info.ip).into());
    if let Some(remote) = remote {
        args.push("--".into());
        args.push(remote.into());
    }
    args
}

/// The remote side of ssh always runs one shell string; quoting every word
/// The shell command line for `-- CMD...`, as ssh builds it: one argument
/// is the user's own command line, run by the guest's shell as written
/// (`-- "make lint && make test"`); several are words, each quoted, so
/// `-- sh -c 'exit 7'` stays exactly three words there.
pub(super) fn command_line(command: &[String]) -> String {
    match command {
        [line] => line.clone(),
        words => words
            .iter()
            .map(|word| quote(word))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// What ssh runs in the guest for a command line: in `cwd` when given, under
/// banger's session guard when the image has it (it stops the command when
/// the SSH session goes away), by the guest user's shell. Only `line` comes
/// from the user, and it reaches that shell as one quoted argument.
pub(super) fn remote_script(line: &str, cwd: Option<&str>) -> String {
    let mut script = String::new();
    if let Some(dir) = cwd {
        script.push_str(&format!("cd {} || exit 1\n", quote(dir)));
    }
    script.push_str(&format!(
        r#"g={SESSION_PATH}; [ -x "$g" ] || g=; exec $g "${{SHELL:-/bin/sh}}" -c {}"#,
        quote(line)
    ));
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_words_survive_the_remote_shell() {
        let words = ["sh", "-c", "exit 7", "it's", "", "a$b"].map(String::from);
        assert_eq!(command_line(&words), r#"sh -c 'exit 7' 'it'\''s' '' 'a$b'"#);
    }

    #[test]
    fn one_argument_is_a_command_line() {
        assert_eq!(command_line(&["echo a; echo b".into()]), "echo a; echo b");
        assert_eq!(command_line(&["true".into()]), "true");
    }

    #[test]
    fn the_script_runs_the_line_in_the_shell_under_the_guard() {
        assert_eq!(
            remote_script("echo a; echo 'b'", None),
            r#"g=/usr/local/libexec/banger-session; [ -x "$g" ] || g=; exec $g "${SHELL:-/bin/sh}" -c 'echo a; echo '\''b'\'''"#
        );
        let script = remote_script("make test", Some("/root/repo"));
        assert!(script.starts_with("cd /root/repo || exit 1\n"), "{script}");
        assert!(script.ends_with("-c 'make test'"), "{script}");
    }
}
