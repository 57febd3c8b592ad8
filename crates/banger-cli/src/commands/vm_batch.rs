//! Lifecycle verbs over many VMs: `vm start|stop|restart|delete|kill|set`.
//!
//! References are resolved against one `vm.list` snapshot, deduplicated by
//! id, run concurrently (one connection each) and reported in first-seen
//! order. Valid references proceed when others are missing or ambiguous; the
//! exit code is non-zero when any failed.

use std::collections::HashSet;
use std::process::ExitCode;

use banger_model::layout::Layout;
use banger_model::resolve::resolve;
use banger_model::vm::Vm;
use banger_rpc::response::VmListResult;
use banger_rpc::{CallError, Request};

use crate::daemon_client;

/// What to do to each VM, and how to describe it when done.
pub(super) struct Batch<'a> {
    pub request: &'a dyn Fn(&Vm) -> Request,
    pub describe: &'a dyn Fn(&Vm) -> String,
}

pub(super) async fn run(
    layout: &Layout,
    refs: &[String],
    batch: Batch<'_>,
) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let snapshot: VmListResult = client.call(&Request::VmList, |_| {}).await?;
    drop(client);

    let mut seen = HashSet::new();
    let mut targets: Vec<(&str, Result<&Vm, String>)> = Vec::new();
    for reference in refs {
        match resolve(&snapshot.vms, reference) {
            Ok(vm) if !seen.insert(vm.id.clone()) => {}
            Ok(vm) => targets.push((reference, Ok(vm))),
            Err(err) => targets.push((reference, Err(err.to_string()))),
        }
    }

    let outcomes = futures::future::join_all(targets.iter().map(|(_, target)| async {
        let vm = target.as_ref().map_err(|err| (err.clone(), None))?;
        let mut client = daemon_client::connect_existing(layout)
            .await
            .map_err(|err| (format!("{err:#}"), None))?
            .ok_or_else(|| ("the daemon stopped".to_owned(), None))?;
        client
            .call::<Vm>(&(batch.request)(vm), |_| {})
            .await
            .map_err(|err| match err {
                CallError::Rpc(rpc) => (rpc.message, rpc.hint),
                other => (other.to_string(), None),
            })
    }))
    .await;

    let mut failed = false;
    for ((reference, _), outcome) in targets.iter().zip(outcomes) {
        match outcome {
            Ok(vm) => println!("{}", (batch.describe)(&vm)),
            Err((message, hint)) => {
                failed = true;
                eprintln!("{reference}: error: {message}");
                if let Some(hint) = hint {
                    eprintln!("{reference}: hint: {hint}");
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
