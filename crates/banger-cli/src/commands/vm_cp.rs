//! `banger vm cp SRC DST`: a file or a directory tree between the host and a
//! VM, as `docker cp` copies: `REF:PATH` names the guest side (a relative
//! PATH is under /root), `-` a tar stream on stdin or stdout. A DST that is
//! an existing directory receives SRC inside it; otherwise SRC becomes DST.
//! Modes and times are kept; files belong to whoever receives them.
//!
//! The remote side runs a constant script; the guest paths travel as the
//! first lines of its stdin, never in a command line.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use banger_model::layout::Layout;

use super::ssh_args::ssh_args;
use super::vm_workspace::running_ssh_info;
use crate::args::VmCpArgs;
use crate::output::ExitError;

/// Receives a tar into the guest. Reads the destination and the name of
/// the archive's top entry (empty for a `-` stream) from its first lines.
const TO_GUEST: &str = r#"set -e
IFS= read -r dest
IFS= read -r name
case $dest in /*) ;; *) dest=/root/$dest ;; esac
if [ -z "$name" ] || [ -d "$dest" ]; then exec tar -x -p --no-same-owner -C "$dest"; fi
parent=$(dirname -- "$dest")
[ -d "$parent" ] || { echo "$parent: no such directory" >&2; exit 1; }
tmp=$(mktemp -d "$parent/.banger-cp.XXXXXX")
if tar -x -p --no-same-owner -C "$tmp" && mv -fT -- "$tmp/$name" "$dest"; then rmdir -- "$tmp"; else rm -rf -- "$tmp"; exit 1; fi"#;

/// Sends a guest path as a tar whose top entry is its last component.
const FROM_GUEST: &str = r#"IFS= read -r src
case $src in /*) ;; *) src=/root/$src ;; esac
if [ ! -e "$src" ] && [ ! -L "$src" ]; then echo "$src: no such file or directory" >&2; exit 1; fi
exec tar -c -C "$(dirname -- "$src")" -- "$(basename -- "$src")""#;

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Side {
    Host(PathBuf),
    /// `-`: a tar stream on stdin or stdout.
    Stream,
    Guest {
        vm: String,
        path: String,
    },
}

impl Side {
    /// `REF:PATH` is the guest when REF has no `/` (write `./a:b` for a
    /// host path with a colon), `-` a stream, anything else a host path.
    fn parse(raw: &str) -> Self {
        if raw == "-" {
            return Self::Stream;
        }
        match raw.split_once(':') {
            Some((vm, path)) if !vm.is_empty() && !vm.contains('/') => Self::Guest {
                vm: vm.to_owned(),
                path: path.to_owned(),
            },
            _ => Self::Host(PathBuf::from(raw)),
        }
    }
}

pub(super) async fn run(layout: &Layout, args: &VmCpArgs) -> anyhow::Result<ExitCode> {
    match (Side::parse(&args.src), Side::parse(&args.dst)) {
        (src, Side::Guest { vm, path }) if !matches!(src, Side::Guest { .. }) => {
            check_guest_path(&path)?;
            let info = running_ssh_info(layout, &vm).await?;
            let ssh = ssh_args(&info, Some(TO_GUEST), false);
            tokio::task::spawn_blocking(move || to_guest(&ssh, &src, &path)).await??;
        }
        (Side::Guest { vm, path }, dst) if !matches!(dst, Side::Guest { .. }) => {
            check_guest_path(&path)?;
            let name = last_component(&path)?;
            let info = running_ssh_info(layout, &vm).await?;
            let ssh = ssh_args(&info, Some(FROM_GUEST), false);
            tokio::task::spawn_blocking(move || from_guest(&ssh, &path, &name, &dst)).await??;
        }
        _ => {
            return Err(ExitError {
                message: "one side of `vm cp` must be a VM (REF:PATH) and the other the host \
                          (a path, or - for a tar stream)"
                    .into(),
                code: 2,
            }
            .into());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Guest paths travel as lines: no newline or NUL, and not empty.
fn check_guest_path(path: &str) -> anyhow::Result<()> {
    if path.is_empty() || path.contains(['\n', '\0']) {
        return Err(ExitError {
            message: format!("{path:?} is not a guest path (write REF:/path)"),
            code: 2,
        }
        .into());
    }
    Ok(())
}

/// The last component of a path, the name its copy gets.
fn last_component(path: &str) -> anyhow::Result<String> {
    match Path::new(path).file_name() {
        Some(name) => Ok(name.to_string_lossy().into_owned()),
        None => bail!("{path:?} has no name to copy (copy a file or directory in it instead)"),
    }
}

fn to_guest(ssh: &[std::ffi::OsString], src: &Side, dest: &str) -> anyhow::Result<()> {
    let mut child = crate::exec::ssh_piped(ssh, true, false).context("running ssh")?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let sent = (|| -> anyhow::Result<()> {
        match src {
            Side::Stream => {
                writeln!(stdin, "{dest}\n")?;
                std::io::copy(&mut std::io::stdin().lock(), &mut stdin)?;
            }
            Side::Host(path) => {
                let meta = fs_err::symlink_metadata(path)?;
                let name = path
                    .file_name()
                    .with_context(|| format!("{} has no name to copy", path.display()))?;
                writeln!(stdin, "{dest}\n{}", name.to_string_lossy())?;
                let mut tar = tar::Builder::new(&mut stdin);
                tar.follow_symlinks(false);
                if meta.is_dir() {
                    tar.append_dir_all(name, path)?;
                } else {
                    tar.append_path_with_name(path, name)?;
                }
                tar.finish()?;
            }
            Side::Guest { .. } => unreachable!("checked by the caller"),
        }
        Ok(())
    })();
    drop(stdin);
    let status = child.wait().context("waiting for ssh")?;
    if !status.success() {
        bail!("copying into the VM failed ({status})");
    }
    sent.context("sending the files")
}

fn from_guest(ssh: &[std::ffi::OsString], src: &str, name: &str, dst: &Side) -> anyhow::Result<()> {
    let mut child = crate::exec::ssh_piped(ssh, true, true).context("running ssh")?;
    {
        let mut stdin = child.stdin.take().expect("piped stdin");
        writeln!(stdin, "{src}")?;
    }
    let mut stdout = child.stdout.take().expect("piped stdout");
    let received = match dst {
        Side::Stream => std::io::copy(&mut stdout, &mut std::io::stdout().lock())
            .map(drop)
            .map_err(anyhow::Error::from),
        Side::Host(path) => unpack_into(&mut stdout, name, path),
        Side::Guest { .. } => unreachable!("checked by the caller"),
    };
    // Drain what is left so ssh can finish, then judge by its status.
    let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    let status = child.wait().context("waiting for ssh")?;
    if !status.success() {
        bail!("copying out of the VM failed ({status})");
    }
    received
}

/// Unpacks the guest's tar (top entry `name`) at `dst`: inside it when it
/// is a directory, else as `dst` itself (through a private directory beside
/// it, so a half-received copy never sits at `dst`). Entries cannot leave
/// the directory they are unpacked in; owners are not taken from the guest.
fn unpack_into(stream: &mut dyn Read, name: &str, dst: &Path) -> anyhow::Result<()> {
    let unpack = |into: &Path, stream: &mut dyn Read| -> anyhow::Result<()> {
        let mut archive = tar::Archive::new(stream);
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_overwrite(true);
        archive
            .unpack(into)
            .with_context(|| format!("unpacking into {}", into.display()))
    };
    if dst.is_dir() {
        return unpack(dst, stream);
    }
    let parent = match dst.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let staging = tempfile::Builder::new()
        .prefix(".banger-cp")
        .tempdir_in(parent)
        .with_context(|| format!("cannot write into {}", parent.display()))?;
    unpack(staging.path(), stream)?;
    fs_err::rename(staging.path().join(name), dst)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_parse_like_docker_cp() {
        assert_eq!(
            Side::parse("web:/etc/hosts"),
            Side::Guest {
                vm: "web".into(),
                path: "/etc/hosts".into()
            }
        );
        assert_eq!(
            Side::parse("web:notes.txt"),
            Side::Guest {
                vm: "web".into(),
                path: "notes.txt".into()
            }
        );
        assert_eq!(Side::parse("-"), Side::Stream);
        assert_eq!(Side::parse("./a:b"), Side::Host("./a:b".into()));
        assert_eq!(Side::parse("/tmp/x"), Side::Host("/tmp/x".into()));
    }

    #[test]
    fn the_remote_scripts_take_nothing_from_their_command_line() {
        for script in [TO_GUEST, FROM_GUEST] {
            assert!(!script.contains("$1") && !script.contains("$@"), "{script}");
            assert!(script.starts_with("set -e\n") || script.starts_with("IFS= read -r"));
        }
        assert!(check_guest_path("a\nb").is_err());
        assert!(last_component("/").is_err());
        assert_eq!(last_component("/root/dir/").unwrap(), "dir");
    }

    #[test]
    fn a_received_tree_lands_as_dst_or_inside_an_existing_dir() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("tree");
        fs_err::create_dir_all(src.join("sub")).unwrap();
        fs_err::write(src.join("sub/run.sh"), "#!/bin/sh\n").unwrap();
        fs_err::set_permissions(
            src.join("sub/run.sh"),
            std::fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        tar.append_dir_all("tree", &src).unwrap();
        let bytes = tar.into_inner().unwrap();

        let renamed = dir.path().join("copy");
        unpack_into(&mut bytes.as_slice(), "tree", &renamed).unwrap();
        let mode = fs_err::metadata(renamed.join("sub/run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750);

        let existing = dir.path().join("existing");
        fs_err::create_dir_all(&existing).unwrap();
        unpack_into(&mut bytes.as_slice(), "tree", &existing).unwrap();
        assert!(existing.join("tree/sub/run.sh").is_file());
        // No staging dir is left behind.
        let leftovers: Vec<_> = fs_err::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".banger-cp")
            })
            .collect();
        assert!(leftovers.is_empty());
    }
}
