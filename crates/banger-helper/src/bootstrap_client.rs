//! [`HelperBootstrap`]: banger-bootstrap's [`BootstrapHost`] for a daemon
//! that is not root. debootstrap runs in banger-helper
//! (`helper.debootstrap`), which gives the tree to the daemon's user and
//! answers the owners its files had; the daemon follows debootstrap's
//! progress in the log it made, and puts the owners back in the image
//! ([`BootstrapHost::take_owners`]).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use banger_bootstrap::host::{DebootstrapError, preflight_tools};
use banger_bootstrap::rootfs::{self, ReleaseMountsError, RootfsPlan};
use banger_bootstrap::{BootstrapHost, TreeOwner};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::client::HelperClient;
use crate::protocol::{DebootstrapParams, method};

/// How often the log is read for new lines while debootstrap runs.
const TAIL_EVERY: Duration = Duration::from_millis(250);

/// debootstrap through the helper at a socket path.
#[derive(Debug)]
pub struct HelperBootstrap {
    socket: PathBuf,
    owners: Mutex<HashMap<PathBuf, Vec<TreeOwner>>>,
}

impl HelperBootstrap {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            owners: Mutex::new(HashMap::new()),
        }
    }

    async fn run(
        &self,
        plan: &RootfsPlan,
        on_line: &mut (dyn FnMut(&str) + Send),
        cancel: &CancellationToken,
    ) -> Result<(), DebootstrapError> {
        fn prepare(path: &Path) -> impl FnOnce(std::io::Error) -> DebootstrapError + '_ {
            move |source| DebootstrapError::Prepare {
                path: path.to_owned(),
                source,
            }
        }
        // The helper builds into a directory of ours that must exist.
        for dir in [plan.log.parent(), plan.target.parent()]
            .into_iter()
            .flatten()
        {
            fs_err::create_dir_all(dir).map_err(prepare(dir))?;
        }
        // Read back below (the helper appends debootstrap's output to it):
        // `File::create` alone would open it write-only, and no progress
        // line would ever be read.
        let mut log = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&plan.log)
            .map_err(prepare(&plan.log))?
            .into_parts()
            .0;
        let params = DebootstrapParams {
            distro: plan.distro.to_string(),
            mirror: plan.mirror.clone(),
            profile: plan.profile,
            packages: plan.extra.clone(),
            target: plan.target.clone(),
            log: plan.log.clone(),
            proxy: std::env::var("http_proxy").ok().filter(|p| !p.is_empty()),
        };
        let call = async {
            HelperClient::connect(&self.socket)
                .await?
                .call::<method::Debootstrap>(params)
                .await
        };
        tokio::pin!(call);
        let mut tail = Tail::default();
        let done = loop {
            tokio::select! {
                done = &mut call => break done,
                () = tokio::time::sleep(TAIL_EVERY) => tail.read(&mut log, on_line),
                () = cancel.cancelled() => return Err(DebootstrapError::Cancelled),
            }
        };
        tail.read(&mut log, on_line);
        let done = done.map_err(|error| {
            let detail = error
                .rpc()
                .map_or_else(|| error.to_string(), |rpc| rpc.message.clone());
            DebootstrapError::failed(plan, "banger-helper".into(), detail)
        })?;
        self.owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(plan.target.clone(), done.owners);
        Ok(())
    }
}

/// The complete lines appended to a file since the last read.
#[derive(Debug, Default)]
struct Tail {
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    fn read(&mut self, file: &mut std::fs::File, on_line: &mut (dyn FnMut(&str) + Send)) {
        let mut new = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut new).is_err() {
            return;
        }
        self.offset += new.len() as u64;
        self.partial.extend_from_slice(&new);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            on_line(String::from_utf8_lossy(&line).trim_end());
        }
    }
}

impl BootstrapHost for HelperBootstrap {
    fn preflight(&self, plan: &RootfsPlan) -> Result<(), DebootstrapError> {
        preflight_tools(plan)
    }

    fn debootstrap<'a>(
        &'a self,
        plan: &'a RootfsPlan,
        on_line: &'a mut (dyn FnMut(&str) + Send),
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), DebootstrapError>> {
        Box::pin(self.run(plan, on_line, cancel))
    }

    /// The helper released debootstrap's mounts before giving the tree
    /// away; this only confirms that none is left.
    fn release_mounts(&self, dir: &Path) -> Result<Vec<PathBuf>, ReleaseMountsError> {
        rootfs::release_mounts(dir)
    }

    fn take_owners(&self, target: &Path) -> Vec<TreeOwner> {
        self.owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(target)
            .unwrap_or_default()
    }
}
