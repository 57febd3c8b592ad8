//! `banger ssh-config [--install|--uninstall]`
//!
//! The daemon writes banger's own ssh_config; this command only ever edits
//! `~/.ssh/config` when asked, and only banger's marker-fenced block (see
//! [`crate::ssh_include`]). Nothing here touches keys.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use banger_model::layout::Layout;

use crate::args::SshConfigArgs;
use crate::ssh_include::{self, State};

/// `~/.ssh/config` of this layout's home.
pub(crate) fn user_config(layout: &Layout) -> PathBuf {
    layout.home.join(".ssh").join("config")
}

/// What `~/.ssh/config` holds of banger, for `doctor`.
pub(crate) fn include_state(layout: &Layout) -> banger_doctor::IncludeState {
    use banger_doctor::IncludeState;
    match std::fs::read(user_config(layout)) {
        Ok(text) => match ssh_include::state(&text) {
            State::Installed => IncludeState::Installed,
            State::Misplaced => IncludeState::Misplaced,
            State::Legacy => IncludeState::Legacy,
            State::Missing => IncludeState::Missing,
        },
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => IncludeState::Missing,
        Err(err) => IncludeState::Unreadable(err.to_string()),
    }
}

pub(super) fn run(layout: &Layout, args: &SshConfigArgs) -> anyhow::Result<ExitCode> {
    let banger_config = layout.ssh_config();
    let user_config = user_config(layout);
    if args.install {
        install(&user_config, &banger_config)?;
    } else if args.uninstall {
        uninstall(&user_config)?;
    } else {
        show(&user_config, &banger_config)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn show(user_config: &Path, banger_config: &Path) -> anyhow::Result<()> {
    let user = user_config.display();
    let state = match std::fs::read(user_config) {
        Ok(text) => match ssh_include::state(&text) {
            State::Installed => format!("installed in {user}"),
            State::Misplaced => format!(
                "misplaced in {user}: inside a Host/Match block (--install moves it to the top)"
            ),
            State::Legacy => format!("old inline block in {user} (--install migrates it)"),
            State::Missing => format!("not installed in {user}"),
        },
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            format!("not installed ({user} does not exist)")
        }
        Err(err) => format!("cannot read {user}: {err}"),
    };
    println!("ssh_config   {}", banger_config.display());
    if !banger_config.exists() {
        println!("             (written by bangerd when it starts: `banger daemon start`)");
    }
    println!("include      {}", ssh_include::include_line(banger_config));
    println!("status       {state}");
    println!();
    println!(
        "banger ssh-config --install     add the Include to ~/.ssh/config so `ssh NAME.vm` works"
    );
    println!("banger ssh-config --uninstall   remove it again (only banger's lines are touched)");
    Ok(())
}

fn install(user_config: &Path, banger_config: &Path) -> anyhow::Result<()> {
    let (original, exists) = read(user_config)?;
    let updated = ssh_include::install(&original, banger_config)
        .with_context(|| format!("editing {}", user_config.display()))?;
    if exists && updated == original {
        eprintln!(
            "{} already includes {}",
            user_config.display(),
            banger_config.display()
        );
        return Ok(());
    }
    write(user_config, &updated, exists)?;
    eprintln!(
        "added `{}` to {}; `ssh NAME.vm` now uses banger's key",
        ssh_include::include_line(banger_config),
        user_config.display()
    );
    if !banger_config.exists() {
        eprintln!(
            "note: {} is written when bangerd starts (`banger daemon start`)",
            banger_config.display()
        );
    }
    Ok(())
}

fn uninstall(user_config: &Path) -> anyhow::Result<()> {
    let (original, exists) = read(user_config)?;
    if !exists {
        eprintln!(
            "{} does not exist; nothing to remove",
            user_config.display()
        );
        return Ok(());
    }
    let updated = ssh_include::uninstall(&original)
        .with_context(|| format!("editing {}", user_config.display()))?;
    if updated == original {
        eprintln!("{} holds no banger block", user_config.display());
        return Ok(());
    }
    write(user_config, &updated, true)?;
    eprintln!("removed banger's block from {}", user_config.display());
    Ok(())
}

/// The file's bytes, and whether it exists.
fn read(path: &Path) -> anyhow::Result<(Vec<u8>, bool)> {
    match std::fs::read(path) {
        Ok(text) => Ok((text, true)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok((Vec::new(), false)),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces `path` atomically (temp file in the same directory, fsync,
/// rename), keeping its mode; through a symlink (dotfile managers) the
/// link's target is rewritten and the link kept. A new file is 0600 in a
/// `~/.ssh` created 0700.
fn write(path: &Path, bytes: &[u8], exists: bool) -> anyhow::Result<()> {
    let target = if exists {
        std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?
    } else {
        path.to_owned()
    };
    let dir = target.parent().context("the ssh config has no directory")?;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mode = if exists {
        std::fs::metadata(&target)
            .with_context(|| format!("reading {}", target.display()))?
            .permissions()
            .mode()
            & 0o7777
    } else {
        0o600
    };
    let file_name = target
        .file_name()
        .context("the ssh config has no file name")?
        .to_string_lossy()
        .into_owned();
    let temp = dir.join(format!(".{file_name}.banger-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        // The umask may have narrowed the mode; set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, &target)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.with_context(|| format!("writing {}", target.display()))
}
