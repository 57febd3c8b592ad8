//! Rollback for multi-step setups: every acquired resource pushes the step
//! that releases it; on failure the steps run in reverse.
//!
//! Steps are classed: [`Class::Host`] steps release host resources (VMM
//! process, TAP, NAT rules) and always run on failure; [`Class::Data`] steps
//! remove what the user could still want to inspect (disks, logs, the VM
//! record) and run only on a full rollback.

use std::future::Future;
use std::pin::Pin;

use crate::errors::Cause;

type Step = Pin<Box<dyn Future<Output = Result<(), Cause>> + Send>>;

/// A rollback step that failed: what it was releasing, and why.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {}", crate::errors::chain(.error.as_ref()))]
pub struct RollbackFailure {
    pub what: String,
    pub error: Cause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Host,
    Data,
}

#[derive(Default)]
pub struct Undo {
    steps: Vec<(String, Class, Step)>,
}

impl std::fmt::Debug for Undo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .steps
            .iter()
            .map(|(what, _, _)| what.as_str())
            .collect();
        f.debug_struct("Undo").field("steps", &names).finish()
    }
}

impl Undo {
    /// Records how to release something just acquired. The future does
    /// nothing until a rollback runs it.
    pub fn push(
        &mut self,
        what: impl Into<String>,
        class: Class,
        step: impl Future<Output = Result<(), Cause>> + Send + 'static,
    ) {
        self.steps.push((what.into(), class, Box::pin(step)));
    }

    /// Takes over `other`'s steps (run after this one's own, in reverse).
    pub fn extend(&mut self, mut other: Undo) {
        self.steps.append(&mut other.steps);
    }

    /// Success: nothing is released.
    pub fn disarm(mut self) {
        self.steps.clear();
    }

    /// Runs the steps in reverse (all of them, or only [`Class::Host`] ones
    /// when `keep_data`), continuing past failures; returns the failures.
    pub async fn rollback(mut self, keep_data: bool) -> Vec<RollbackFailure> {
        let mut failures = Vec::new();
        while let Some((what, class, step)) = self.steps.pop() {
            if keep_data && class == Class::Data {
                continue;
            }
            match step.await {
                Ok(()) => tracing::debug!(step = %what, "rolled back"),
                Err(error) => {
                    let failure = RollbackFailure { what, error };
                    tracing::warn!(error = %failure, "rollback step failed");
                    failures.push(failure);
                }
            }
        }
        failures
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if !self.steps.is_empty() {
            let names: Vec<&str> = self
                .steps
                .iter()
                .map(|(what, _, _)| what.as_str())
                .collect();
            tracing::error!(steps = ?names, "rollback dropped without running; resources may leak until the next reconcile");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Log = Arc<Mutex<Vec<String>>>;

    fn recorder() -> (Log, impl Fn(&str, bool) -> Step) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = Arc::clone(&log);
        let make = move |name: &str, fail: bool| -> Step {
            let log = Arc::clone(&log2);
            let name = name.to_owned();
            Box::pin(async move {
                log.lock().unwrap().push(name.clone());
                if fail {
                    Err(format!("{name} broke").into())
                } else {
                    Ok(())
                }
            })
        };
        (log, make)
    }

    #[tokio::test]
    async fn runs_in_reverse_and_continues_past_failures() {
        let (log, step) = recorder();
        let mut undo = Undo::default();
        undo.push("a", Class::Data, step("a", false));
        undo.push("b", Class::Host, step("b", true));
        undo.push("c", Class::Host, step("c", false));
        let failures = undo.rollback(false).await;
        assert_eq!(*log.lock().unwrap(), ["c", "b", "a"]);
        let failures: Vec<String> = failures.iter().map(ToString::to_string).collect();
        assert_eq!(failures, ["b: b broke"]);
    }

    #[tokio::test]
    async fn keep_data_skips_data_steps_and_disarm_skips_all() {
        let (log, step) = recorder();
        let mut undo = Undo::default();
        undo.push("disk", Class::Data, step("disk", false));
        undo.push("tap", Class::Host, step("tap", false));
        undo.rollback(true).await;
        assert_eq!(*log.lock().unwrap(), ["tap"]);

        let mut undo = Undo::default();
        undo.push("x", Class::Host, step("x", false));
        undo.disarm();
        assert_eq!(log.lock().unwrap().len(), 1);
    }
}
