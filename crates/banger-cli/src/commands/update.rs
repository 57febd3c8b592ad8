//! `banger update [--check] [--allow-downgrade]`
//!
//! Fetches the release manifest from `update_url` (default: the project's
//! GitHub releases), refuses it unless its signature verifies against the
//! key compiled into this binary, compares versions, downloads and verifies
//! every binary, swaps `banger`, `bangerd`, `banger-vsock-agent` (and
//! `banger-simvm` when the release carries it) all or nothing, and restarts
//! a daemon that was running so it runs the new build. See `banger-update`.

use banger_rpc::{NoParams, method};
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use banger_buildinfo::BuildInfo;
use banger_model::config::Config;
use banger_model::layout::Layout;
use banger_update::{
    Artifact, Downloader, RealSwapFs, Release, Version, fetch_release, stage_artifacts, swap_all,
};

use crate::args::UpdateArgs;
use crate::daemon_client;
use crate::output::ExitError;

/// Where releases are published unless config sets `update_url`.
pub(crate) const DEFAULT_UPDATE_URL: &str =
    "https://github.com/banger-dev/banger/releases/latest/download";

pub(super) async fn run(layout: &Layout, args: &UpdateArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&layout.config_file())?;
    let base = config
        .update_url
        .clone()
        .unwrap_or_else(|| DEFAULT_UPDATE_URL.to_owned());
    let current: Version = BuildInfo::current()
        .version
        .parse()
        .context("this build's own version")?;
    let key = banger_update::release_key()?;
    let downloader = Downloader::new(format!("banger/{current}"))?;
    eprintln!("checking {base}");
    let release = fetch_release(&downloader, &base, &key, &banger_update::this_target())
        .await
        .with_context(|| format!("checking for updates at {base}"))?;
    let new = release.version.clone();

    match new.cmp(&current) {
        Ordering::Equal => {
            println!("banger {current} is up to date");
            return Ok(ExitCode::SUCCESS);
        }
        Ordering::Greater if args.check => {
            println!("banger {new} is available (this is {current}); run `banger update`");
            if let Some(notes) = &release.manifest.notes {
                println!("{notes}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        Ordering::Less if args.check => {
            println!("the release at {base} is {new}, older than this banger {current}");
            return Ok(ExitCode::SUCCESS);
        }
        Ordering::Less if !args.allow_downgrade => {
            return Err(ExitError {
                message: format!(
                    "refusing to downgrade banger {current} to {new} (the release at {base})\nhint: pass --allow-downgrade if that is what you want"
                ),
                code: 1,
            }
            .into());
        }
        _ => {}
    }

    let wanted = targets(&release)?;
    let daemon_was_running = daemon_running(layout).await;
    eprintln!("downloading banger {new}");
    let staged = stage_artifacts(&downloader, &release, &wanted)
        .await
        .map_err(|err| permission_hint(err.into(), &wanted))?;
    swap_all(staged, &RealSwapFs).context("installing the new binaries")?;
    for (artifact, target) in &wanted {
        eprintln!("  {:20} {}", artifact.name, target.display());
    }
    println!("updated banger {current} -> {new}");

    if daemon_was_running {
        eprintln!("restarting bangerd");
        daemon_client::stop(layout).await?;
        let banger = wanted
            .iter()
            .find(|(artifact, _)| artifact.name == "banger")
            .map(|(_, target)| target.clone())
            .context("the release has no banger")?;
        let status = crate::exec::run_banger(&banger, &["daemon", "start"])
            .await
            .with_context(|| format!("running {}", banger.display()))?;
        if !status.success() {
            bail!(
                "the new bangerd did not start ({status})\nhint: see `banger daemon status` and its log"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a daemon answers right now.
async fn daemon_running(layout: &Layout) -> bool {
    match daemon_client::connect_existing(layout).await {
        Ok(Some(mut client)) => client
            .call::<method::Ping>(NoParams {}, |_| {})
            .await
            .is_ok(),
        _ => false,
    }
}

/// Where each of the release's binaries goes: over the installed one (its
/// real path, through symlinks), or, for a companion not installed yet,
/// where bangerd looks for it (`../lib/banger/` of the prefix if that
/// exists, else next to bangerd).
fn targets(release: &Release) -> anyhow::Result<Vec<(Artifact, PathBuf)>> {
    let banger = std::env::current_exe().context("finding this banger")?;
    let banger = real(&banger);
    let bangerd = real(&daemon_client::bangerd_path()?);
    let bin_dir = bangerd
        .parent()
        .context("bangerd has no directory")?
        .to_owned();
    let lib_dir = bin_dir.join("../lib/banger");
    let mut out = Vec::new();
    for artifact in &release.manifest.artifacts {
        let target = match artifact.name.as_str() {
            "banger" => banger.clone(),
            "bangerd" => bangerd.clone(),
            name => [bin_dir.join(name), lib_dir.join(name)]
                .into_iter()
                .find(|candidate| candidate.is_file())
                .map(|found| real(&found))
                .unwrap_or_else(|| {
                    if lib_dir.is_dir() {
                        lib_dir.join(name)
                    } else {
                        bin_dir.join(name)
                    }
                }),
        };
        out.push((artifact.clone(), target));
    }
    Ok(out)
}

fn real(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// Adds `sudo` advice when a target directory is not writable.
fn permission_hint(err: anyhow::Error, wanted: &[(Artifact, PathBuf)]) -> anyhow::Error {
    let denied = err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    });
    if !denied {
        return err;
    }
    let dirs: Vec<String> = wanted
        .iter()
        .filter_map(|(_, target)| target.parent())
        .map(|dir| dir.display().to_string())
        .collect();
    err.context(format!(
        "cannot write to {}\nhint: run `sudo banger update` (nothing was replaced)",
        dirs.join(", ")
    ))
}
