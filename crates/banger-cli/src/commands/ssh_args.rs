//! The `ssh` command line for a VM.

use std::ffi::OsString;

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
/// keeps `banger vm ssh x -- sh -c 'exit 7'` exactly three words there.
pub(super) fn remote_command(words: &[String]) -> String {
    words
        .iter()
        .map(|word| quote(word))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_survive_the_remote_shell() {
        let words = ["sh", "-c", "exit 7", "it's", "", "a$b"].map(String::from);
        assert_eq!(
            remote_command(&words),
            r#"sh -c 'exit 7' 'it'\''s' '' 'a$b'"#
        );
    }
}
